"""Real ``corlens gateway`` processes against real simulated routers: two replicas sharing
Redis under a burst, kill -9 of a replica mid-flight, a thousand clients leaving mid-stream,
Redis stopped and restarted during a run, and the same single-replica checks in plain mode."""

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
from tests.conftest import unavailable
from tests.gateway_helpers import (
    ADMIN_H,
    GatewayProcess,
    RedisServer,
    RouterProcess,
    add_key,
    bearer,
    gateway_section,
    migrated_sqlite,
    sessions_of,
    stream_and_leave,
    write_config,
)

OK = {"model": "m", "prompt": "hello"}


def capacity(gw: GatewayProcess) -> dict[str, Any]:
    r = httpx.get(gw.url + "/admin/capacity", headers=ADMIN_H, timeout=5)
    assert r.status_code == 200, r.text
    return dict(r.json())


def inflight(gw: GatewayProcess) -> int:
    return sum(s["inflight"] for s in capacity(gw)["sessions"])


async def burst(urls: list[str], key: str, n: int, body: dict[str, Any] | None = None,
                timeout: float = 60) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(headers=bearer(key), timeout=timeout, limits=limits) as c:
        return list(await asyncio.gather(
            *(c.post(urls[i % len(urls)] + "/v1/completions", json=body or OK)
              for i in range(n))))


@pytest.fixture
def private_redis() -> Iterator[str]:
    """A redis-server of this test's own (no other suite's keys or FLUSHes in the way)."""
    if not RedisServer.available():
        unavailable("redis-server is not installed")
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def three_sessions() -> Iterator[RouterServer]:
    with RouterServer([1, 2, 3], behaviour=Behaviour(latency=0.15, tokens=4)) as r:
        yield r


def check_burst(router: RouterServer, results: list[httpx.Response], limit: int) -> None:
    assert [r.status_code for r in results] == [200] * len(results), {
        r.status_code: r.text for r in results if r.status_code != 200}
    stats = router.app.stats
    assert all(st.max_inflight <= limit for st in stats.values()), {
        s: st.max_inflight for s, st in stats.items()}
    served = [st.completed for st in stats.values()]
    mean = sum(served) / len(served)
    assert all(abs(x - mean) <= 0.1 * mean for x in served), served  # round-robin spread


def test_two_replicas_share_capacity_under_a_burst(
        three_sessions: RouterServer, private_redis: str, tmp_path: Path) -> None:
    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    section = gateway_section({"m": sessions_of(three_sessions, [1, 2, 3], 2)},
                              wait_timeout=30, queue={"max_depth": 200, "timeout": 30},
                              redis_timeout=1.0)  # a loaded CI box must not trip the breaker
    cfg = write_config(tmp_path / "gw.yaml", section, db_url=db, redis_url=private_redis)
    a, b = GatewayProcess(cfg, "a").start(), GatewayProcess(cfg, "b").start()
    try:
        t = time.monotonic()
        results = asyncio.run(burst([a.url, b.url], key, 42))
        took = time.monotonic() - t
        states = [(g.replica_id, capacity(g)["mode"], capacity(g)["counters"]) for g in (a, b)]
        assert took < 30, (took, states)
        check_burst(three_sessions, results, 2)
        assert inflight(a) == 0 and inflight(b) == 0
        waited = httpx.get(a.url + "/admin/requests", headers=ADMIN_H,
                           params={"limit": 100}).json()["requests"]
        assert {r["replica_id"] for r in waited} == {"a", "b"}
    finally:
        a.stop()
        b.stop()


def test_plain_mode_single_replica(three_sessions: RouterServer, tmp_path: Path) -> None:
    """No Redis: exact in-process limits, spread, 504 on a slow router, and streams left early
    leave no lease."""
    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    section = gateway_section({"m": sessions_of(three_sessions, [1, 2, 3], 2)},
                              wait_timeout=30, upstream={"timeout": 1.0}, lease_ttl=60)
    cfg = write_config(tmp_path / "gw.yaml", section, db_url=db, redis_url=None)
    gw = GatewayProcess(cfg, "plain").start()
    try:
        assert capacity(gw)["mode"] == "memory"
        check_burst(three_sessions, asyncio.run(burst([gw.url], key, 36)), 2)
        httpx.post(three_sessions.url + "/control", json={"latency": 3.0})
        t = time.monotonic()
        slow = asyncio.run(burst([gw.url], key, 6))
        assert [r.status_code for r in slow] == [504] * 6 and time.monotonic() - t < 2.5
        assert inflight(gw) == 0
        httpx.post(three_sessions.url + "/control", json={"latency": 0.01, "tokens": 200,
                                                          "gap": 0.02})
        asyncio.run(leave_early(gw.url, key, 60, 20))
        deadline = time.monotonic() + 2
        while inflight(gw) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert inflight(gw) == 0
    finally:
        gw.stop()


async def leave_early(url: str, key: str, n: int, concurrency: int) -> int:
    """``n`` streaming clients that read the first event and hang up."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    got = 0
    async with httpx.AsyncClient(headers=bearer(key), timeout=30, limits=limits) as c:

        async def one() -> None:
            nonlocal got
            async with sem, c.stream("POST", url + "/v1/completions",
                                     json={**OK, "stream": True}) as resp:
                assert resp.status_code == 200
                async for chunk in resp.aiter_raw():
                    if chunk.startswith(b"data: {"):
                        got += 1
                    break

        await asyncio.gather(*(one() for _ in range(n)))
    return got


def test_thousand_clients_leaving_mid_stream_leave_no_lease(private_redis: str,
                                                            tmp_path: Path) -> None:
    """1,000 streaming clients (50 at a time) read the first event and hang up; every lease
    is released by the stream's end, not by its (60 s) TTL."""
    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    with RouterProcess([1, 2, 3, 4], latency=0.005, tokens=100, gap=0.02) as router:
        pool = [{"router_url": router.url, "session_id": s, "max_inflight": 20}
                for s in (1, 2, 3, 4)]
        section = gateway_section({"m": pool}, wait_timeout=30, lease_ttl=60,
                                  redis_timeout=1.0)
        cfg = write_config(tmp_path / "gw.yaml", section, db_url=db, redis_url=private_redis)
        gw = GatewayProcess(cfg, "streams").start()
        try:
            body = json.dumps({**OK, "stream": True}).encode()

            async def clients(n: int, concurrency: int) -> list[bool]:
                sem = asyncio.Semaphore(concurrency)

                async def one() -> bool:
                    async with sem:
                        return await stream_and_leave("127.0.0.1", gw.port, key, body)

                return list(await asyncio.gather(*(one() for _ in range(n))))

            t = time.monotonic()
            got = asyncio.run(clients(1000, 50))
            assert sum(got) == 1000 and time.monotonic() - t < 90
            deadline = time.monotonic() + 3  # far below the 60 s lease TTL
            while inflight(gw) and time.monotonic() < deadline:
                time.sleep(0.05)
            snap = capacity(gw)
            assert sum(s["inflight"] for s in snap["sessions"]) == 0
            assert snap["counters"].get("expiries", 0) == 0
            assert all(st["max_inflight"] <= 20 for st in router.stats().values())
        finally:
            gw.stop()


def test_kill_9_replica_capacity_returns_within_lease_ttl(
        three_sessions: RouterServer, private_redis: str, tmp_path: Path) -> None:
    ttl = 2.0
    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    section = gateway_section({"m": sessions_of(three_sessions, [1, 2, 3], 2)},
                              lease_ttl=ttl, wait_timeout=0.2, queue={"max_depth": 0})
    cfg = write_config(tmp_path / "gw.yaml", section, db_url=db, redis_url=private_redis)
    a, b = GatewayProcess(cfg, "victim").start(), GatewayProcess(cfg, "survivor").start()
    httpx.post(three_sessions.url + "/control", json={"latency": 30.0})
    try:

        async def doomed() -> None:
            async with httpx.AsyncClient(headers=bearer(key), timeout=60) as c:
                tasks = [asyncio.create_task(c.post(a.url + "/v1/completions", json=OK))
                         for _ in range(6)]
                deadline = time.monotonic() + 10
                while await asyncio.to_thread(inflight, b) < 6:
                    assert time.monotonic() < deadline, "capacity never filled"
                    await asyncio.sleep(0.05)
                r = await c.post(b.url + "/v1/completions", json=OK)  # all six slots held
                assert r.status_code == 503 and "retry-after" in r.headers
                a.kill9()
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(doomed())
        killed = time.monotonic()
        while inflight(b) > 0:
            assert time.monotonic() - killed <= ttl + 1.0, "leases outlived TTL + 1 s"
            time.sleep(0.05)
        httpx.post(three_sessions.url + "/control", json={"latency": 0.01})
        r = httpx.post(b.url + "/v1/completions", json=OK, headers=bearer(key), timeout=10)
        assert r.status_code == 200
    finally:
        a.stop()
        b.stop()


def test_redis_outage_degrades_and_recovers(three_sessions: RouterServer,
                                            tmp_path: Path) -> None:
    if not RedisServer.available():
        unavailable("redis-server is not installed")
    redis = RedisServer().start()
    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    bound = 0.2
    common: dict[str, Any] = {"redis_timeout": bound, "breaker": {"failures": 2, "cooloff": 0.5},
                              "wait_timeout": 5}
    models = {"m": sessions_of(three_sessions, [1, 2, 3], 2)}
    local_cfg = write_config(tmp_path / "local.yaml", gateway_section(models, **common),
                             db_url=db, redis_url=redis.url)
    reject_cfg = write_config(
        tmp_path / "reject.yaml",
        gateway_section(models, on_redis_failure="reject", **common),
        db_url=db, redis_url=redis.url)
    local, reject = GatewayProcess(local_cfg, "local").start(), None
    try:
        reject = GatewayProcess(reject_cfg, "reject").start()
        assert capacity(local)["mode"] == "redis"
        assert [r.status_code for r in asyncio.run(burst([local.url], key, 6))] == [200] * 6
        redis.stop()
        t = time.monotonic()
        during = asyncio.run(timed_burst(local.url, key, 12))
        # no request blocks on Redis: answer time 0.15 s + a few bounded Redis timeouts
        assert all(code == 200 and took < 0.15 + 4 * bound + 1.0 for code, took in during), during
        snap = capacity(local)
        assert snap["mode"] == "degraded-local" and snap["redis_reachable"] is False
        refused = asyncio.run(timed_burst(reject.url, key, 4))
        assert all(code == 503 and took < 4 * bound + 1.0 for code, took in refused), refused
        assert capacity(reject)["mode"] == "degraded-reject"
        assert time.monotonic() - t < 10
        redis.start()
        deadline = time.monotonic() + 15
        while True:  # back in Redis mode on both, and serving through it
            probe = asyncio.run(timed_burst(local.url, key, 2)) + asyncio.run(
                timed_burst(reject.url, key, 2))
            modes = {capacity(local)["mode"], capacity(reject)["mode"]}
            if modes == {"redis"} and all(code == 200 for code, _ in probe):
                break
            assert time.monotonic() < deadline, f"did not return to Redis mode: {modes} {probe}"
            time.sleep(0.2)
        metrics = httpx.get(local.url + "/metrics").text
        assert "corlens_gateway_redis_breaker_state" in metrics
    finally:
        local.stop()
        if reject is not None:
            reject.stop()
        redis.stop()


async def timed_burst(url: str, key: str, n: int) -> list[tuple[int, float]]:
    async with httpx.AsyncClient(headers=bearer(key), timeout=30) as c:

        async def one() -> tuple[int, float]:
            t = time.monotonic()
            r = await c.post(url + "/v1/completions", json=OK)
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) >= 1
            return r.status_code, time.monotonic() - t

        return list(await asyncio.gather(*(one() for _ in range(n))))
