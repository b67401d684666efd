"""In-process capacity tracking: exact accounting for one gateway replica (plain mode).

Also the per-replica fallback of the Redis tracker when Redis is unreachable. Everything runs on
one event loop and no primitive awaits, so each decision is atomic without a lock.
"""

from __future__ import annotations

import time
from collections import Counter

from gateway.capacity.admission import (
    Admitted,
    Attempt,
    CapacityConfig,
    LineTracker,
    Pools,
    Unavailable,
    Waiting,
)
from gateway.capacity.base import CapacitySnapshot, Lease, SessionSlot, SessionState
from gateway.capacity.decide import free_slots, my_turn, pick
from gateway.capacity.line import Waiter


class MemoryTracker(LineTracker):
    """Leases in a dict per session; a lease not renewed within ``lease_ttl`` expires."""

    def __init__(self, pools: Pools, config: CapacityConfig, *, lease_prefix: str = "",
                 counters: Counter[str] | None = None) -> None:
        super().__init__(pools, config, lease_prefix=lease_prefix, counters=counters)
        self._leases: dict[str, dict[str, float]] = {}  # session key -> lease id -> expiry
        self._pointer: dict[str, int] = {}
        self._cooldown: dict[str, float] = {}  # session key -> epoch seconds
        self._failures: dict[str, int] = {}
        self._drained: set[str] = set()
        self._next_seq = 0

    # -- admission primitives ------------------------------------------------------------

    async def _attempt(self, model: str, lease_id: str, exclude: frozenset[str],
                       waiter: Waiter | None) -> Attempt:
        pool = self.pool(model)
        mono, now = time.monotonic(), time.time()
        inflight = {s.key: self._live(s.key, mono) for s in pool}
        line = self._line(model)
        seq = waiter.seq if waiter is not None else None
        position = len(line) if seq is None else line.position(seq)
        free = free_slots(pool, inflight, now=now, cooldown_until=self._cooldown,
                          drained=self._drained)
        turn = my_turn(position, free, line.ahead_excludes(seq))
        choice = pick(pool, inflight, now=now, cooldown_until=self._cooldown,
                      drained=self._drained, exclude=exclude, pointer=self._pointer.get(model, 0))
        if choice.reason == "unavailable":
            return Unavailable(self._cooldown_left(pool, exclude, now))
        if turn and choice.index is not None:
            slot = pool[choice.index]
            self._pointer[model] = choice.pointer
            self._leases.setdefault(slot.key, {})[lease_id] = mono + self.config.lease_ttl
            return Admitted(slot)
        if seq is None:
            self._next_seq += 1
            seq = self._next_seq
        return Waiting(seq, self._hint(model, mono, now), turn)

    async def _promote(self, model: str, waiter: Waiter) -> bool:
        del waiter  # already in the line; only the bound matters here
        return self._line(model).queued() < self.config.queue_max_depth

    async def _leave(self, model: str, waiter: Waiter) -> None:
        """The local line is the whole line: nothing more to drop."""

    async def _abandon(self, model: str, lease_id: str) -> None:
        """Grants here never await, so a cancelled request never misses one."""

    # -- leases --------------------------------------------------------------------------

    def _live(self, key: str, mono: float) -> int:
        """Live leases of a session, dropping (and counting) those whose TTL ran out."""
        leases = self._leases.get(key)
        if not leases:
            return 0
        expired = [lid for lid, exp in leases.items() if exp <= mono]
        for lid in expired:
            del leases[lid]
        self.counters["expiries"] += len(expired)
        return len(leases)

    def _hint(self, model: str, mono: float, now: float) -> float | None:
        """Seconds until the pool's next lease expiry or cooldown end."""
        times = [exp - mono for s in self.pool(model)
                 for exp in self._leases.get(s.key, {}).values()]
        times += [until - now for s in self.pool(model)
                  if (until := self._cooldown.get(s.key, 0.0)) > now]
        return max(0.0, min(times)) if times else None

    def _cooldown_left(self, pool: list[SessionSlot], exclude: frozenset[str],
                       now: float) -> float | None:
        left = [until - now for s in pool if s.key not in exclude
                and (until := self._cooldown.get(s.key, 0.0)) > now]
        return min(left) if left else None

    def _freed(self, key: str) -> None:
        for model, pool in self._pools.items():
            if any(s.key == key for s in pool):
                self._wake(model)

    async def renew(self, lease: Lease) -> None:
        leases = self._leases.get(lease.session.key, {})
        mono = time.monotonic()
        expiry = leases.get(lease.lease_id)
        if expiry is not None and expiry > mono:
            leases[lease.lease_id] = mono + self.config.lease_ttl
            self.counters["renewals"] += 1
            return
        if expiry is not None:  # None: released since the renewal round began
            del leases[lease.lease_id]
            self._freed(lease.session.key)
            self.counters["expiries"] += 1

    async def release(self, lease: Lease) -> None:
        leases = self._leases.get(lease.session.key, {})
        if leases.pop(lease.lease_id, None) is not None:
            self._freed(lease.session.key)

    # -- health and drain ----------------------------------------------------------------

    async def report(self, session_key: str, ok: bool) -> None:
        """``failure_threshold`` failures in a row start a cooldown; one more failure after it
        ends starts another; a success resets the count."""
        if ok:
            self._failures.pop(session_key, None)
            return
        count = self._failures.get(session_key, 0) + 1
        self._failures[session_key] = count
        now = time.time()
        if count >= self.config.failure_threshold and self._cooldown.get(session_key, 0.0) <= now:
            self._cooldown[session_key] = now + self.config.cooldown_seconds

    async def set_drained(self, session_key: str, drained: bool) -> None:
        if drained:
            self._drained.add(session_key)
        elif session_key in self._drained:
            self._drained.discard(session_key)
            self._freed(session_key)

    def apply_shared_state(self, cooldown: dict[str, float], failures: dict[str, int],
                           drained: set[str]) -> None:
        """Adopt health and drain state read from Redis, so a fallback starts where it was."""
        self._cooldown, self._failures, self._drained = dict(cooldown), dict(failures), set(drained)

    # -- observation ---------------------------------------------------------------------

    def sessions(self) -> list[SessionState]:
        mono, now = time.monotonic(), time.time()
        return [SessionState(
            key=s.key, model=model, label=s.label, inflight=self._live(s.key, mono),
            limit=s.max_inflight,
            cooldown_until=c if (c := self._cooldown.get(s.key, 0.0)) > now else None,
            consecutive_failures=self._failures.get(s.key, 0), drained=s.key in self._drained,
        ) for model, pool in self._pools.items() for s in pool]

    def depths(self) -> tuple[dict[str, int], dict[str, int]]:
        """(queued, waiting in the wait window) per model."""
        queued = {m: self._line(m).queued() for m in self._pools}
        return queued, {m: len(self._line(m)) - queued[m] for m in self._pools}

    async def snapshot(self) -> CapacitySnapshot:
        queued, waiting = self.depths()
        return CapacitySnapshot(
            mode="memory", redis_reachable=None, redis_ping_ms=None, breaker=None,
            lease_ttl=self.config.lease_ttl, wait_timeout=self.config.wait_timeout,
            queue_bound=self.config.queue_max_depth, queue_depth=queued, waiting=waiting,
            sessions=self.sessions(), counters=dict(self.counters))

    async def aclose(self) -> None:
        """Wake every waiter so none sleeps on a closed tracker."""
        self._wake_all()
