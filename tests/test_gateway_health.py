"""Admission bounds, upstream failures and lease release, in-process over both backends:
the wait window and the queue hold and every rejection carries Retry-After; a connect failure
is retried once on another session; failing sessions cool down; upstream timeouts answer 504;
a client that leaves mid-stream frees its slot at once; drained sessions get no traffic."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from devnet.anvil import free_port
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
from tests.test_gateway_api import inflight, recorded, wait_for

pytestmark = pytest.mark.anyio
OK = {"model": "m", "prompt": "x"}


async def test_wait_window_and_queue_bounds(backend: str | None, tmp_path: Path) -> None:
    """One session of limit 1 answering in 0.4 s; wait 0.2 s, then a queue of 2 for 0.6 s."""
    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    with RouterServer([1], behaviour=Behaviour(latency=0.4)) as router:
        section = gateway_section({"m": sessions_of(router, [1], 1)}, wait_timeout=0.2,
                                  queue={"max_depth": 2, "timeout": 0.6})
        async with serve_gateway(section, db_url=db, redis_url=backend) as s, \
                httpx.AsyncClient(base_url=s.url, headers=bearer(key), timeout=10) as c:

            async def one() -> tuple[int, float, httpx.Response]:
                t = time.monotonic()
                r = await c.post("/v1/completions", json=OK)
                return r.status_code, time.monotonic() - t, r

            results = await asyncio.gather(*(one() for _ in range(8)))
            assert await inflight(s.url) == 0
        assert router.app.stats[1].max_inflight == 1
    codes = sorted(code for code, _, _ in results)
    assert set(codes) == {200, 503}, codes
    # admitted: the first, then at most the two queued (each 0.4 s) within 0.2 + 0.6 s
    assert 2 <= codes.count(200) <= 3, codes
    for code, took, r in results:
        assert took < 0.2 + 0.6 + 0.4 + 0.5  # wait + queue + one answer + slack
        if code == 503:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["details"]["reason"] in ("queue_full", "queue_timeout")
    reasons = [r.json()["error"]["details"]["reason"] for c_, _, r in results if c_ == 503]
    assert "queue_full" in reasons  # 8 > 1 running + 2 queued


async def test_connect_failure_retried_on_another_session(backend: str | None,
                                                          tmp_path: Path) -> None:
    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with RouterServer([1]) as router:
        pool = [{"router_url": dead, "session_id": 9, "max_inflight": 4, "label": "dead"},
                *sessions_of(router, [1], 4)]
        section = gateway_section({"m": pool}, cooldown={"failures": 2, "seconds": 30})
        async with serve_gateway(section, db_url=db, redis_url=backend) as s, \
                httpx.AsyncClient(base_url=s.url, headers=bearer(key)) as c:
            codes = [(await c.post("/v1/completions", json=OK)).status_code for _ in range(6)]
            assert codes == [200] * 6
            snap = (await c.get("/admin/capacity", headers=ADMIN_H)).json()
            dead_state = next(x for x in snap["sessions"] if x["label"] == "dead")
            assert dead_state["cooldown_until"] is not None  # two failures in a row
            await wait_for(lambda: _has_retried(s.url))
        assert router.app.stats[1].completed == 6


async def _has_retried(base: str) -> bool:
    async with httpx.AsyncClient() as c:
        rows = (await c.get(base + "/admin/requests", headers=ADMIN_H)).json()["requests"]
    return len(rows) == 6 and any(r["attempts"] == 2 for r in rows)


async def test_router_errors_and_cooldown(tmp_path: Path) -> None:
    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    with RouterServer([1], behaviour=Behaviour(fail_status=500)) as router:
        section = gateway_section({"m": sessions_of(router, [1], 2)},
                                  cooldown={"failures": 2, "seconds": 30})
        async with serve_gateway(section, db_url=db, redis_url=None) as s, \
                httpx.AsyncClient(base_url=s.url, headers=bearer(key)) as c:
            r1 = await c.post("/v1/completions", json=OK)
            r2 = await c.post("/v1/completions", json=OK)
            assert (r1.status_code, r2.status_code) == (502, 502)
            assert r1.json()["error"]["details"]["upstream_status"] == 500
            r3 = await c.post("/v1/completions", json=OK)  # the only session is cooling down
            assert r3.status_code == 503 and int(r3.headers["retry-after"]) >= 1
            assert await inflight(s.url) == 0


async def test_upstream_timeout_leaves_no_lease(backend: str | None, tmp_path: Path) -> None:
    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    with RouterServer([1], behaviour=Behaviour(latency=3.0)) as router:
        section = gateway_section({"m": sessions_of(router, [1], 4)},
                                  upstream={"timeout": 0.3}, lease_ttl=30)
        async with serve_gateway(section, db_url=db, redis_url=backend) as s, \
                httpx.AsyncClient(base_url=s.url, headers=bearer(key), timeout=10) as c:
            t = time.monotonic()
            rs = await asyncio.gather(
                *(c.post("/v1/completions", json=OK) for _ in range(3)),
                c.post("/v1/completions", json={**OK, "stream": True}))
            assert time.monotonic() - t < 2.0
            assert [r.status_code for r in rs] == [504] * 4
            assert rs[0].json()["error"]["code"] == "upstream_timeout"
            assert await inflight(s.url) == 0  # released, not left to the 30 s TTL
            # the router saw the gateway hang up
            await wait_for(lambda: _zero(router), timeout=3)


async def _zero(router: RouterServer) -> bool:
    return router.app.stats[1].inflight == 0


async def test_client_leaving_mid_stream_frees_the_slot(backend: str | None,
                                                       tmp_path: Path) -> None:
    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    with RouterServer([1], behaviour=Behaviour(latency=0.01, tokens=100, gap=0.05)) as router:
        section = gateway_section({"m": sessions_of(router, [1], 5)}, lease_ttl=60)
        async with serve_gateway(section, db_url=db, redis_url=backend) as s:
            async with httpx.AsyncClient(base_url=s.url, headers=bearer(key)) as c:
                for _ in range(5):
                    async with c.stream("POST", "/v1/completions",
                                        json={**OK, "stream": True}) as resp:
                        first = await resp.aiter_raw().__anext__()
                        assert first.startswith(b"data: ")
                        assert await inflight(s.url) == 1
                    # The router notices the closed upstream stream a moment later; it must
                    # before the next request, or max_inflight below would say 2.
                    await wait_for(lambda: _zero(router), timeout=2)
                # closed: the generator's end released each lease, long before the 60 s TTL
                await wait_for(lambda: _inflight_zero(s.url), timeout=2)
                await wait_for(lambda: _zero(router), timeout=2)
                await wait_for(lambda: recorded(s.url, 5))
                rows = (await c.get("/admin/requests", headers=ADMIN_H)).json()["requests"]
        assert router.app.stats[1].max_inflight == 1
    assert [r["status"] for r in rows] == ["client_closed"] * 5


async def _inflight_zero(base: str) -> bool:
    return await inflight(base) == 0


async def test_drain_and_undrain(tmp_path: Path, redis_url: str) -> None:
    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    with RouterServer([1, 2]) as router:
        section = gateway_section({"m": sessions_of(router, [1, 2], 2)})
        async with serve_gateway(section, db_url=db, redis_url=redis_url) as s, \
                httpx.AsyncClient(base_url=s.url, headers=bearer(key)) as c:
            label = f"{router.port}:1"
            r = await c.post("/admin/sessions/drain", json={"session": label}, headers=ADMIN_H)
            assert r.status_code == 200 and r.json()["drained"] is True
            for _ in range(4):
                assert (await c.post("/v1/completions", json=OK)).status_code == 200
            assert router.app.stats[1].requests == 0 and router.app.stats[2].requests == 4
            await c.post("/admin/sessions/undrain", json={"session": label}, headers=ADMIN_H)
            for _ in range(4):
                assert (await c.post("/v1/completions", json=OK)).status_code == 200
            assert router.app.stats[1].requests == 2
            r = await c.post("/admin/sessions/drain", json={"session": "nope"}, headers=ADMIN_H)
            assert r.status_code == 404
