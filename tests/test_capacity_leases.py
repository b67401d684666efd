"""Leases on every backend: a TTL frees a crashed holder's slot, renewal keeps a lease, a lost
lease is reported, release is idempotent. Shares the backend fixture of
``test_capacity_backends``."""

from __future__ import annotations

import asyncio
import time

from gateway.capacity.base import PoolTracker
from tests.test_capacity_backends import Build, build, rejected, run, slots

__all__ = ["build"]  # the parametrised backend fixture, used here by name


def test_lease_ttl_frees_a_crashed_holders_slot(build: Build) -> None:
    ttl = 0.5
    tracker = build({"m": slots(1, limit=1)}, lease_ttl=ttl, wait_timeout=3.0)

    async def scenario(t: PoolTracker) -> None:
        await t.acquire("m")  # the holder "crashes": never renews, never releases
        start = time.monotonic()
        lease = await t.acquire("m")
        assert time.monotonic() - start <= ttl + 1.0
        snap = await t.snapshot()
        assert snap.counters["expiries"] >= 1
        await t.release(lease)

    run(tracker, scenario)


def test_renew_keeps_a_lease_and_reports_expiry(build: Build) -> None:
    ttl = 0.4
    tracker = build({"m": slots(1, limit=1)}, lease_ttl=ttl, wait_timeout=0.0,
                    queue_max_depth=0)

    async def scenario(t: PoolTracker) -> None:
        held = await t.acquire("m")
        for _ in range(4):  # 0.8 s in all: twice the TTL
            await asyncio.sleep(0.2)
            await t.renew(held)
        e = await rejected(t.acquire("m"))
        assert e.reason == "queue_full"
        snap = await t.snapshot()
        assert snap.counters["renewals"] == 4
        await asyncio.sleep(ttl + 0.1)
        before = snap.counters.get("expiries", 0)
        await t.renew(held)  # too late: the lease is gone, and that is counted
        snap = await t.snapshot()
        assert snap.counters["expiries"] == before + 1
        lease = await t.acquire("m")
        await t.release(lease)

    run(tracker, scenario)


def test_release_is_idempotent(build: Build) -> None:
    tracker = build({"m": slots(1, limit=1)}, wait_timeout=0.0, queue_max_depth=0)

    async def scenario(t: PoolTracker) -> None:
        lease = await t.acquire("m")
        await t.release(lease)
        await t.release(lease)
        other = await t.acquire("m")
        await t.release(lease)  # a stale release must not free ``other``'s slot
        e = await rejected(t.acquire("m"))
        assert e.reason == "queue_full"
        await t.release(other)

    run(tracker, scenario)
