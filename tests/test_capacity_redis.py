"""Redis capacity across processes: the Lua walk agrees with the pure core, two replicas (real
processes) never push a session past its limit and share one fair queue, and a replica killed
with SIGKILL gives its leases and its place in line back by TTL.

Replicas are this module run as a script (``python -m tests.test_capacity_redis SPEC``)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from gateway.capacity.admission import Admitted, Unavailable
from gateway.capacity.base import CapacityExceeded, PoolTracker, SessionSlot
from gateway.capacity.factory import make_tracker
from gateway.capacity.redis_core import SAFETY_WAKE, TICKET_TTL
from gateway.capacity.redis_tracker import RedisTracker
from tests.test_capacity_decide import PICK_TABLE, pool_of

ROOT = Path(__file__).resolve().parent.parent

# Holders count themselves in Redis while they hold a lease: INCR, and keep the highest value.
PEAK = """
local v = redis.call('INCR', KEYS[1])
if v > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], v) end
return v
"""


def tracker_for(spec: dict[str, Any]) -> PoolTracker:
    pools = {m: [SessionSlot(k, m, "http://127.0.0.1:1", i, "local", lim, k)
                 for i, (k, lim) in enumerate(sessions)]
             for m, sessions in spec["pools"].items()}
    return make_tracker(
        pools, redis_url=spec["url"], key_prefix=spec["prefix"],
        lease_ttl=spec.get("lease_ttl", 10.0), wait_timeout=spec.get("wait_timeout", 5.0),
        queue_max_depth=spec.get("queue_max_depth", 100),
        queue_timeout=spec.get("queue_timeout", 5.0), on_redis_failure="reject",
        redis_timeout=1.0)


# -- the replica process -------------------------------------------------------------------

def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def role_burst(t: PoolTracker, r: aredis.Redis, spec: dict[str, Any]) -> None:
    prefix, counts = spec["prefix"], Counter[str]()
    peak = r.register_script(PEAK)

    async def worker() -> None:
        for _ in range(spec["rounds"]):
            lease = await t.acquire("m")
            key = lease.session.key
            counts[key] += 1
            await peak(keys=[f"{prefix}t:holders:{key}", f"{prefix}t:peak:{key}"])
            await asyncio.sleep(0.005)
            await r.decr(f"{prefix}t:holders:{key}")
            await t.release(lease)

    await asyncio.gather(*(worker() for _ in range(spec["workers"])))
    say(json.dumps(counts))


async def role_fair(t: PoolTracker, r: aredis.Redis, spec: dict[str, Any]) -> None:
    await t.snapshot()  # connected and subscribed before the clock starts
    say("ready")
    start_at = float(await asyncio.to_thread(sys.stdin.readline))

    async def client(name: str, offset: float) -> None:
        await asyncio.sleep(start_at + offset - time.time())
        lease = await t.acquire("m")
        await r.rpush(f"{spec['prefix']}t:order", name)
        await asyncio.sleep(0.05)
        await t.release(lease)

    await asyncio.gather(*(client(f"{spec['name']}{i}", off)
                           for i, off in enumerate(spec["offsets"])))
    say("done")


async def role_hold(t: PoolTracker, _: aredis.Redis, spec: dict[str, Any]) -> None:
    leases = [await t.acquire("m") for _ in range(spec["count"])]
    say("held")
    while True:  # renewing until killed
        await asyncio.sleep(spec["lease_ttl"] / 4)
        for lease in leases:
            await t.renew(lease)


async def role_wait(t: PoolTracker, _: aredis.Redis, __: dict[str, Any]) -> None:
    await t.acquire("m")  # waits in line until killed
    say("admitted")


ROLES = {"burst": role_burst, "fair": role_fair, "hold": role_hold, "wait": role_wait}


async def replica(spec: dict[str, Any]) -> None:
    tracker = tracker_for(spec)
    client = aredis.Redis.from_url(spec["url"], decode_responses=True)
    try:
        await ROLES[spec["role"]](tracker, client, spec)
    finally:
        await tracker.aclose()
        await client.aclose()


# -- the tests -----------------------------------------------------------------------------

@pytest.fixture
def space(redis_url: str) -> Iterator[tuple[str, str]]:
    """(Redis URL, unique key prefix); the prefix's keys are dropped afterwards."""
    prefix = f"corlens:test:{uuid.uuid4().hex[:12]}:"
    yield redis_url, prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def spawn(spec: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.test_capacity_redis", json.dumps(spec)], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def expect_line(proc: subprocess.Popen[str], want: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != want:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"replica said {line!r}, wanted {want!r}; stderr:\n{err}")


def reap(proc: subprocess.Popen[str]) -> None:
    """SIGKILL (no cleanup of any kind runs in the replica) and collect it."""
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


@pytest.mark.parametrize(
    ("limits", "inflight", "cooldown", "drained", "exclude", "pointer", "want"),
    [row[1:] for row in PICK_TABLE], ids=[row[0] for row in PICK_TABLE])
def test_lua_walk_agrees_with_pure_pick(
        space: tuple[str, str], limits: tuple[int, ...], inflight: dict[str, int],
        cooldown: dict[str, float], drained: set[str], exclude: set[str], pointer: int,
        want: tuple[int | None, int, str]) -> None:
    url, prefix = space
    pool = pool_of(*limits)
    sync = redis.Redis.from_url(url, decode_responses=True)
    try:
        sec, usec = sync.time()
        now_ms = sec * 1000 + usec // 1000  # the table's "now" is 5.0 s
        for key, n in inflight.items():
            sync.zadd(f"{prefix}lease:{key}", {f"x{i}": now_ms + 60_000 for i in range(n)})
        for key, until in cooldown.items():
            sync.hset(f"{prefix}cooldown", key, now_ms + round((until - 5.0) * 1000))
        if drained:
            sync.sadd(f"{prefix}drained", *drained)
        sync.set(f"{prefix}rr:m", pointer)
    finally:
        sync.close()

    async def scenario() -> tuple[int | None, int, str]:
        tracker = make_tracker({"m": pool}, redis_url=url, key_prefix=prefix, lease_ttl=5,
                               wait_timeout=0, queue_max_depth=0, queue_timeout=0,
                               on_redis_failure="reject")
        assert isinstance(tracker, RedisTracker)
        try:
            got = await tracker.shared._attempt("m", "lease", frozenset(exclude), None)
            ptr = int(await tracker.link.client.get(f"{prefix}rr:m") or 0)
        finally:
            await tracker.aclose()
        if isinstance(got, Admitted):
            return pool.index(got.session), ptr, "ok"
        return None, ptr % len(pool) if pool else 0, (
            "unavailable" if isinstance(got, Unavailable) else "full")

    assert asyncio.run(scenario()) == want


def test_two_replicas_never_exceed_a_session_limit(space: tuple[str, str]) -> None:
    url, prefix = space
    spec = {"url": url, "prefix": prefix, "role": "burst", "workers": 12, "rounds": 12,
            "pools": {"m": [["s0", 3], ["s1", 3], ["s2", 3]]}}
    procs = [spawn(spec), spawn(spec)]  # 24 workers against 9 slots
    totals: Counter[str] = Counter()
    for proc in procs:
        totals.update(json.loads(finish(proc, timeout=60)))
    sync = redis.Redis.from_url(url, decode_responses=True)
    try:
        peaks = {k: int(sync.get(f"{prefix}t:peak:{k}") or 0) for k in ("s0", "s1", "s2")}
        live = {k: sync.zcard(f"{prefix}lease:{k}") for k in ("s0", "s1", "s2")}
    finally:
        sync.close()
    assert peaks == {"s0": 3, "s1": 3, "s2": 3}  # reached, never passed
    assert live == {"s0": 0, "s1": 0, "s2": 0}
    assert sum(totals.values()) == 2 * 12 * 12
    mean = sum(totals.values()) / 3
    assert all(abs(c - mean) <= 0.1 * mean for c in totals.values()), totals


def test_queue_is_fifo_across_replicas(space: tuple[str, str]) -> None:
    url, prefix = space
    base = {"url": url, "prefix": prefix, "role": "fair", "pools": {"m": [["s0", 1]]},
            "wait_timeout": 0.05, "queue_max_depth": 10, "queue_timeout": 10.0}
    a = spawn({**base, "name": "a", "offsets": [0.0, 0.3]})
    b = spawn({**base, "name": "b", "offsets": [0.15, 0.45]})

    async def hold_then_release() -> None:
        tracker = tracker_for({**base, "role": ""})
        try:
            held = await tracker.acquire("m")
            for proc in (a, b):
                expect_line(proc, "ready")
            start_at = time.time() + 0.3
            for proc in (a, b):
                assert proc.stdin is not None
                proc.stdin.write(f"{start_at}\n")
                proc.stdin.flush()
            await asyncio.sleep(start_at + 0.8 - time.time())  # all four are queued
            snap = await tracker.snapshot()
            assert snap.queue_depth["m"] == 4
            await tracker.release(held)
        finally:
            await tracker.aclose()

    asyncio.run(hold_then_release())
    for proc in (a, b):
        assert finish(proc).strip().endswith("done")
    sync = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert sync.lrange(f"{prefix}t:order", 0, -1) == ["a0", "b0", "a1", "b1"]
    finally:
        sync.close()


def test_sigkill_of_a_holder_frees_capacity_within_ttl(space: tuple[str, str]) -> None:
    url, prefix = space
    ttl = 1.0
    spec = {"url": url, "prefix": prefix, "pools": {"m": [["s0", 2], ["s1", 1]]},
            "lease_ttl": ttl, "wait_timeout": 3.0, "queue_timeout": 0.0}
    holder = spawn({**spec, "role": "hold", "count": 3})
    expect_line(holder, "held")

    async def after_kill() -> float:
        probe = tracker_for({**spec, "wait_timeout": 0.0, "queue_max_depth": 0})
        tracker = tracker_for(spec)
        try:
            with pytest.raises(CapacityExceeded):
                await probe.acquire("m")  # full
            await asyncio.sleep(ttl * 1.2)
            with pytest.raises(CapacityExceeded):
                await probe.acquire("m")  # still full past one TTL: the holder renews
            holder.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            leases = await asyncio.gather(*(tracker.acquire("m") for _ in range(3)))
            assert sorted(x.session.key for x in leases) == ["s0", "s0", "s1"]
            return time.monotonic() - killed_at
        finally:
            await probe.aclose()
            await tracker.aclose()

    try:
        took = asyncio.run(after_kill())
    finally:
        reap(holder)
    assert took <= ttl + 1.0, took


def test_a_dead_replicas_ticket_leaves_the_line(space: tuple[str, str]) -> None:
    url, prefix = space
    spec = {"url": url, "prefix": prefix, "pools": {"m": [["s0", 1]]}, "wait_timeout": 30.0}

    async def scenario() -> float:
        tracker = tracker_for(spec)
        try:
            held = await tracker.acquire("m")
            waiter = spawn({**spec, "role": "wait"})
            line = f"{prefix}line:m"
            deadline = time.monotonic() + 15
            while await tracker.link.client.zcard(line) == 0:
                assert time.monotonic() < deadline, "the replica never joined the line"
                await asyncio.sleep(0.05)
            reap(waiter)
            await tracker.release(held)
            killed_at = time.monotonic()
            lease = await tracker.acquire("m")  # behind the dead ticket until it expires
            took = time.monotonic() - killed_at
            await tracker.release(lease)
            return took
        finally:
            await tracker.aclose()

    took = asyncio.run(scenario())
    assert took <= TICKET_TTL + SAFETY_WAKE + 0.5, took


if __name__ == "__main__":
    asyncio.run(replica(json.loads(sys.argv[1])))
