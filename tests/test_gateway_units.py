"""Pure parts of the gateway (config validation, request bodies, chat prompts, SSE splitting,
stats, metrics) and the ``corlens keys`` / ``corlens gateway`` commands with their exit codes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from api.cli import app as cli_app
from devnet.anvil import free_port
from gateway.capacity.base import CapacitySnapshot, SessionState
from gateway.config import ChatTemplate, load_gateway_config
from gateway.errors import ApiError, GatewayConfigError
from gateway.metrics import Metrics
from gateway.schemas import ChatRequest, CompletionRequest, chat_prompt, parse_body, router_body
from gateway.stats import aggregate, percentile
from gateway.upstream import event_data, sse_events
from tests.gateway_helpers import migrated_sqlite, write_config

SESSION = {"router_url": "http://127.0.0.1:9", "session_id": 1}


@pytest.mark.parametrize(("raw", "key"), [
    ({"models": {"m": {}}}, "models.m"),
    ({"models": {"m": {"sessions": [{"session_id": 1}]}}}, "models.m.sessions.0.router_url"),
    ({"models": {"m": {"sessions": [{**SESSION, "max_inflight": 0}]}}},
     "models.m.sessions.0.max_inflight"),
    ({"models": {"m": {"sessions": [{**SESSION, "router_url": "ftp://x"}]}}},
     "models.m.sessions.0.router_url"),
    ({"wait_timeout": -1}, "wait_timeout"),
    ({"on_redis_failure": "maybe"}, "on_redis_failure"),
    ({"queue": {"max_depth": "lots"}}, "queue.max_depth"),
    ({"models": {"m": {"sessions": [SESSION], "chat_template": {"message": "{who}"}}}},
     "models.m.chat_template.message"),
    ({"surprise": 1}, "surprise"),
])
def test_config_errors_name_the_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(GatewayConfigError) as e:
        load_gateway_config(raw)
    assert e.value.key == key and str(e.value).startswith(f"gateway.{key}: ")


def test_config_defaults_and_env_style_values() -> None:
    cfg = load_gateway_config({"models": {"m": {"sessions": [SESSION]}}, "wait_timeout": 2,
                               "queue": {"max_depth": 5}})
    assert cfg.wait_timeout == 2.0 and cfg.queue.max_depth == 5 and cfg.lease_ttl == 15.0
    slot = cfg.models["m"].sessions[0].slot("m")
    assert slot.key == "local:1@http://127.0.0.1:9" and slot.label == "local:1"
    assert cfg.renew_interval == cfg.lease_ttl / 3


def test_bodies_and_router_body() -> None:
    with pytest.raises(ApiError) as e:
        parse_body(b'{"model": "m", "prompt": "x", "temperature": 9}', CompletionRequest)
    assert e.value.status == 422 and e.value.message.startswith("temperature:")
    with pytest.raises(ApiError) as e:
        parse_body(b"[1]", CompletionRequest)
    assert e.value.details == {"field": "body"}
    req = parse_body(b'{"model": "m", "prompt": "x", "max_tokens": 9, "n": 2}',
                     CompletionRequest)
    body = router_body(req, "x", request_id="gw-1", prompt_type=1, prompt_template="T",
                       timeout=30)
    assert body == {"prompt": "x", "stream": False, "prompt_type": 1, "prompt_template": "T",
                    "timeout": 30, "client_reference": "gw-1", "max_tokens": 9}
    chat = parse_body(json.dumps({"model": "m", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}).encode(), ChatRequest)
    assert chat_prompt(chat.messages, ChatTemplate(message="[{role}] {content}\n",
                                                   suffix="[assistant] ")) == (
        "[system] be brief\n[user] hi\n[assistant] ")


def test_sse_events_split_as_produced() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for c in (b"data: {\"a\"", b": 1}\n\ndata: [DO", b"NE]\r\n\r\n", b"data: tail"):
            yield c

    async def collect() -> list[bytes]:
        return [e async for e in sse_events(chunks())]

    events = asyncio.run(collect())
    assert events == [b'data: {"a": 1}\n\n', b"data: [DONE]\n\n", b"data: tail\n\n"]
    assert [event_data(e) for e in events] == [b'{"a": 1}', b"[DONE]", b"tail"]
    assert event_data(b": comment\n\n") is None


def test_stats_aggregate() -> None:
    now = datetime.now(UTC)
    old = now - timedelta(minutes=5)
    rows = [("s1", "ok", 10.0, 3, 5, "a", now), ("s1", "ok", 30.0, 3, 5, "b", old),
            ("s1", "error", 99.0, None, None, "a", now), ("s2", "ok", 5.0, 1, 1, "a", now)]
    figs = aggregate(rows, now)
    s1 = figs["s1"].public()
    assert (s1["requests_1m"], s1["requests_15m"]) == (2, 3)
    assert s1["success_rate"] == pytest.approx(2 / 3)
    assert (s1["latency_p50_ms"], s1["latency_p95_ms"]) == (10.0, 30.0)
    assert s1["replica_share"] == {"a": pytest.approx(0.6667), "b": pytest.approx(0.3333)}
    assert (s1["prompt_tokens"], s1["completion_tokens"]) == (6, 10)
    assert percentile([1.0], 0.99) == 1.0


def test_metrics_text() -> None:
    m = Metrics()
    m.request("m", 's"1', "ok", 0.02)
    m.inc("corlens_gateway_rejections_total", "Rejections.", model="m", code="no_capacity")
    snap = CapacitySnapshot(mode="redis", redis_reachable=True, redis_ping_ms=0.3,
                            breaker="closed", lease_ttl=15, wait_timeout=5, queue_bound=10,
                            queue_depth={"m": 2},
                            sessions=[SessionState("k", "m", "s1", 1, 2, None, 0, False)],
                            counters={"renewals": 4})
    text = m.render(snap)
    assert 'corlens_gateway_requests_total{model="m",session="s\\"1",status="ok"} 1' in text
    assert 'corlens_gateway_request_duration_seconds_bucket{model="m",le="0.025"} 1' in text
    assert 'corlens_gateway_session_inflight{model="m",session="s1"} 1' in text
    assert 'corlens_gateway_queue_depth{model="m"} 2' in text
    assert "corlens_gateway_redis_breaker_state 0" in text
    assert "corlens_gateway_capacity_renewals_total 4" in text


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def corlens(*args: str) -> Ran:
    """The real CLI app, in this process (a subprocess per call costs seconds of imports; the
    replica tests run ``corlens gateway`` as a process)."""
    result = CliRunner().invoke(cli_app, list(args), env={"CORLENS_CONFIG": ""})
    return Ran(result.exit_code, result.stdout, result.stderr)


def test_keys_commands_and_exit_codes(tmp_path: Path) -> None:
    db = migrated_sqlite(tmp_path)
    cfg = write_config(tmp_path / "c.yaml", {"models": {"m": {"sessions": [SESSION]}}},
                       db_url=db, redis_url=None)
    made = corlens("keys", "create", "--name", "ci", "--rpm", "5", "--json", "-c", str(cfg))
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["key"].startswith("clk_") and key["rpm_limit"] == 5
    listed = corlens("keys", "list", "--json", "-c", str(cfg))
    assert key["key"] not in listed.stdout and json.loads(listed.stdout)[0]["enabled"] is True
    assert corlens("keys", "disable", str(key["id"]), "-c", str(cfg)).returncode == 0
    assert json.loads(corlens("keys", "list", "--json", "-c", str(cfg)).stdout)[0][
        "enabled"] is False
    assert corlens("keys", "enable", str(key["id"]), "-c", str(cfg)).returncode == 0
    missing = corlens("keys", "disable", "999", "-c", str(cfg))
    assert missing.returncode == 2 and "no API key 999" in missing.stderr

    bad = write_config(tmp_path / "bad.yaml", {"models": {"m": {"sessions": [
        {**SESSION, "max_inflight": 0}]}}}, db_url=db, redis_url=None)
    run = corlens("gateway", "-c", str(bad), "--port", str(free_port()))
    assert run.returncode == 2 and "gateway.models.m.sessions.0.max_inflight" in run.stderr
    nofile = corlens("keys", "list", "-c", str(tmp_path / "none.yaml"))
    assert nofile.returncode == 2 and "--config" in nofile.stderr


def test_every_setting_has_an_environment_variable(tmp_path: Path) -> None:
    from indexer.config import load_settings

    cfg = write_config(tmp_path / "c.yaml", {"models": {"m": {"sessions": [
        {**SESSION, "router_token": "${ROUTER_TOKEN}"}]}}}, db_url="sqlite:///x.db",
        redis_url=None)
    env = {"ROUTER_TOKEN": "secret", "CORLENS_GATEWAY__WAIT_TIMEOUT": "2.5",
           "CORLENS_GATEWAY__QUEUE__MAX_DEPTH": "7", "CORLENS_GATEWAY__ON_REDIS_FAILURE": "reject",
           "CORLENS_GATEWAY__UPSTREAM__TIMEOUT": "9", "CORLENS_GATEWAY__BREAKER__COOLOFF": "3"}
    g = load_gateway_config(load_settings(str(cfg), env=env).gateway)
    assert (g.wait_timeout, g.queue.max_depth, g.on_redis_failure) == (2.5, 7, "reject")
    assert (g.upstream.timeout, g.breaker.cooloff) == (9.0, 3.0)
    assert g.models["m"].sessions[0].router_token == "secret"


def test_request_records_written_once(store_url: str) -> None:
    """A retried accounting batch (same request ids) writes nothing twice (both backends)."""
    from gateway.store import GatewayStore

    store = GatewayStore(store_url)
    try:
        info, _ = store.create_key("acct")
        at = datetime.now(UTC)
        rows = [{"request_id": f"gw-once-{i}", "key_id": info.id, "model": "m",
                 "endpoint": "completions", "stream": False, "status": "ok", "http_status": 200,
                 "latency_ms": 1.5, "attempts": 1, "replica_id": "r", "created_at": at}
                for i in range(3)]
        store.write_batch(rows[:2], {info.id: at})
        store.write_batch(rows, {info.id: at})  # the first two again: skipped
        with store.engine.connect() as c:
            got = c.execute(sa.text("SELECT request_id FROM gateway_request "
                                    "WHERE request_id LIKE :p"), {"p": "gw-once-%"}
                            ).scalars().all()
        assert sorted(got) == [f"gw-once-{i}" for i in range(3)]
        assert next(k for k in store.list_keys() if k.id == info.id).last_used_at is not None
    finally:
        store.dispose()


def test_concurrent_requests_share_one_key_lookup() -> None:
    """An expired cache entry sends one lookup to the database, not one per waiting request."""
    import threading

    from gateway.keys import KeyAuth
    from gateway.store import KeyInfo

    class Store:
        calls = 0

        def find_key(self, key: str) -> KeyInfo | None:
            Store.calls += 1
            threading.Event().wait(0.05)  # a slow database
            return None if key == "clk_bad" else KeyInfo(
                id=7, name="k", prefix="clk_abcd", enabled=True, rpm_limit=None,
                created_at=datetime.now(UTC), last_used_at=None)

    auth = KeyAuth(Store(), cache_ttl=0.0)  # type: ignore[arg-type]

    async def scenario() -> None:
        got = await asyncio.gather(*(auth.authenticate("Bearer clk_good") for _ in range(50)))
        assert {k.id for k in got} == {7} and Store.calls == 1
        bad = await asyncio.gather(*(auth.authenticate("Bearer clk_bad") for _ in range(5)),
                                   return_exceptions=True)
        assert all(isinstance(e, ApiError) and e.status == 401 for e in bad)
        assert Store.calls == 2

    asyncio.run(scenario())
