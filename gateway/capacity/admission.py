"""Admission, shared by every backend: try now, else wait in line, then queue, then reject.

A backend (memory, Redis) supplies four primitives over its own storage: ``_attempt`` (take a
slot if it is this request's turn, else join or stay in the model's line), ``_promote`` (move
from the wait window into the bounded queue), ``_leave`` (drop out of the line) and
``_abandon`` (free a lease whose grant a cancelled request may never have seen). This module
owns the timing: the wait window, the queue timeout, who wakes when, and the rejections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.capacity.base import CapacityExceeded, GatewayError, Lease, SessionSlot
from gateway.capacity.decide import retry_after
from gateway.capacity.line import LocalLine, Waiter


@dataclass(frozen=True)
class CapacityConfig:
    """Admission and health settings (seconds), the same for every backend."""

    lease_ttl: float
    wait_timeout: float
    queue_max_depth: int
    queue_timeout: float
    failure_threshold: int = 3
    cooldown_seconds: float = 30.0


class BackendDown(GatewayError):
    """The shared store cannot be reached; the resilient tracker falls back or rejects."""


@dataclass(frozen=True)
class Admitted:
    session: SessionSlot


@dataclass(frozen=True)
class Waiting:
    """Not admitted; ``seq`` is the request's place in the line, ``hint`` seconds until a lease
    or cooldown runs out (worth a look then), ``excluded_only`` when slots are free but only in
    sessions this request excludes, so the one behind it should try."""

    seq: int
    hint: float | None
    excluded_only: bool


@dataclass(frozen=True)
class Unavailable:
    """No session of the pool can take this request at all; ``cooldown_left`` until one may."""

    cooldown_left: float | None


Attempt = Admitted | Waiting | Unavailable
Pools = Mapping[str, Sequence[SessionSlot]]

REASONS = ("queue_full", "queue_timeout", "no_sessions", "redis_unavailable")
# Every counter exists from the start, so a metrics scrape sees zeros instead of gaps.
COUNTERS = ("waits", "rejections", "renewals", "expiries", "redis_errors",
            *(f"rejections.{r}" for r in REASONS))


def new_counters() -> Counter[str]:
    return Counter(dict.fromkeys(COUNTERS, 0))


class LineTracker(ABC):
    """The :class:`~gateway.capacity.base.CapacityTracker` admission loop over a backend."""

    # Seconds between attempts of the front waiter when no wake-up came: a safety net for
    # notifications a backend can lose (None: the backend never loses one).
    safety_wake: float | None = None

    def __init__(self, pools: Pools, config: CapacityConfig, *, lease_prefix: str = "",
                 counters: Counter[str] | None = None) -> None:
        self.config = config
        self.counters: Counter[str] = new_counters() if counters is None else counters
        self._pools: dict[str, list[SessionSlot]] = {m: list(p) for m, p in pools.items()}
        self._lines: dict[str, LocalLine] = {}
        self._lease_prefix = lease_prefix

    def update_pools(self, pools: Pools) -> None:
        """Replace the pools (sessions added or removed at run time); leases already granted
        stay valid until released. Waiters look again at the new pools."""
        self._pools = {m: list(p) for m, p in pools.items()}
        for line in self._lines.values():
            line.wake_all()

    def pool(self, model: str) -> list[SessionSlot]:
        return self._pools.get(model, [])

    def owns(self, lease: Lease) -> bool:
        """Whether this tracker issued ``lease`` (by its lease-id prefix)."""
        return lease.lease_id.startswith(self._lease_prefix)

    def _line(self, model: str) -> LocalLine:
        return self._lines.setdefault(model, LocalLine())

    def _wake(self, model: str) -> None:
        line = self._lines.get(model)
        if line is not None:
            line.wake_front()

    def _wake_all(self) -> None:
        for line in self._lines.values():
            line.wake_all()

    async def acquire(self, model: str, *, exclude: frozenset[str] = frozenset()) -> Lease:
        start = time.monotonic()
        wait_deadline = start + self.config.wait_timeout
        return await self.admit(model, exclude, started=start, wait_deadline=wait_deadline,
                                queue_deadline=wait_deadline + self.config.queue_timeout)

    async def admit(self, model: str, exclude: frozenset[str], *, started: float,
                    wait_deadline: float, queue_deadline: float) -> Lease:
        """:meth:`acquire` with explicit monotonic deadlines (a fallback inherits the rest of
        a request's budget)."""
        lease_id = self._lease_prefix + os.urandom(16).hex()  # as uuid4().hex, cheaper
        outcome = await self._attempt_once(model, lease_id, exclude, None)
        if isinstance(outcome, Admitted):
            return self._lease(lease_id, outcome.session, started)
        if isinstance(outcome, Unavailable):
            raise self.reject(model, "no_sessions", cooldown_left=outcome.cooldown_left)
        waiter = Waiter(outcome.seq, exclude)
        line = self._line(model)
        line.add(waiter)
        self.counters["waits"] += 1
        admitted = False
        try:
            while True:
                if outcome.excluded_only:
                    line.wake_after(waiter)
                now = time.monotonic()
                if not waiter.queued and now >= wait_deadline:
                    if not await self._promote(model, waiter):
                        raise self.reject(model, "queue_full")
                    waiter.queued = True
                if now >= queue_deadline:
                    raise self.reject(model, "queue_timeout")
                timeout = (queue_deadline if waiter.queued else wait_deadline) - now
                if line.is_front(waiter):
                    for bound in (outcome.hint, self.safety_wake):
                        if bound is not None:
                            timeout = min(timeout, bound)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, timeout)):
                        await waiter.event.wait()
                waiter.event.clear()
                attempt = await self._attempt_once(model, lease_id, exclude, waiter)
                if isinstance(attempt, Admitted):
                    admitted = True
                    return self._lease(lease_id, attempt.session, started)
                if isinstance(attempt, Unavailable):
                    raise self.reject(model, "no_sessions", cooldown_left=attempt.cooldown_left)
                outcome = attempt
        finally:
            was_front = line.is_front(waiter)
            if admitted:
                line.wake_after(waiter)
            line.remove(waiter)
            if admitted or was_front:
                line.wake_front()
            if not admitted:
                await self._leave(model, waiter)

    async def _attempt_once(self, model: str, lease_id: str, exclude: frozenset[str],
                            waiter: Waiter | None) -> Attempt:
        try:
            return await self._attempt(model, lease_id, exclude, waiter)
        except asyncio.CancelledError:
            # The grant may have happened without this request ever seeing it.
            await self._abandon(model, lease_id)
            raise

    def _lease(self, lease_id: str, session: SessionSlot, started: float) -> Lease:
        return Lease(lease_id, session, time.time(), time.monotonic() - started)

    def reject(self, model: str, reason: str, *, cooldown_left: float | None = None,
                breaker_left: float | None = None) -> CapacityExceeded:
        """Count a rejection and build the error to raise (with its Retry-After)."""
        self.counters["rejections"] += 1
        self.counters[f"rejections.{reason}"] += 1
        return CapacityExceeded(model, retry_after(
            reason, wait_timeout=self.config.wait_timeout,
            queue_timeout=self.config.queue_timeout, cooldown_left=cooldown_left,
            breaker_left=breaker_left), reason)

    @abstractmethod
    async def _attempt(self, model: str, lease_id: str, exclude: frozenset[str],
                       waiter: Waiter | None) -> Attempt:
        """Take a slot for ``lease_id`` if it is this request's turn; else a new arrival
        (``waiter`` None) joins the line and gets its ``seq``."""

    @abstractmethod
    async def _promote(self, model: str, waiter: Waiter) -> bool:
        """Take a place in the bounded queue; False when it is full (the waiter then leaves)."""

    @abstractmethod
    async def _leave(self, model: str, waiter: Waiter) -> None:
        """Drop out of the line; best effort, never raises."""

    @abstractmethod
    async def _abandon(self, model: str, lease_id: str) -> None:
        """Free ``lease_id`` wherever it may have been granted; best effort, never raises."""
