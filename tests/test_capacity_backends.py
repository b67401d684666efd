"""One capacity suite over every backend (memory and Redis), as `limits` runs one suite over all
its storages. Redis tests use the real server (fixture ``redis_url``) under a unique key prefix,
with ``on_redis_failure="reject"`` so that a Redis fault fails the test instead of hiding behind
the local fallback."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis

from gateway.capacity.base import CapacityExceeded, Lease, PoolTracker, SessionSlot
from gateway.capacity.factory import make_tracker

Build = Callable[..., PoolTracker]


def slots(n: int, limit: int, model: str = "m", prefix: str = "s") -> list[SessionSlot]:
    return [SessionSlot(f"{prefix}{i}", model, "http://127.0.0.1:1", i, "local", limit,
                        f"r{i}") for i in range(n)]


def drop_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(params=["memory", "redis"])
def build(request: pytest.FixtureRequest) -> Iterator[Build]:
    """A tracker factory for the backend under test; Redis keys are dropped afterwards."""
    url = str(request.getfixturevalue("redis_url")) if request.param == "redis" else None
    prefix = f"corlens:test:{uuid.uuid4().hex[:12]}:"

    def make(pools: dict[str, list[SessionSlot]], **overrides: Any) -> PoolTracker:
        settings: dict[str, Any] = {
            "lease_ttl": 10.0, "wait_timeout": 2.0, "queue_max_depth": 10,
            "queue_timeout": 2.0, "on_redis_failure": "reject",
            "redis_timeout": 1.0}  # generous: this suite is about admission, not outages
        settings.update(overrides)
        return make_tracker(pools, redis_url=url, key_prefix=prefix, **settings)

    yield make
    if url is not None:
        drop_keys(url, prefix)


def run(tracker: PoolTracker, scenario: Callable[[PoolTracker], Awaitable[None]]) -> None:
    """Run ``scenario`` on a fresh loop, check the backend stayed healthy, close the tracker."""

    async def main() -> None:
        try:
            await scenario(tracker)
            snap = await tracker.snapshot()
            assert snap.mode in {"memory", "redis"}, snap
        finally:
            await tracker.aclose()

    asyncio.run(main())


async def rejected(call: Awaitable[Lease]) -> CapacityExceeded:
    with pytest.raises(CapacityExceeded) as info:
        await call
    return info.value


def test_burst_never_exceeds_limits(build: Build) -> None:
    tracker = build({"m": slots(3, limit=2)}, wait_timeout=5.0, queue_max_depth=100,
                    queue_timeout=5.0)
    live: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    async def one() -> None:
        lease = await tracker.acquire("m")
        key = lease.session.key
        live[key] += 1
        peak[key] = max(peak[key], live[key])
        await asyncio.sleep(random.uniform(0.002, 0.015))
        live[key] -= 1
        await tracker.release(lease)

    async def scenario(t: PoolTracker) -> None:
        await asyncio.gather(*(one() for _ in range(60)))
        snap = await t.snapshot()
        assert [s.inflight for s in snap.sessions] == [0, 0, 0]
        assert snap.counters["waits"] > 0

    run(tracker, scenario)
    assert dict(peak) == {"s0": 2, "s1": 2, "s2": 2}


def test_round_robin_spread_within_ten_percent(build: Build) -> None:
    tracker = build({"m": slots(3, limit=5)})
    counts: Counter[str] = Counter()

    async def worker() -> None:
        for _ in range(15):
            lease = await tracker.acquire("m")
            counts[lease.session.key] += 1
            await asyncio.sleep(random.uniform(0.0, 0.004))
            await tracker.release(lease)

    async def scenario(_: PoolTracker) -> None:
        await asyncio.gather(*(worker() for _ in range(12)))

    run(tracker, scenario)
    mean = sum(counts.values()) / 3
    assert all(abs(c - mean) <= 0.1 * mean for c in counts.values()), counts


def test_release_wakes_a_waiter_at_once(build: Build) -> None:
    tracker = build({"m": slots(1, limit=1)}, wait_timeout=5.0)

    async def scenario(t: PoolTracker) -> None:
        held = await t.acquire("m")

        async def waiter() -> tuple[float, Lease]:
            lease = await t.acquire("m")
            return time.monotonic(), lease

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.3)
        released_at = time.monotonic()
        await t.release(held)
        admitted_at, lease = await task
        # Woken by the release (the Redis safety net would look only after 1 s).
        assert admitted_at - released_at < 0.1
        assert lease.waited >= 0.25
        await t.release(lease)

    run(tracker, scenario)


def test_queue_bound_fifo_and_rejection(build: Build) -> None:
    tracker = build({"m": slots(1, limit=1)}, wait_timeout=0.05, queue_max_depth=3,
                    queue_timeout=5.0)
    order: list[int] = []

    async def client(t: PoolTracker, i: int) -> CapacityExceeded | None:
        await asyncio.sleep(i * 0.03)
        try:
            lease = await t.acquire("m")
        except CapacityExceeded as e:
            return e
        order.append(i)
        await asyncio.sleep(0.01)
        await t.release(lease)
        return None

    async def scenario(t: PoolTracker) -> None:
        held = await t.acquire("m")
        tasks = [asyncio.create_task(client(t, i)) for i in range(5)]
        await asyncio.sleep(0.4)  # every client is past its wait window: 3 queued, 2 refused
        snap = await t.snapshot()
        assert (snap.queue_depth["m"], snap.queue_bound) == (3, 3)
        await t.release(held)
        results = await asyncio.gather(*tasks)
        assert order == [0, 1, 2]
        assert results[:3] == [None, None, None]
        for e in results[3:]:
            assert e is not None and e.reason == "queue_full" and e.retry_after > 0
        snap = await t.snapshot()
        assert snap.counters["rejections.queue_full"] == 2
        assert snap.queue_depth["m"] == 0

    run(tracker, scenario)


def test_newcomer_does_not_overtake_a_waiter(build: Build) -> None:
    tracker = build({"m": slots(1, limit=1)}, wait_timeout=3.0)
    order: list[str] = []

    async def take(t: PoolTracker, name: str) -> None:
        lease = await t.acquire("m")
        order.append(name)
        await asyncio.sleep(0.05)
        await t.release(lease)

    async def scenario(t: PoolTracker) -> None:
        held = await t.acquire("m")
        first = asyncio.create_task(take(t, "waiter"))
        await asyncio.sleep(0.2)
        await t.release(held)
        await take(t, "newcomer")  # arrives while the freed slot is the waiter's
        await first

    run(tracker, scenario)
    assert order == ["waiter", "newcomer"]


def test_queue_timeout(build: Build) -> None:
    tracker = build({"m": slots(1, limit=1)}, wait_timeout=0.1, queue_timeout=0.2)

    async def scenario(t: PoolTracker) -> None:
        await t.acquire("m")
        start = time.monotonic()
        e = await rejected(t.acquire("m"))
        took = time.monotonic() - start
        assert (e.reason, e.model) == ("queue_timeout", "m")
        assert e.retry_after > 0
        assert 0.29 <= took < 0.6

    run(tracker, scenario)


def test_exclude(build: Build) -> None:
    tracker = build({"m": slots(2, limit=2)})

    async def scenario(t: PoolTracker) -> None:
        for _ in range(2):
            lease = await t.acquire("m", exclude=frozenset({"s0"}))
            assert lease.session.key == "s1"
        start = time.monotonic()
        e = await rejected(t.acquire("m", exclude=frozenset({"s0", "s1"})))
        assert e.reason == "no_sessions" and e.retry_after > 0
        assert time.monotonic() - start < 0.1  # waiting cannot help: refused at once

    run(tracker, scenario)


def test_cooldown_after_failures_then_recovery(build: Build) -> None:
    tracker = build({"m": slots(2, limit=3)}, failure_threshold=2, cooldown_seconds=0.5)

    async def scenario(t: PoolTracker) -> None:
        await t.report("s0", False)
        lease = await t.acquire("m")
        assert lease.session.key == "s0"  # one failure is not enough
        await t.release(lease)
        await t.report("s0", False)
        snap = await t.snapshot()
        s0 = next(s for s in snap.sessions if s.key == "s0")
        assert s0.cooldown_until is not None and s0.consecutive_failures == 2
        leases = [await t.acquire("m") for _ in range(3)]
        assert {x.session.key for x in leases} == {"s1"}
        e = await rejected(t.acquire("m", exclude=frozenset({"s1"})))
        assert e.reason == "no_sessions" and e.retry_after >= 1
        await asyncio.sleep(0.6)
        lease = await t.acquire("m")
        assert lease.session.key == "s0"  # the cooldown ended
        await t.report("s0", True)
        snap = await t.snapshot()
        s0 = next(s for s in snap.sessions if s.key == "s0")
        assert (s0.cooldown_until, s0.consecutive_failures) == (None, 0)

    run(tracker, scenario)


def test_drain_and_undrain(build: Build) -> None:
    tracker = build({"m": slots(2, limit=1)}, wait_timeout=3.0)

    async def scenario(t: PoolTracker) -> None:
        await t.set_drained("s0", True)
        held = await t.acquire("m")
        assert held.session.key == "s1"
        waiter = asyncio.create_task(t.acquire("m"))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        snap = await t.snapshot()
        assert [s.drained for s in snap.sessions] == [True, False]
        undrained_at = time.monotonic()
        await t.set_drained("s0", False)
        lease = await waiter
        assert lease.session.key == "s0"
        assert time.monotonic() - undrained_at < 0.1  # woken by the undrain

    run(tracker, scenario)


def test_pool_update_admits_a_waiter(build: Build) -> None:
    two = slots(2, limit=1)
    tracker = build({"m": two[:1]}, wait_timeout=3.0)

    async def scenario(t: PoolTracker) -> None:
        await t.acquire("m")
        waiter = asyncio.create_task(t.acquire("m"))
        await asyncio.sleep(0.2)
        t.update_pools({"m": two})
        lease = await asyncio.wait_for(waiter, 0.5)
        assert lease.session.key == "s1"
        e = await rejected(t.acquire("other"))
        assert e.reason == "no_sessions"

    run(tracker, scenario)


def test_snapshot_lists_sessions_and_settings(build: Build) -> None:
    pools = {"a": slots(2, limit=2, model="a"), "b": slots(1, limit=1, model="b", prefix="t")}
    tracker = build(pools, lease_ttl=7.0, wait_timeout=1.5, queue_max_depth=4)

    async def scenario(t: PoolTracker) -> None:
        await t.acquire("a")
        snap = await t.snapshot()
        assert (snap.lease_ttl, snap.wait_timeout, snap.queue_bound) == (7.0, 1.5, 4)
        assert [(s.model, s.key, s.label, s.inflight, s.limit) for s in snap.sessions] == [
            ("a", "s0", "r0", 1, 2), ("a", "s1", "r1", 0, 2), ("b", "t0", "r0", 0, 1)]
        assert snap.queue_depth == {"a": 0, "b": 0}

    run(tracker, scenario)
