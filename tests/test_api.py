"""The verification API against an indexed devnet: links, pagination, errors, and a
property-based run (schemathesis) over every route that must never answer 5xx."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.compose import build_app
from api.pagination import encode_token
from devnet.anvil import Anvil
from devnet.deploy import deploy_all
from devnet.ledger import Ledger
from devnet.scenario import run_scenario
from indexer.db import upgrade
from tests.indexing import devnet_settings, index
from tests.test_indexer_chain import more_tasks

TASKS_PER_SESSION = 5


@pytest.fixture(scope="module")
def devnet_node() -> Iterator[Anvil]:
    with Anvil() as node:
        yield node


@pytest.fixture(scope="module")
def world(devnet_node: Anvil, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Any, Any, Ledger, str]]:
    dep = deploy_all(devnet_node.url)
    ledger = run_scenario(devnet_node.url, dep, seed=7, sessions=2,
                          tasks_per_session=TASKS_PER_SESSION)
    db = f"sqlite:///{tmp_path_factory.mktemp('api')}/api.db"
    upgrade(db)
    settings_ = devnet_settings(devnet_node.url, dep.addresses, db, start_block=dep.start_block)
    index(settings_)
    yield settings_, dep, ledger, db


@pytest.fixture(scope="module")
def client(world: Any) -> Iterator[TestClient]:
    with TestClient(build_app(world[0], run_indexer=False)) as c:
        yield c


def test_every_step_links_to_its_transaction(client: TestClient, world: Any) -> None:
    _, _, ledger, _ = world
    for (sid, tid), t in ledger.tasks.items():
        body = client.get(f"/api/v1/chains/local/sessions/{sid}/tasks/{tid}").json()
        assert body["status"] == t.status
        got = {s["step"]: s for s in body["steps"]}
        for step, tx_hash in t.steps.items():
            s = got[step]
            assert s["tx_hash"] == tx_hash
            assert s["explorer_url"].endswith(f"/api/v1/chains/local/tx/{tx_hash}")
            view = client.get(s["explorer_url"].split("testserver", 1)[1]).json()
            assert view["tx_hash"] == tx_hash
            assert any(e["log_index"] == s["log_index"] and e["event"] == s["event"]
                       for e in view["events"])
            assert view["receipt"]["status"] == 1
        for m in body["miners"]:
            want = t.miners[m["address"]]
            assert (m["ack"] or {}).get("tx_hash") == want.ack
            assert (m["commit"] or {}).get("tx_hash") == want.commit
        assert body["verify_url"].endswith(f"/sessions/{sid}/tasks/{tid}/verify")


def test_task_route_is_the_same_on_postgresql(client: TestClient, world: Any,
                                              pg_url: str) -> None:
    """The lifecycle route reads one statement: through SQLAlchemy in the threadpool on
    SQLite, through the async asyncpg pool on PostgreSQL. Both give the same documents, each
    exactly a TaskDetail; a pooled connection the server dropped is replaced (retry once)."""
    from api.schemas import TaskDetail

    settings_, dep, ledger, _ = world
    index(settings_)  # both databases at the same head (other tests add tasks)
    upgrade(pg_url)
    pg_settings = devnet_settings(settings_.chains[0].rpc_urls[0], dep.addresses, pg_url,
                                  start_block=dep.start_block)
    index(pg_settings)
    paths = [f"/api/v1/chains/local/sessions/{s}/tasks/{t}" for s, t in ledger.tasks]
    with TestClient(build_app(pg_settings, run_indexer=False)) as pg:
        assert pg.app.state.corlens.lifecycles is not None  # type: ignore[attr-defined]
        for round_ in range(2):
            for path in paths:
                want, got = client.get(path).json(), pg.get(path).json()
                assert got == want and got["steps"] and got["miners"]
                assert TaskDetail.model_validate(got).model_dump(mode="json") == got
            if round_ == 0:
                with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as c:
                    c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()")
                # Rows without their JSON copies are read from the child tables instead.
                for url in (pg_url, settings_.database_url):
                    engine = sa.create_engine(url)
                    with engine.begin() as conn:
                        for col, n in (("steps_json", 2), ("payments_json", 3)):
                            conn.execute(sa.text(f"UPDATE task SET {col} = NULL "
                                                 f"WHERE task_id % {n} = 0"))
                    engine.dispose()
        r = pg.get("/api/v1/chains/local/sessions/0/tasks/99999")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        want = {p: client.get(p).json() for p in paths}
    assert any(w["payments"] for w in want.values())
    # Concurrent requests share statements (PgLifecycles' coalescer) and get their own task.
    statements, got = asyncio.run(_concurrently(build_app(pg_settings, run_indexer=False),
                                                paths * 4 + paths[:1] * 8))
    assert got == [want[p] for p in paths * 4 + paths[:1] * 8]
    assert 1 <= statements < len(got)
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:  # the rows above did lack copies
        assert conn.execute(sa.text("SELECT count(*) FROM task WHERE steps_json IS NULL")).scalar()
    engine.dispose()


async def _concurrently(app: Any, paths: list[str]) -> tuple[int, list[Any]]:
    pool = app.state.corlens.lifecycles.pool
    real, seen = pool.fetchall, []

    async def counted(sql: str, params: dict[str, Any]) -> Any:
        seen.append(params)
        return await real(sql, params)

    pool.fetchall = counted
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        got = await asyncio.gather(*(c.get(p) for p in paths))
    return len(seen), [r.json() for r in got]


def test_testnet0_links_go_to_arbiscan_and_the_dashboard() -> None:
    from api.links import Links
    from indexer.config import ChainConfig

    c = ChainConfig(name="testnet0", preset="testnet0", rpc_urls=["https://x"])
    links = Links(c, "http://corlens")
    assert links.tx("0xab") == "https://sepolia.arbiscan.io/tx/0xab"
    assert links.address("0xcd") == "https://sepolia.arbiscan.io/address/0xcd"
    assert links.block(5) == "https://sepolia.arbiscan.io/block/5"
    assert links.task_dashboard(3, 4) == "https://dashboard-testnet0.cortensor.network/session/3/4"
    b = ChainConfig(name="l3", preset="testnet1a", rpc_urls=["https://x"],
                    explorer_url="https://scout.example/")
    assert Links(b, "http://corlens").tx("0xab") == "https://scout.example/tx/0xab"
    nb = ChainConfig(name="l3", preset="testnet1a", rpc_urls=["https://x"])
    assert Links(nb, "http://corlens").tx("0xab") == "http://corlens/api/v1/chains/l3/tx/0xab"


def test_pagination_walks_every_row_once_under_inserts(client: TestClient, world: Any,
                                                       devnet_node: Anvil) -> None:
    settings_, dep, ledger, _ = world
    sid = next(s.session_id for s in ledger.sessions.values() if s.state == "active")
    seen: list[int] = []
    url = f"/api/v1/chains/local/sessions/{sid}/tasks?limit=2"
    page = client.get(url).json()
    seen += [t["task_id"] for t in page["tasks"]]
    # New tasks land between pages: the walk neither repeats nor skips what existed.
    more_tasks(devnet_node.url, dep, ledger, "page", n=2)
    index(settings_)
    while page["next"]:
        page = client.get(f"{url}&next={page['next']}").json()
        seen += [t["task_id"] for t in page["tasks"]]
    assert len(seen) == len(set(seen))
    want = sorted(t for (s, t) in ledger.tasks if s == sid)
    assert seen == want


def test_filters_and_counts(client: TestClient, world: Any) -> None:
    _, _, ledger, _ = world
    body = client.get("/api/v1/chains/local/sessions?state=deactivated").json()
    assert [s["session_id"] for s in body["sessions"]] == [
        s.session_id for s in ledger.sessions.values() if s.state == "deactivated"]
    s0 = next(iter(ledger.sessions.values()))
    detail = client.get(f"/api/v1/chains/local/sessions/{s0.session_id}").json()
    assert {r["address"]: r["info"] for r in detail["routers"]} == s0.routers
    counts: dict[str, int] = {}
    for (sid, _), t in ledger.tasks.items():
        if sid == s0.session_id:
            counts[t.status] = counts.get(t.status, 0) + 1
    assert detail["task_counts"] == counts
    paid = client.get(f"/api/v1/chains/local/sessions/{s0.session_id}/tasks?status=paid").json()
    assert all(t["status"] == "paid" for t in paid["tasks"]) and paid["tasks"]
    chains = client.get("/api/v1/chains").json()["chains"]
    assert chains[0]["name"] == "local" and chains[0]["lag_blocks"] == 0


def test_request_join_by_client_reference(client: TestClient, world: Any) -> None:
    _, _, ledger, _ = world
    t = next(iter(ledger.tasks.values()))
    body = client.get(f"/api/v1/requests/{t.client_reference}").json()
    assert body["task"]["task_id"] == t.task_id and body["chain"] == "local"
    assert client.get("/api/v1/requests/nope-nope").status_code == 404
    # The same task as the session's task list shows it, submission time included.
    listed = client.get(f"/api/v1/chains/local/sessions/{t.session_id}/tasks?limit=500").json()
    (want,) = [x for x in listed["tasks"] if x["task_id"] == t.task_id]
    assert want["submitted_at"] is not None and body["task"] == want


def test_tasks_of_a_session_not_indexed_are_a_404_like_the_session(client: TestClient) -> None:
    for path in ("/api/v1/chains/local/sessions/99999",
                 "/api/v1/chains/local/sessions/99999/tasks"):
        r = client.get(path)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["details"] == {"what": "session", "chain": "local",
                                                "session_id": 99999}


@pytest.mark.parametrize(("path", "status", "field"), [
    ("/api/v1/chains/nope/sessions", 404, None),
    ("/api/v1/chains/local/sessions/99999", 404, None),
    ("/api/v1/chains/local/sessions/0/tasks/99999", 404, None),
    ("/api/v1/chains/local/sessions/99999/tasks", 404, None),  # not {"tasks": []}
    ("/api/v1/chains/local/sessions/x", 422, "session_id"),
    ("/api/v1/chains/local/sessions/-1", 422, "session_id"),
    ("/api/v1/chains/local/sessions/0/tasks?limit=501", 422, "limit"),
    ("/api/v1/chains/local/sessions/0/tasks?status=weird", 422, "status"),
    ("/api/v1/chains/local/sessions/0/tasks?next=%%%", 422, "next"),
    ("/api/v1/chains/local/nodes/0xzz", 422, "address"),
    ("/api/v1/chains/local/tx/0x12", 422, "tx_hash"),
    ("/api/v1/chains/local/sessions?owner=bob", 422, "owner"),
    # Tokens this API never issues (found by a bad-input audit: SQL errors before): a key
    # wider than the BIGINT columns, a transaction hash with a NUL (PostgreSQL refuses those).
    (f"/api/v1/chains/local/sessions?next={encode_token([2**70])}", 422, "next"),
    (f"/api/v1/chains/local/sessions/0/tasks?next={encode_token([2**63])}", 422, "next"),
    (f"/api/v1/chains/local/network-tasks?next={encode_token([-2**70])}", 422, "next"),
    (f"/api/v1/chains/local/sessions?next={encode_token([True])}", 422, "next"),
    (f"/api/v1/chains/local/payouts?next={encode_token([1, 2, 'a' + chr(0)])}", 422, "next"),
    (f"/api/v1/chains/local/payouts?next={encode_token([1, 2, '0x' + 'ab' * 31])}", 422,
     "next"),
])
def test_bad_input_is_4xx_naming_the_field(client: TestClient, path: str, status: int,
                                           field: str | None) -> None:
    r = client.get(path)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] and err["message"]
    if field:
        assert err["details"]["field"] == field


def test_openapi_documents_every_route(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "200" in op["responses"], (method, path)
            if "{" in path:
                assert "422" in op["responses"] and "404" in op["responses"], (method, path)
    assert client.get("/docs").status_code == 200


def test_no_route_answers_5xx(world: Any) -> None:
    """schemathesis generates requests from the OpenAPI document for every operation; none may
    answer 5xx and every response must match its documented schema."""
    schema = schemathesis.openapi.from_asgi("/openapi.json",
                                            build_app(world[0], run_indexer=False))
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 12
    calls: dict[str, int] = {}
    for op in operations:
        label = f"{op.method.upper()} {op.path}"

        run_operation(op.as_strategy(), label, calls)
    assert set(calls) == {f"{op.method.upper()} {op.path}" for op in operations}


def run_operation(strategy: Any, label: str, calls: dict[str, int]) -> None:
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck),
              database=None, phases=[Phase.explicit, Phase.generate])
    @given(strategy)
    def run(case: Any) -> None:
        response = case.call()
        calls[label] = calls.get(label, 0) + 1
        case.validate_response(response, checks=[not_a_server_error,
                                                 response_schema_conformance])

    run()


def test_schema_run_saw_real_rows(world: Any) -> None:
    """Guards the property run from testing an empty database."""
    _, _, ledger, db = world
    assert ledger.tasks
    assert Path(db.split("///")[1]).stat().st_size > 0


def test_property_run_catches_a_5xx() -> None:
    """The same run fails on a route that breaks for some input (the check can fail)."""
    from fastapi import APIRouter, FastAPI

    broken = APIRouter()

    @broken.get("/broken/{n}")
    def explode(n: int) -> dict[str, int]:
        return {"n": 1 // (n % 3)}

    app = FastAPI()
    app.include_router(broken)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    (op,) = [r.ok() for r in schema.get_all_operations()]
    with pytest.raises(Exception, match="division|Server error"):
        run_operation(op.as_strategy(), "broken", {})


def test_a_gateway_record_is_typed_alike_on_every_backend(store_url: str) -> None:
    """The gateway's record of a request: booleans as booleans, created_at as unix seconds,
    the same on SQLite (which stores no timezone) as on PostgreSQL; its schema is typed."""
    from datetime import UTC, datetime

    from gateway.store import REQUESTS
    from indexer.config import Settings

    at = datetime(2026, 11, 29, 4, 31, 26, 123456, tzinfo=UTC)
    row = {"request_id": "req-typed", "key_id": 3, "model": "m", "endpoint": "chat.completions",
           "stream": True, "chain": "local", "session_id": 1,
           "session_key": "local:1@http://u:pw@r:1", "router_label": "a",
           "router_url": "http://u:pw@r:1", "status": "ok", "http_status": 200,
           "error_code": None, "latency_ms": 12.5, "ttfb_ms": None, "waited_ms": 0.0,
           "attempts": 1, "prompt_tokens": 4, "completion_tokens": 2, "task_id": None,
           "replica_id": "r1", "created_at": at}
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(REQUESTS.insert(), [row])
    engine.dispose()
    with TestClient(build_app(Settings(database_url=store_url), run_indexer=False)) as c:
        body = c.get("/api/v1/requests/req-typed").json()
        doc = c.get("/openapi.json").json()["components"]["schemas"]
    assert body["gateway"] == {**row, "created_at": at.timestamp(),
                               "session_key": "local:1@http://***@r:1",
                               "router_url": "http://***@r:1"}, body
    assert body["gateway"]["stream"] is True and body["task"] is None
    assert "$ref" in str(doc["RequestOut"]["properties"]["gateway"])
    assert doc["GatewayRecordOut"]["properties"]["created_at"]["type"] == "number"


def test_explorer_kind_is_the_one_links_use_and_ops_routes_are_documented(
    tmp_path: Path,
) -> None:
    """testnet1a without explorer_url links to corlens's own views, and says so; /ready's
    503 and the ops routes' bodies are in the OpenAPI document."""
    from indexer.config import ChainConfig, Settings

    chain = ChainConfig(name="t1", preset="testnet1a", rpc_urls=["http://127.0.0.1:9"])
    settings = Settings(database_url=f"sqlite:///{tmp_path}/k.db", chains=[chain])
    upgrade(settings.database_url)
    with TestClient(build_app(settings, run_indexer=False)) as c:
        (got,) = c.get("/api/v1/chains").json()["chains"]
        assert got["explorer_kind"] == "corlens" and got["explorer_url"] is None
        ready = c.get("/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        status = c.get("/status").json()
        assert status["chains"][0]["chain"] == "t1"
        paths = c.get("/openapi.json").json()["paths"]
    assert {"200", "503"} <= set(paths["/ready"]["get"]["responses"])
    schema = paths["/ready"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/NotReadyOut")
    for path in ("/health", "/status"):
        assert "$ref" in str(paths[path]["get"]["responses"]["200"]["content"]), path


def test_task_detail_carries_the_lists_submitted_at_and_updated_block(client: TestClient,
                                                                       world: Any) -> None:
    _, _, ledger, _ = world
    seen = 0
    for sid in {s for s, _ in ledger.tasks}:
        listed = client.get(f"/api/v1/chains/local/sessions/{sid}/tasks?limit=500").json()
        for t in listed["tasks"]:
            body = client.get(t["url"].split("testserver", 1)[1]).json()
            assert body["submitted_at"] is not None and body["updated_block"] > 0
            assert (body["submitted_at"], body["updated_block"]) == (
                t["submitted_at"], t["updated_block"]), t
            seen += 1
    assert seen >= len(ledger.tasks)
    props = client.get("/openapi.json").json()["components"]["schemas"]["TaskDetail"]
    assert {"submitted_at", "updated_block"} <= set(props["required"])


def test_deactivated_tx_links_to_its_transaction_like_created_tx(client: TestClient,
                                                                 world: Any) -> None:
    _, _, ledger, _ = world
    listed = client.get("/api/v1/chains/local/sessions").json()["sessions"]
    states = {s.session_id: s.state for s in ledger.sessions.values()}
    assert set(states.values()) == {"active", "deactivated"}
    for s in listed:
        detail = client.get(f"/api/v1/chains/local/sessions/{s['session_id']}").json()
        for got in (s, detail):
            assert got["created_tx_url"].endswith(f"/api/v1/chains/local/tx/{got['created_tx']}")
            if states[s["session_id"]] == "active":
                assert got["deactivated_tx"] is None and got["deactivated_tx_url"] is None
                continue
            url = got["deactivated_tx_url"]
            assert url == got["created_tx_url"].replace(got["created_tx"], got["deactivated_tx"])
            view = client.get(url.split("testserver", 1)[1]).json()
            assert "SessionDeactivated" in {e["event"] for e in view["events"]}


def test_state_name_is_the_word_the_state_filter_takes(client: TestClient, world: Any) -> None:
    from api.schemas import session_state_name

    _, _, ledger, _ = world
    for word in ("active", "deactivated"):
        body = client.get(f"/api/v1/chains/local/sessions?state={word}").json()
        want = [s.session_id for s in ledger.sessions.values() if s.state == word]
        assert [s["session_id"] for s in body["sessions"]] == want and want
        for s in body["sessions"]:
            detail = client.get(f"/api/v1/chains/local/sessions/{s['session_id']}").json()
            assert s["state_name"] == detail["state_name"] == word
            assert s["state"] == {"active": 1, "deactivated": 2}[word]
    # Every SessionState value of SessionV2 (None, Active, Deactivated) has a name.
    assert [session_state_name(v) for v in (0, 1, 2, 3, None)] == [
        "none", "active", "deactivated", None, None]
    doc = client.get("/openapi.json").json()
    props = doc["components"]["schemas"]["SessionOut"]["properties"]
    assert props["state_name"]["anyOf"][0]["enum"] == ["none", "active", "deactivated"]
    assert "state_name" in props["state"]["description"]
    (param,) = [p for p in doc["paths"]["/api/v1/chains/{chain}/sessions"]["get"]["parameters"]
                if p["name"] == "state"]
    assert "state_name" in param["description"] and "`active: true`" in param["description"]


def test_session_miners_are_documented_as_its_creation_miners(client: TestClient,
                                                              world: Any) -> None:
    _, _, ledger, _ = world
    sid = next(iter(ledger.sessions))
    detail = client.get(f"/api/v1/chains/local/sessions/{sid}").json()
    view = client.get(detail["created_tx_url"].split("testserver", 1)[1]).json()
    (created,) = [e for e in view["events"] if e["event"] == "SessionCreated"]
    assert detail["miners"] == [str(m).lower() for m in created["args"]["miners"]]
    props = client.get("/openapi.json").json()["components"]["schemas"]["SessionDetail"]
    desc = props["properties"]["miners"]["description"]
    assert "SessionCreated" in desc and "task's `miners`" in desc and "nodes/{address}" in desc
