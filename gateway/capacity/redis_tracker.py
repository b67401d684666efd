"""Capacity shared by every gateway replica through Redis, surviving Redis outages.

:class:`RedisTracker` admits through Redis (:class:`~gateway.capacity.redis_core.RedisLineTracker`)
while the circuit breaker is closed. When Redis errors or times out ``breaker_failures`` times in
a row the breaker opens and, per ``on_redis_failure``, requests are admitted by a per-replica
:class:`~gateway.capacity.memory.MemoryTracker` with the same limits (``degraded-local``) or
rejected at once with reason ``redis_unavailable`` (``degraded-reject``). A monitor task pings
Redis, refreshes this replica's queue tickets, copies cooldown and drain state into the fallback,
and probes Redis after each cool-off; a successful probe returns the tracker to Redis mode.
A Redis lease whose release failed (Redis away) is released again once Redis answers, unless
its TTL has freed it by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Literal

from gateway.capacity.admission import BackendDown, CapacityConfig, Pools, new_counters
from gateway.capacity.base import CapacitySnapshot, Lease, shown_key
from gateway.capacity.breaker import CircuitBreaker
from gateway.capacity.memory import MemoryTracker
from gateway.capacity.redis_core import RedisLineTracker
from gateway.capacity.redis_link import RedisLink, cancel

log = logging.getLogger(__name__)

MONITOR_INTERVAL = 1.0  # seconds between pings and ticket heartbeats (tickets live 4 s)
LOCAL_PREFIX = "local-"  # lease ids granted by the fallback, so their release stays local
MAX_UNRELEASED = 100_000  # failed releases kept for a retry (beyond that, left to their TTL)

Mode = Literal["redis", "degraded-local", "degraded-reject"]


class RedisTracker:
    """A :class:`~gateway.capacity.base.PoolTracker` over Redis with a local fallback.

    Background tasks start on first use (construction needs no running loop); call
    :meth:`aclose` to stop them and close the Redis client.
    """

    def __init__(self, pools: Pools, config: CapacityConfig, *, redis_url: str,
                 on_redis_failure: Literal["local", "reject"], redis_timeout: float = 0.25,
                 key_prefix: str = "corlens:gw:", breaker_failures: int = 3,
                 breaker_cooloff: float = 2.0, lease_prefix: str = "") -> None:
        self.config = config
        self.on_redis_failure = on_redis_failure
        self.counters: Counter[str] = new_counters()
        self.breaker = CircuitBreaker(failures=breaker_failures, cooloff=breaker_cooloff)
        self.local = MemoryTracker(pools, config, lease_prefix=LOCAL_PREFIX + lease_prefix,
                                   counters=self.counters)
        self.link = RedisLink(redis_url, timeout=redis_timeout, breaker=self.breaker,
                              channel=f"{key_prefix}free", counters=self.counters,
                              on_message=self._on_message, on_down=self._on_down)
        self.shared = RedisLineTracker(pools, config, self.link, prefix=key_prefix,
                                       counters=self.counters, lease_prefix=lease_prefix)
        self._monitor: asyncio.Task[None] | None = None
        # lease id -> (lease, monotonic time by which its TTL has freed it anyway)
        self._unreleased: dict[str, tuple[Lease, float]] = {}

    @property
    def mode(self) -> Mode:
        if self.breaker.allows():
            return "redis"
        return "degraded-local" if self.on_redis_failure == "local" else "degraded-reject"

    def _start(self) -> None:
        if self._monitor is None:
            self._monitor = asyncio.get_running_loop().create_task(self._watch())
            self.link.start()

    def _on_message(self, data: str) -> None:
        self.shared.on_message(data)

    def _on_down(self) -> None:
        self.shared.wake_all()  # each waiter sees the open breaker and moves to the fallback

    def update_pools(self, pools: Pools) -> None:
        self.shared.update_pools(pools)
        self.local.update_pools(pools)

    async def acquire(self, model: str, *, exclude: frozenset[str] = frozenset()) -> Lease:
        self._start()
        start = time.monotonic()
        wait_deadline = start + self.config.wait_timeout
        budget = {"started": start, "wait_deadline": wait_deadline,
                  "queue_deadline": wait_deadline + self.config.queue_timeout}
        if self.breaker.allows():
            with contextlib.suppress(BackendDown):
                return await self.shared.admit(model, exclude, **budget)
        if self.on_redis_failure == "reject":
            raise self.local.reject(model, "redis_unavailable",
                                    breaker_left=self.breaker.retry_in() or self.breaker.cooloff)
        return await self.local.admit(model, exclude, **budget)

    async def renew(self, lease: Lease) -> None:
        """Renew in Redis, or locally for a fallback lease; a Redis lease cannot be renewed
        while Redis is away (it expires there by its TTL)."""
        self._start()
        if self.local.owns(lease):
            await self.local.renew(lease)
        elif self.breaker.allows():
            with contextlib.suppress(BackendDown):
                await self.shared.renew(lease)

    async def release(self, lease: Lease) -> None:
        """Never waits for a Redis that is away: the release is kept and sent again when Redis
        answers (see :meth:`_release_again`)."""
        self._start()
        if self.local.owns(lease):
            await self.local.release(lease)
            return
        if self.breaker.allows():
            try:
                await self.shared.release(lease)
                return
            except BackendDown:
                pass
        if len(self._unreleased) < MAX_UNRELEASED:
            # last renewed before now, so expired in Redis by now + TTL at the latest
            until = time.monotonic() + self.config.lease_ttl
            self._unreleased[lease.lease_id] = (lease, until)

    async def _release_again(self) -> None:
        """Send the releases that failed while Redis was away (those whose TTL has not already
        freed their slot)."""
        for lease_id, (lease, until) in list(self._unreleased.items()):
            if until > time.monotonic():
                await self.shared.release(lease)  # BackendDown: the next round tries again
            del self._unreleased[lease_id]

    async def report(self, session_key: str, ok: bool) -> None:
        self._start()
        if self.breaker.allows():
            with contextlib.suppress(BackendDown):
                return await self.shared.report(session_key, ok)
        await self.local.report(session_key, ok)

    async def set_drained(self, session_key: str, drained: bool) -> None:
        """Applied to the fallback at once and to Redis when reachable (a drain changed while
        Redis is away is overwritten by Redis's state when it returns)."""
        self._start()
        await self.local.set_drained(session_key, drained)
        if self.breaker.allows():
            try:
                await self.shared.set_drained(session_key, drained)
            except BackendDown:
                log.warning("drain of %s not stored in Redis (unreachable)",
                            shown_key(session_key))

    async def snapshot(self) -> CapacitySnapshot:
        self._start()
        try:
            if not self.breaker.allows():
                raise BackendDown("Redis circuit is open")
            sessions, queued, waiting = await self.shared.read_snapshot()
        except BackendDown:
            sessions = self.local.sessions()
            queued, waiting = self.local.depths()
        mode = self.mode
        return CapacitySnapshot(
            mode=mode, redis_reachable=bool(self.link.reachable),
            redis_ping_ms=self.link.ping_ms, breaker=self.breaker.state,
            lease_ttl=self.config.lease_ttl, wait_timeout=self.config.wait_timeout,
            queue_bound=self.config.queue_max_depth, queue_depth=queued, waiting=waiting,
            sessions=sessions, counters=dict(self.counters))

    async def _watch(self) -> None:
        """Ping, heartbeat and state sync every :data:`MONITOR_INTERVAL`; probe when half-open."""
        while True:
            if self.breaker.state == "open":
                await asyncio.sleep(self.breaker.retry_in())
                continue
            probing = self.breaker.state == "half-open"
            if await self.link.ping(probe=probing):
                if probing:
                    log.warning("Redis reachable again: back to shared capacity")
                    await self.link.restart_listener()
                with contextlib.suppress(BackendDown):
                    await self._release_again()
                    await self.shared.heartbeat()
                    state = await self.shared.shared_state()
                    self.local.apply_shared_state(state.cooldown, state.failures, state.drained)
            await asyncio.sleep(MONITOR_INTERVAL)

    async def aclose(self) -> None:
        task, self._monitor = self._monitor, None
        await cancel(task)
        self.shared.wake_all()
        await self.local.aclose()
        await self.link.aclose()
