"""Holding leases: acquire with one retry on another session, renew while alive, release in a
way no cancellation (client disconnect, shutdown) can skip.

One background task renews every live lease each ``renew_interval`` (a third of the TTL), so a
replica serving a thousand streams runs one loop, not a thousand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from redis.exceptions import RedisError

from gateway.background import stop
from gateway.capacity.base import (
    CapacityExceeded,
    CapacityTracker,
    GatewayError,
    Lease,
    SessionSlot,
)
from gateway.errors import UpstreamError
from gateway.metrics import Metrics

log = logging.getLogger("corlens.gateway")
T = TypeVar("T")
# A release that has not finished by then is left to the lease TTL (the tracker is down).
RELEASE_BOUND_S = 5.0
TrackerFailure = (GatewayError, RedisError, OSError, TimeoutError)


class LeaseKeeper:
    def __init__(self, tracker: CapacityTracker, renew_interval: float, metrics: Metrics) -> None:
        self.tracker = tracker
        self.renew_interval = renew_interval
        self.metrics = metrics
        self.live: dict[str, Lease] = {}
        self._failing: set[str] = set()  # sessions this replica reported a failure for
        self._task: asyncio.Task[None] | None = None
        self._releasing: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._renew_loop(), name="gateway-lease-renewal")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop(task)
        if self._releasing:
            await asyncio.gather(*self._releasing)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.renew_interval)
            leases = list(self.live.values())
            if not leases:
                continue
            results = await asyncio.gather(
                *(self.tracker.renew(lease) for lease in leases), return_exceptions=True
            )
            failed = sum(1 for r in results if isinstance(r, BaseException))
            self.metrics.inc("corlens_gateway_lease_renewals_total",
                             "Lease renewals sent by this replica.", len(leases) - failed)
            if failed:
                self.metrics.inc("corlens_gateway_lease_renewal_failures_total",
                                 "Lease renewals that failed.", failed)

    async def hold(
        self,
        model: str,
        session_count: int,
        send: Callable[[SessionSlot], Awaitable[T]],
        on_attempt: Callable[[Lease], None],
    ) -> tuple[Lease, T]:
        """Acquire a lease and run ``send`` on its session. A failure before anything reached the
        router (``UpstreamError`` of kind ``connect``) is retried once on another session of a
        pool with more than one. On success the caller owns the lease and must :meth:`release`
        it; on failure it is already released."""
        tried: set[str] = set()
        first: UpstreamError | None = None
        while True:
            try:
                lease = await self.tracker.acquire(model, exclude=frozenset(tried))
            except CapacityExceeded:
                if first is not None:
                    raise first from None  # the retry found no other session: report the cause
                raise
            self.live[lease.lease_id] = lease
            on_attempt(lease)
            key = lease.session.key
            try:
                result = await send(lease.session)
            except UpstreamError as e:
                await self.release(lease)
                if e.unhealthy:
                    await self.report(key, False)
                if e.kind == "connect" and first is None and session_count > 1:
                    first = e
                    tried.add(key)
                    continue
                raise
            except BaseException:
                await self.release(lease)
                raise
            if key in self._failing:
                await self.report(key, True)
            return lease, result

    def release_soon(self, lease: Lease) -> None:
        """Release in a task of its own, so the answer does not wait for the tracker (the
        slot is freed a moment after the router finished: still never over the limit)."""
        self.live.pop(lease.lease_id, None)
        task = asyncio.create_task(self._release(lease))  # a task of its own: nothing cancels it
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def release(self, lease: Lease) -> None:
        """Free the lease's slot; shielded from cancellation and bounded in time."""
        self.live.pop(lease.lease_id, None)
        with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_BOUND_S):
            await self._release(lease)

    async def _release(self, lease: Lease) -> None:
        try:
            await self.tracker.release(lease)
        except TrackerFailure as e:
            log.warning("releasing a lease failed (%s); its TTL will free it", type(e).__name__)

    async def report(self, session_key: str, ok: bool) -> None:
        if ok:
            self._failing.discard(session_key)
        else:
            self._failing.add(session_key)
        with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_BOUND_S):
            try:
                await self.tracker.report(session_key, ok)
            except TrackerFailure as e:
                log.warning("health report failed (%s)", type(e).__name__)
