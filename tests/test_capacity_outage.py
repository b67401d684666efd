"""Redis outages, produced for real on a redis-server this test starts on its own port: killed
(connections refused), paused with SIGSTOP (connections hang: the timeouts must act), restarted
(the breaker's probe must bring the tracker back). No request may block past the Redis bound."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
import redis

from devnet.anvil import free_port
from gateway.capacity.base import CapacityExceeded, Lease, SessionSlot
from gateway.capacity.factory import make_tracker
from gateway.capacity.redis_core import SAFETY_WAKE
from gateway.capacity.redis_tracker import MONITOR_INTERVAL, RedisTracker
from tests.conftest import unavailable

TIMEOUT = 0.25  # the Redis timeout under test
COOLOFF = 1.0  # the breaker's cool-off under test
BOUND = 2 * TIMEOUT + 0.05 + 0.25  # the link's bound, plus scheduling slack on a busy machine


class OwnRedis:
    """A redis-server of this test's own, without persistence, on a free loopback port."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server must be able to die
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        unavailable("redis-server binary not found (apt-get install redis-server)")
    server = OwnRedis(binary)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def tracker_on(server: OwnRedis, on_failure: Literal["local", "reject"]) -> RedisTracker:
    slots = [SessionSlot(f"s{i}", "m", "http://127.0.0.1:1", i, "local", 2, f"r{i}")
             for i in range(2)]
    tracker = make_tracker(
        {"m": slots}, redis_url=server.url, lease_ttl=5.0, wait_timeout=1.0,
        queue_max_depth=5, queue_timeout=1.0, on_redis_failure=on_failure,
        redis_timeout=TIMEOUT, breaker_failures=2, breaker_cooloff=COOLOFF,
        key_prefix="corlens:test:")
    assert isinstance(tracker, RedisTracker)
    return tracker


async def timed(call: Any) -> tuple[float, Any]:
    """(seconds taken, result or the CapacityExceeded raised)."""
    start = time.monotonic()
    try:
        result = await call
    except CapacityExceeded as e:
        result = e
    return time.monotonic() - start, result


async def until_mode(tracker: RedisTracker, mode: str, within: float) -> float:
    start = time.monotonic()
    while (await tracker.snapshot()).mode != mode:
        assert time.monotonic() - start < within, f"still {tracker.mode}, wanted {mode}"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def test_killed_redis_falls_back_to_local_limits_and_comes_back(own_redis: OwnRedis) -> None:
    async def scenario() -> None:
        tracker = tracker_on(own_redis, "local")
        try:
            held = [await tracker.acquire("m") for _ in range(4)]  # the pool is full in Redis
            assert (await tracker.snapshot()).mode == "redis"
            waiter = asyncio.create_task(timed(tracker.acquire("m")))
            await asyncio.sleep(0.2)
            own_redis.kill()  # Redis stops while a request waits for it
            took, lease = await waiter
            assert isinstance(lease, Lease) and lease.lease_id.startswith("local-")
            assert took < 0.2 + SAFETY_WAKE + BOUND  # moved to the fallback, not timed out
            await until_mode(tracker, "degraded-local", within=MONITOR_INTERVAL * 2 + BOUND)
            local = [lease]
            for _ in range(3):  # per-replica limits: the other three local slots
                took, got = await timed(tracker.acquire("m"))
                assert isinstance(got, Lease) and took < BOUND
                local.append(got)
            snap = await tracker.snapshot()
            assert (snap.redis_reachable, snap.breaker) == (False, "open")
            assert sum(s.inflight for s in snap.sessions) == 4
            assert snap.counters["redis_errors"] >= 2
            for x in held + local:  # Redis leases are left to their TTL: no hang
                took, _ = await timed(tracker.release(x))
                assert took < BOUND
            assert sum(s.inflight for s in (await tracker.snapshot()).sessions) == 0
            own_redis.start()  # same port, empty
            back = await until_mode(tracker, "redis", within=COOLOFF + MONITOR_INTERVAL + BOUND)
            assert back <= COOLOFF + MONITOR_INTERVAL + BOUND
            lease = await tracker.acquire("m")
            assert not lease.lease_id.startswith("local-")
            snap = await tracker.snapshot()
            assert (snap.redis_reachable, snap.breaker) == (True, "closed")
            assert snap.redis_ping_ms is not None
            await tracker.release(lease)
        finally:
            await tracker.aclose()

    asyncio.run(scenario())


def test_killed_redis_with_reject_refuses_at_once(own_redis: OwnRedis) -> None:
    async def scenario() -> None:
        tracker = tracker_on(own_redis, "reject")
        try:
            await tracker.release(await tracker.acquire("m"))
            own_redis.kill()
            for _ in range(4):
                took, got = await timed(tracker.acquire("m"))
                assert isinstance(got, CapacityExceeded), got
                assert (got.reason, got.retry_after >= 1) == ("redis_unavailable", True)
                assert took < BOUND
            snap = await tracker.snapshot()
            assert snap.mode == "degraded-reject"
            assert snap.counters["rejections.redis_unavailable"] == 4
            own_redis.start()
            await until_mode(tracker, "redis", within=COOLOFF + MONITOR_INTERVAL + BOUND)
            await tracker.release(await tracker.acquire("m"))
        finally:
            await tracker.aclose()

    asyncio.run(scenario())


def test_hung_redis_times_out_instead_of_blocking(own_redis: OwnRedis) -> None:
    async def scenario() -> None:
        tracker = tracker_on(own_redis, "local")
        try:
            await tracker.release(await tracker.acquire("m"))
            own_redis.pause()  # connections open, nothing answers: only timeouts help
            for _ in range(3):
                took, got = await timed(tracker.acquire("m"))
                assert isinstance(got, Lease), got
                assert took < BOUND
                took, _ = await timed(tracker.release(got))
                assert took < BOUND
            await until_mode(tracker, "degraded-local", within=MONITOR_INTERVAL + BOUND)
            assert (await tracker.snapshot()).counters["redis_errors"] >= 2
            own_redis.resume()
            await until_mode(tracker, "redis", within=COOLOFF + MONITOR_INTERVAL + BOUND)
        finally:
            await tracker.aclose()

    asyncio.run(scenario())


def test_release_lost_to_a_hung_redis_is_sent_again(own_redis: OwnRedis) -> None:
    async def scenario() -> None:
        tracker = tracker_on(own_redis, "local")  # lease TTL 5 s
        try:
            lease = await tracker.acquire("m")
            start = time.monotonic()
            own_redis.pause()
            took, _ = await timed(tracker.release(lease))  # fails, within the bound
            assert took < BOUND
            own_redis.resume()
            while sum(s.inflight for s in (await tracker.snapshot()).sessions) > 0 \
                    or tracker.mode != "redis":
                await asyncio.sleep(0.05)
            assert time.monotonic() - start < 4.0  # freed by the retry, not by the 5 s TTL
        finally:
            await tracker.aclose()

    asyncio.run(scenario())
