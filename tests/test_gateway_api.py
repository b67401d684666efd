"""The gateway's client and admin API, served by a real uvicorn in this process against real
simulated routers, over both capacity backends (memory and the shared Redis)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devnet.routers import Behaviour, RouterServer
from tests.gateway_helpers import (
    ADMIN_H,
    add_key,
    anyio_backend_fixture,  # noqa: F401
    backend_fixture,  # noqa: F401
    bearer,
    gateway_section,
    migrated_sqlite,
    serve_gateway,
    sessions_of,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def router() -> Iterator[RouterServer]:
    with RouterServer([1, 2], token="router-secret",
                      behaviour=Behaviour(latency=0.02, tokens=5)) as r:
        yield r


async def inflight(base: str) -> int:
    async with httpx.AsyncClient() as c:
        snap = (await c.get(base + "/admin/capacity", headers=ADMIN_H)).json()
    return sum(s["inflight"] for s in snap["sessions"])


async def wait_for(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_completions_chat_and_stream(router: RouterServer, backend: str | None,
                                           tmp_path: Path) -> None:
    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    section = gateway_section({"m": sessions_of(router, [1, 2], 2, "router-secret")})
    async with serve_gateway(section, db_url=db, redis_url=backend,
                             verify_base_url="https://corlens.test") as s, \
            httpx.AsyncClient(base_url=s.url, headers=bearer(key)) as c:
        r = await c.post("/v1/completions", json={"model": "m", "prompt": "hello there"})
        assert r.status_code == 200, r.text
        body = r.json()
        rid = r.headers["x-request-id"]
        cx = body["cortensor"]
        assert cx["request_id"] == rid and cx["chain"] == "local" and cx["task_id"] >= 1
        assert cx["verification_url"] == (f"https://corlens.test/api/v1/chains/local/sessions/"
                                          f"{cx['session_id']}/tasks/{cx['task_id']}")
        assert body["choices"][0]["text"] == "tok0 tok1 tok2 tok3 tok4 "
        assert body["model"] == "m" and body["usage"]["completion_tokens"] == 5
        assert rid in router.app.stats[cx["session_id"]].references  # client_reference

        r = await c.post("/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"] == {"role": "assistant",
                                                     "content": "tok0 tok1 tok2 tok3 tok4 "}

        async with c.stream("POST", "/v1/chat/completions", json={
                "model": "m", "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            text = (await resp.aread()).decode()
        events = [e for e in text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]" and len(events) == 6
        assert '"delta":{"content":"tok0 ","role":"assistant"}' in events[0]
        assert_streamed(events, resp.headers["x-request-id"], "chat.completion.chunk")

        async with c.stream("POST", "/v1/completions", json={
                "model": "m", "stream": True, "prompt": "x"}) as resp:
            text = (await resp.aread()).decode()
        assert text.endswith("data: [DONE]\n\n") and '"text":"tok4 "' in text
        events = [e for e in text.split("\n\n") if e]
        assert_streamed(events, resp.headers["x-request-id"], "text_completion")

        models = (await c.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == ["m"]

        await wait_for(lambda: recorded(s.url, 4))
        rows = (await c.get("/admin/requests", headers=ADMIN_H,
                            params={"model": "m"})).json()["requests"]
        assert {r["status"] for r in rows} == {"ok"}
        assert rid in {r["request_id"] for r in rows}
        streamed = [r for r in rows if r["stream"]]
        assert all(r["ttfb_ms"] is not None and r["completion_tokens"] == 5 for r in streamed)
        sessions = (await c.get("/admin/sessions", headers=ADMIN_H)).json()["sessions"]
        assert sum(x["requests_15m"] for x in sessions) == 4
        assert all(x["replica_share"] == {"r1": 1.0} for x in sessions if x["requests_15m"])
        assert await inflight(s.url) == 0
        metrics = (await c.get("/metrics")).text
        assert 'corlens_gateway_requests_total{model="m"' in metrics
        assert "corlens_gateway_session_inflight" in metrics


def assert_streamed(events: list[str], request_id: str, kind: str) -> None:
    """Every chunk of a stream names the client's model; the final one (finish_reason set)
    carries the ``cortensor`` object, as a non-streamed answer does."""
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(ch["model"] == "m" and ch["object"] == kind for ch in chunks), chunks
    assert [ch["choices"][0]["finish_reason"] for ch in chunks] == [None] * 4 + ["stop"]
    assert ["cortensor" in ch for ch in chunks] == [False] * 4 + [True]
    cx = chunks[-1]["cortensor"]
    assert cx["request_id"] == request_id and cx["task_id"] >= 1
    assert cx["verification_url"] == (f"https://corlens.test/api/v1/chains/local/sessions/"
                                      f"{cx['session_id']}/tasks/{cx['task_id']}")


async def recorded(base: str, n: int) -> bool:
    async with httpx.AsyncClient() as c:
        rows = (await c.get(base + "/admin/requests", headers=ADMIN_H)).json()["requests"]
    return len(rows) >= n


async def test_client_errors(router: RouterServer, tmp_path: Path) -> None:
    db = migrated_sqlite(tmp_path)
    key_id, key = add_key(db)
    _, limited = add_key(db, rpm=2)
    section = gateway_section({"m": sessions_of(router, [1], 2, "router-secret")})
    ok = {"model": "m", "prompt": "x"}
    async with serve_gateway(section, db_url=db, redis_url=None) as s, \
            httpx.AsyncClient(base_url=s.url) as c:
        r = await c.post("/v1/completions", json=ok)
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        r = await c.post("/v1/completions", json=ok, headers=bearer("clk_nope"))
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        h = bearer(key)
        r = await c.post("/v1/completions", json={"model": "m", "prompt": "x",
                                                  "max_tokens": "lots"}, headers=h)
        assert r.status_code == 422 and r.json()["error"]["details"]["errors"][0]["field"] == (
            "max_tokens")
        assert r.json()["error"]["message"].startswith("max_tokens:")
        assert r.json()["error"]["details"]["field"] == "max_tokens"  # as the README says
        r = await c.post("/v1/chat/completions", json={"model": "m", "messages": []}, headers=h)
        assert r.status_code == 422 and r.json()["error"]["message"].startswith("messages:")
        assert r.json()["error"]["details"]["field"] == "messages"
        for raw in (b"{not json", b"not json", b"", b"[1]"):
            r = await c.post("/v1/completions", content=raw, headers=h)
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_body"
            assert r.json()["error"]["details"]["field"] == "body", (raw, r.text)
        r = await c.post("/v1/completions", json={"model": "nope", "prompt": "x"}, headers=h)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert set(r.json()["error"]) == {"code", "message", "details"}

        assert (await c.get("/admin/capacity")).status_code == 401
        r = await c.get("/admin/capacity", headers=bearer("wrong"))
        assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_admin_token"

        # rate limit: the third request within a minute is refused with Retry-After
        hl = bearer(limited)
        assert [(await c.post("/v1/completions", json=ok, headers=hl)).status_code
                for _ in range(2)] == [200, 200]
        r = await c.post("/v1/completions", json=ok, headers=hl)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limited"

        # a key disabled through the admin route is refused at once
        assert (await c.post("/v1/completions", json=ok, headers=h)).status_code == 200
        r = await c.post(f"/admin/keys/{key_id}/disable", headers=ADMIN_H)
        assert r.status_code == 200 and r.json()["enabled"] is False
        r = await c.post("/v1/completions", json=ok, headers=h)
        assert r.status_code == 401 and r.json()["error"]["code"] == "disabled_api_key"
        await c.post(f"/admin/keys/{key_id}/enable", headers=ADMIN_H)
        assert (await c.post("/v1/completions", json=ok, headers=h)).status_code == 200

        created = (await c.post("/admin/keys", json={"name": "ops", "rpm_limit": 5},
                                headers=ADMIN_H)).json()
        assert created["key"].startswith("clk_") and created["rpm_limit"] == 5
        listed = (await c.get("/admin/keys", headers=ADMIN_H)).json()["keys"]
        assert all("key" not in k and "key_hash" not in k for k in listed)
        r = await c.post("/admin/keys", json={"name": ""}, headers=ADMIN_H)
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "name"


async def test_mounted_routes_answer_as_the_fast_path(router: RouterServer,
                                                      tmp_path: Path) -> None:
    """``corlens serve`` mounts the FastAPI routes; ``corlens gateway`` answers the completion
    routes on its bare ASGI fast path. Both give the same answers, and refuse a body over
    4 MiB with 413."""
    from fastapi import FastAPI

    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    section = gateway_section({"m": sessions_of(router, [1, 2], 2, "router-secret")})
    async with serve_gateway(section, db_url=db, redis_url=None) as s:
        mounted = FastAPI()
        mounted.include_router(s.gateway.router)
        fast = httpx.AsyncClient(base_url=s.url, headers=bearer(key))
        slow = httpx.AsyncClient(transport=httpx.ASGITransport(app=mounted),
                                 base_url="http://gw", headers=bearer(key))
        async with fast, slow:
            for path, body in (
                    ("/v1/completions", {"model": "m", "prompt": "x"}),
                    ("/v1/chat/completions", {"model": "m",
                                              "messages": [{"role": "user", "content": "x"}]}),
                    ("/v1/completions", {"model": "m", "prompt": "x", "max_tokens": "lots"}),
                    ("/v1/completions", {"model": "nope", "prompt": "x"})):
                a, b = await fast.post(path, json=body), await slow.post(path, json=body)
                assert a.status_code == b.status_code, (path, body, a.text, b.text)
                if a.status_code == 200:
                    assert a.json().keys() == b.json().keys()
                    assert a.headers["x-cortensor-router"] and b.headers["x-cortensor-router"]
                else:
                    assert a.json()["error"]["code"] == b.json()["error"]["code"]
            big = b'{"model": "m", "prompt": "' + b"x" * (4 * 1024 * 1024) + b'"}'
            for client in (fast, slow):
                r = await client.post("/v1/completions", content=big)
                assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


async def test_serve_puts_the_completion_routes_on_the_fast_path(router: RouterServer,
                                                                 tmp_path: Path) -> None:
    """``corlens serve`` hands uvicorn :func:`api.compose.serve_app`: the completion routes on
    the gateway's fast path, the API and the gateway's other routes on FastAPI, the collector
    frozen while it serves and thawed at shutdown."""
    import gc

    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from api.compose import serve_app
    from indexer.config import Settings

    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    section = gateway_section({"m": sessions_of(router, [1, 2], 2, "router-secret")})
    app = serve_app(Settings(database_url=db, gateway=section), run_indexer=False)
    assert not isinstance(app, FastAPI)  # wrapped by the fast path
    with TestClient(app, headers=bearer(key)) as c:
        assert gc.get_freeze_count() > 0
        r = c.post("/v1/completions", json={"model": "m", "prompt": "x"})
        assert r.status_code == 200, r.text
        assert r.json()["cortensor"]["session_id"] in (1, 2)
        bad = c.post("/v1/completions", json={"model": "m", "prompt": "x", "max_tokens": "x"})
        assert bad.status_code == 422 and "max_tokens" in bad.text
        assert c.get("/v1/models").json()["data"][0]["id"] == "m"  # FastAPI route
        assert c.get("/api/v1/chains").status_code == 200  # the verification API
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("public_url", [None, "https://corlens.example.org/"])
async def test_serve_links_verification_to_its_public_url_or_the_request_host(
        router: RouterServer, tmp_path: Path, public_url: str | None) -> None:
    """Mounted by ``corlens serve`` (fast path and FastAPI routes alike), the gateway's
    ``verification_url`` starts at ``public_url``, else at the host the client reached, as the
    API's own links do."""
    from starlette.testclient import TestClient

    from api.compose import build_app, serve_app
    from indexer.config import Settings

    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    settings = Settings(database_url=db, public_url=public_url, gateway=gateway_section(
        {"m": sessions_of(router, [1, 2], 2, "router-secret")}))
    base = (public_url or "http://corlens.test:8080/").rstrip("/")
    for app in (serve_app(settings, run_indexer=False), build_app(settings, run_indexer=False)):
        with TestClient(app, base_url="http://corlens.test:8080", headers=bearer(key)) as c:
            for path, body in (("/v1/completions", {"model": "m", "prompt": "x"}),
                               ("/v1/chat/completions", {"model": "m", "messages": [
                                   {"role": "user", "content": "x"}]})):
                cx = c.post(path, json=body).json()["cortensor"]
                assert cx["verification_url"] == (
                    f"{base}/api/v1/chains/local/sessions/{cx['session_id']}/tasks/"
                    f"{cx['task_id']}"), (path, cx)
