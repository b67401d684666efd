"""Bad input to the gateway gets a clear error naming the field, option or config key, never a
500 or a traceback, and never costs a stored row: admin routes through a real uvicorn, the
``corlens keys`` commands, the config, and the accounting recorder over a real database, each
on SQLite and PostgreSQL where the backends differ."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from devnet.anvil import free_port
from gateway.accounting import Recorder
from gateway.config import AccountingConfig, load_gateway_config
from gateway.errors import GatewayConfigError
from gateway.forward import Call, Forwarder
from gateway.store import GatewayStore
from tests.gateway_helpers import (
    ADMIN_H,
    anyio_backend_fixture,  # noqa: F401
    gateway_section,
    migrated_sqlite,
    serve_gateway,
    write_config,
)
from tests.test_gateway_units import SESSION, corlens

BIGINT_MAX = 2**63 - 1
HUGE = 2**70  # beyond every integer column


def test_times_must_be_finite() -> None:
    """inf or nan for a time (a lease's TTL reaches Redis, a timeout asyncio) is refused when
    the config is read, naming the key."""
    for key, section in (("lease_ttl", {"lease_ttl": float("inf")}),
                         ("upstream.timeout", {"upstream": {"timeout": float("nan")}})):
        with pytest.raises(GatewayConfigError, match="finite number") as e:
            load_gateway_config({"models": {"m": {"sessions": [SESSION]}}, **section})
        assert e.value.key == key


def test_session_id_beyond_bigint_is_a_config_error(tmp_path: Path) -> None:
    """A session id the database cannot hold is refused when the config is read (it would
    otherwise make every request record of the replica unwritable)."""
    ok = load_gateway_config({"models": {"m": {"sessions": [
        {**SESSION, "session_id": BIGINT_MAX}]}}})
    assert ok.models["m"].sessions[0].session_id == BIGINT_MAX
    with pytest.raises(GatewayConfigError) as e:
        load_gateway_config({"models": {"m": {"sessions": [
            {**SESSION, "session_id": BIGINT_MAX + 1}]}}})
    assert e.value.key == "models.m.sessions.0.session_id"
    with pytest.raises(GatewayConfigError) as e:
        load_gateway_config({"models": {"m": {"from_index": {
            "chain": "t", "chain_id": HUGE, "model_identifier": "9"}}}})
    assert e.value.key == "models.m.from_index.chain_id"

    cfg = write_config(tmp_path / "c.yaml", {"models": {"m": {"sessions": [
        {**SESSION, "session_id": HUGE}]}}}, db_url=f"sqlite:///{tmp_path}/x.db", redis_url=None)
    run = corlens("gateway", "-c", str(cfg), "--port", str(free_port()))
    assert run.returncode == 2 and "gateway.models.m.sessions.0.session_id" in run.stderr


def _row(request_id: str, key_id: int, **kw: Any) -> dict[str, Any]:
    """A request record with every column, as :meth:`Forwarder.finish` makes it."""
    return {"request_id": request_id, "key_id": key_id, "model": "m", "endpoint": "completions",
            "stream": False, "chain": "local", "session_id": 1, "session_key": "local:1@x",
            "router_label": "r1", "router_url": "http://10.0.0.5:5010", "status": "ok",
            "http_status": 200, "error_code": None, "latency_ms": 1.0, "ttfb_ms": None,
            "waited_ms": 0.1, "attempts": 1, "prompt_tokens": 3, "completion_tokens": 5,
            "task_id": 9, "replica_id": "r", "created_at": datetime.now(UTC), **kw}


def _stored(store: GatewayStore) -> list[str]:
    with store.engine.connect() as c:
        return sorted(c.execute(sa.text("SELECT request_id FROM gateway_request")).scalars())


@pytest.mark.anyio
async def test_a_refused_record_does_not_take_good_ones_with_it(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A record the database refuses (a session id beyond BIGINT: OverflowError from sqlite3,
    DataError from PostgreSQL) is logged and dropped; the records batched with it are stored
    and the recorder keeps recording. The bad record is injected into the recorder: the config
    and the router answer parsing no longer let such a value through."""
    store = GatewayStore(store_url)
    recorder = Recorder(store, AccountingConfig(flush_interval=0.05, batch_size=500))
    info, _ = store.create_key("acct")
    recorder.start()
    try:
        recorder.record(_row("gw-good-1", info.id))
        recorder.record(_row("gw-bad", info.id, session_id=HUGE,
                             router_url="http://user:router-secret@10.0.0.5:5010"))
        recorder.record(_row("gw-good-2", info.id))
        # Stored rows show before the flush counts them: wait for both.
        await _until(lambda: _stored(store) == ["gw-good-1", "gw-good-2"]
                     and recorder.written == 2)
        assert (recorder.pending, recorder.written, recorder.refused) == (0, 2, 1)
        assert "gw-bad" in caplog.text and "router-secret" not in caplog.text

        recorder.record(_row("gw-good-3", info.id))  # the recorder is still alive
        await _until(lambda: _stored(store) == ["gw-good-1", "gw-good-2", "gw-good-3"])
        assert next(k for k in store.list_keys() if k.id == info.id).last_used_at is not None
    finally:
        await recorder.aclose()
        store.dispose()


@pytest.mark.anyio
async def test_records_are_kept_while_the_database_refuses_every_write(pg_url: str) -> None:
    """A database that refuses writes as such (read-only here: a standby after a failover, say)
    is no row's fault: the records stay buffered for the next attempt, none is dropped."""
    from indexer.db import upgrade

    upgrade(pg_url)
    store = GatewayStore(pg_url)
    info, _ = store.create_key("acct")
    store.dispose()
    read_only = GatewayStore(f"{pg_url}?options=-c%20default_transaction_read_only%3Don")
    recorder = Recorder(read_only, AccountingConfig(flush_interval=60, batch_size=500))
    try:
        for i in range(5):
            recorder.record(_row(f"gw-ro-{i}", info.id))
        await recorder.flush()
        assert (recorder.pending, recorder.written, recorder.refused) == (5, 0, 0)
        assert recorder.failures == 1
    finally:
        read_only.dispose()


async def _until(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(("answer", "task_id", "prompt", "completion"), [
    ({"task_id": 7, "usage": {"prompt_tokens": 3, "completion_tokens": 5}}, 7, 3, 5),
    ({"task_id": "8"}, 8, None, None),
    ({"task_id": str(HUGE), "usage": {"prompt_tokens": HUGE, "completion_tokens": 2**31}},
     None, None, None),
    ({"task_id": True, "usage": {"prompt_tokens": "lots", "completion_tokens": -1}},
     None, None, None),
    ({"task_id": "²", "usage": {"prompt_tokens": True, "completion_tokens": [1]}},
     None, None, None),
])
def test_router_usage_outside_the_columns_is_not_recorded(
        answer: dict[str, Any], task_id: int | None, prompt: int | None,
        completion: int | None) -> None:
    """A router's task id and token counts are recorded only when the columns can hold them."""
    call = Call("gw-1", "m", "completions")
    Forwarder._usage(call, answer)
    assert (call.task_id, call.prompt_tokens, call.completion_tokens) == (
        task_id, prompt, completion)


async def _admin_rejects(c: httpx.AsyncClient, method: str, url: str, status: int,
                         field: str, **kw: Any) -> None:
    r = await c.request(method, url, headers=ADMIN_H, **kw)
    assert r.status_code == status, (url, r.text)
    err = r.json()["error"]
    assert field in err["message"] or field in str(err["details"]), (url, err)


@pytest.mark.anyio
async def test_admin_inputs_outside_the_columns(store_url: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Ids, limits and strings the database cannot hold are refused by the admin routes with a
    4xx naming the field (both backends); the keys already stored are untouched."""
    caplog.set_level(logging.ERROR)
    async with serve_gateway(gateway_section({}), db_url=store_url, redis_url=None) as s, \
            httpx.AsyncClient(base_url=s.url) as c:
        made = await c.post("/admin/keys", json={"name": "kept", "rpm_limit": 2**31 - 1},
                            headers=ADMIN_H)
        assert made.status_code == 200 and made.json()["rpm_limit"] == 2**31 - 1

        for params, field in (({"key_id": str(HUGE)}, "key_id"), ({"key_id": "-1"}, "key_id"),
                              ({"model": "\x00"}, "model"), ({"session": "a\x00"}, "session"),
                              ({"status": "\x00"}, "status")):
            await _admin_rejects(c, "GET", "/admin/requests", 422, field, params=params)
        for session in (str(HUGE), "²"):
            r = await c.get("/admin/requests", params={"session": session}, headers=ADMIN_H)
            assert r.status_code == 200 and r.json() == {"requests": []}, r.text
        for action in ("disable", "enable"):
            await _admin_rejects(c, "POST", f"/admin/keys/{HUGE}/{action}", 404, "key_id")

        for body, field in (({"name": "a", "rpm_limit": HUGE}, "rpm_limit"),
                            ({"name": "a", "rpm_limit": 2**31}, "rpm_limit"),
                            ({"name": "a", "rpm_limit": True}, "rpm_limit"),
                            ({"name": "a\x00b"}, "name"),
                            ({"name": 5}, "name"), ({"name": True}, "name")):
            await _admin_rejects(c, "POST", "/admin/keys", 422, field, json=body)
        for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"name": "\\ud800"}', b"{nope"):
            await _admin_rejects(c, "POST", "/admin/keys", 422, "body", content=raw)

        keys = (await c.get("/admin/keys", headers=ADMIN_H)).json()["keys"]
        assert [(k["name"], k["rpm_limit"], k["enabled"]) for k in keys] == [
            ("kept", 2**31 - 1, True)]
    assert "Traceback" not in caplog.text and "Exception in ASGI" not in caplog.text


@pytest.mark.anyio
async def test_admin_requests_limit_outside_its_range_is_a_422(tmp_path: Path) -> None:
    """``limit`` of /admin/requests is 1 to 1000: anything else is a 422 whose
    ``details.field`` is ``limit``, not a silently clamped answer."""
    async with serve_gateway(gateway_section({}), db_url=migrated_sqlite(tmp_path),
                             redis_url=None) as s, httpx.AsyncClient(base_url=s.url) as c:
        for limit in ("-1", "0", "1001", "9" * 20, "x"):
            r = await c.get("/admin/requests", params={"limit": limit}, headers=ADMIN_H)
            assert r.status_code == 422, (limit, r.text)
            assert r.json()["error"]["details"]["field"] == "limit"
        for limit in ("1", "1000"):
            r = await c.get("/admin/requests", params={"limit": limit}, headers=ADMIN_H)
            assert r.status_code == 200 and r.json() == {"requests": []}, r.text


@pytest.mark.anyio
async def test_admin_bodies_have_the_client_limit_and_errors_quote_little(
        tmp_path: Path) -> None:
    """The 4 MiB body limit holds for /admin/* as for /v1/* (413, nothing stored), and an
    unknown session is quoted back clipped, not whole."""
    big = "x" * (5 * 1024 * 1024)
    async with serve_gateway(gateway_section({}), db_url=migrated_sqlite(tmp_path),
                             redis_url=None) as s, httpx.AsyncClient(base_url=s.url) as c:
        for path, body in (("/admin/keys", {"name": big}),
                           ("/admin/sessions/drain", {"session": big}),
                           ("/admin/sessions/undrain", {"session": big})):
            r = await c.post(path, json=body, headers=ADMIN_H)
            assert r.status_code == 413, (path, r.text[:200])
            assert r.json()["error"]["code"] == "body_too_large"
        assert (await c.get("/admin/keys", headers=ADMIN_H)).json() == {"keys": []}

        long = "s" * 30_000  # httpx sends at most 64 KiB of query
        for kw in ({"json": {"session": long}}, {"params": {"session": long}}):
            r = await c.post("/admin/sessions/drain", headers=ADMIN_H, **kw)
            assert r.status_code == 404 and len(r.content) < 1000, r.text[:200]
            assert r.json()["error"]["details"]["session"].startswith("sss")
        r = await c.post(f"/admin/keys/{'9' * 4000}/disable", headers=ADMIN_H)
        assert r.status_code == 404 and len(r.content) < 1000, r.text[:200]
        r = await c.post("/admin/keys", json={"name": "n" * 201}, headers=ADMIN_H)
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "name"
        assert (await c.get("/admin/keys", headers=ADMIN_H)).json() == {"keys": []}
        r = await c.post("/admin/keys", json={"name": "n" * 200}, headers=ADMIN_H)
        assert r.status_code == 200, r.text[:200]


def test_keys_commands_refuse_numbers_outside_the_columns(store_url: str,
                                                          tmp_path: Path) -> None:
    """``--rpm`` beyond the INTEGER column and an ID beyond BIGINT exit 2 naming the option or
    argument (both backends); nothing is stored."""
    cfg = write_config(tmp_path / "c.yaml", {"models": {"m": {"sessions": [SESSION]}}},
                       db_url=store_url, redis_url=None)
    for rpm in (str(HUGE), str(2**31)):
        run = corlens("keys", "create", "--name", "a", "--rpm", rpm, "-c", str(cfg))
        assert run.returncode == 2 and "--rpm" in run.stderr, run.stderr
    for action in ("disable", "enable"):
        run = corlens("keys", action, str(HUGE), "-c", str(cfg))
        assert run.returncode == 2 and "'ID'" in run.stderr, run.stderr
    run = corlens("keys", "create", "--name", "a" * 201, "-c", str(cfg))
    assert run.returncode == 2 and "--name: at most 200 characters" in run.stderr, run.stderr
    assert corlens("keys", "list", "--json", "-c", str(cfg)).stdout.strip() == "[]"
    made = corlens("keys", "create", "--name", "a", "--rpm", str(2**31 - 1), "-c", str(cfg))
    assert made.returncode == 0, made.stderr


@pytest.mark.parametrize(("raw", "key"), [
    ({"models": {"m": {"sessions": [{**SESSION, "chain": "lo\x00cal"}]}}},
     "models.m.sessions.0.chain"),
    ({"models": {"m": {"sessions": [{**SESSION, "label": "r\x00"}]}}},
     "models.m.sessions.0.label"),
    ({"models": {"m\x00": {"sessions": [SESSION]}}}, "models"),
    ({"models": {"m": {"from_index": {"chain": "t\x00", "chain_id": 1,
                                      "model_identifier": "9"}}}}, "models.m.from_index.chain"),
])
def test_config_strings_recorded_with_requests_refuse_nul(raw: dict[str, Any], key: str) -> None:
    """Strings copied into every request record cannot hold NUL (PostgreSQL text refuses it)."""
    with pytest.raises(GatewayConfigError) as e:
        load_gateway_config(raw)
    assert e.value.key == key and "NUL" in e.value.problem


@pytest.mark.anyio
async def test_a_model_name_with_nul_is_refused_before_it_is_recorded(store_url: str) -> None:
    """A client's unknown model name is recorded with its 404; one holding NUL, or longer than
    any alias may be, is refused with a 422 naming ``model`` instead, so its record never
    reaches the database (PostgreSQL would refuse NUL), and the records of other requests are
    stored (both backends)."""
    from devnet.routers import Behaviour, RouterServer
    from tests.gateway_helpers import add_key, bearer, sessions_of

    _, key = add_key(store_url)
    with RouterServer([1], behaviour=Behaviour(latency=0.0, tokens=2)) as router:
        section = gateway_section({"m": sessions_of(router, [1], 2)})
        async with serve_gateway(section, db_url=store_url, redis_url=None) as s, \
                httpx.AsyncClient(base_url=s.url, headers=bearer(key)) as c:
            for path, body in (("/v1/completions", {"model": "m\x00", "prompt": "x"}),
                               ("/v1/completions", {"model": "m" * 10_000, "prompt": "x"}),
                               ("/v1/chat/completions", {"model": "\x00", "messages": [
                                   {"role": "user", "content": "x"}]})):
                r = await c.post(path, json=body)
                assert r.status_code == 422 and r.json()["error"]["message"].startswith(
                    "model:"), r.text
            ok = await c.post("/v1/completions", json={"model": "m", "prompt": "x"})
            assert ok.status_code == 200, ok.text
            rid = ok.headers["x-request-id"]
            store = GatewayStore(store_url)
            try:
                await _until(lambda: rid in _stored(store))
            finally:
                store.dispose()
            assert s.gateway.recorder.refused == 0
