"""Admission over Redis: the shared half of :class:`~gateway.capacity.redis_tracker.RedisTracker`.

Each admission decision is one Lua script (:data:`~gateway.capacity.lua.ACQUIRE`); the key layout
is documented in :mod:`gateway.capacity.lua`. Waiters wake on the ``P free`` channel (published
when a slot frees or a ticket leaves); the front waiter of each replica also looks again every
:data:`SAFETY_WAKE` seconds, for a lease that ran out or a replica that died without a word.
Errors surface as :class:`~gateway.capacity.admission.BackendDown`: ``RedisTracker`` decides what
to do about them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from gateway.capacity import lua
from gateway.capacity.admission import (
    Admitted,
    Attempt,
    BackendDown,
    CapacityConfig,
    LineTracker,
    Pools,
    Unavailable,
    Waiting,
)
from gateway.capacity.base import Lease, SessionSlot, SessionState
from gateway.capacity.line import Waiter
from gateway.capacity.redis_link import RedisLink

log = logging.getLogger(__name__)

SAFETY_WAKE = 1.0  # seconds: the front waiter's longest sleep without a notification
TICKET_TTL = 4.0  # seconds a ticket outlives its replica's last heartbeat (heartbeat: 1 s)


@dataclass(frozen=True)
class SharedState:
    """Health and drain state as stored in Redis (epoch seconds)."""

    cooldown: dict[str, float]
    failures: dict[str, int]
    drained: set[str]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisLineTracker(LineTracker):
    """Leases, lines, health and drain state in Redis under ``prefix``."""

    safety_wake = SAFETY_WAKE

    def __init__(self, pools: Pools, config: CapacityConfig, link: RedisLink, *,
                 prefix: str, counters: Counter[str] | None = None,
                 lease_prefix: str = "") -> None:
        super().__init__(pools, config, counters=counters, lease_prefix=lease_prefix)
        self.link = link
        self.prefix = prefix
        self._by_session: dict[str, set[str]] = {}
        self._index()

    def update_pools(self, pools: Pools) -> None:
        super().update_pools(pools)
        self._index()

    def _index(self) -> None:
        self._by_session = {}
        for model, pool in self._pools.items():
            for slot in pool:
                self._by_session.setdefault(slot.key, set()).add(model)

    # -- keys ----------------------------------------------------------------------------

    def lease_key(self, session_key: str) -> str:
        return f"{self.prefix}lease:{session_key}"

    def _line_keys(self, model: str) -> list[str]:
        p = self.prefix
        return [f"{p}line:{model}", f"{p}lexp:{model}", f"{p}queued:{model}", f"{p}lx:{model}"]

    # -- notifications -------------------------------------------------------------------

    def on_message(self, data: str) -> None:
        """A slot freed (``s:<session>``) or a ticket left (``m:<model>``): wake local fronts."""
        kind, _, name = data.partition(":")
        if kind == "s":
            for model in self._by_session.get(name, ()):
                self._wake(model)
        elif kind == "m":
            self._wake(name)
        else:
            for line in self._lines.values():
                line.wake_front()

    def wake_all(self) -> None:
        """Wake every local waiter (the link went down: each goes to the fallback now)."""
        self._wake_all()

    # -- admission primitives ------------------------------------------------------------

    async def _attempt(self, model: str, lease_id: str, exclude: frozenset[str],
                       waiter: Waiter | None) -> Attempt:
        pool = self.pool(model)
        if not pool:
            return Unavailable(None)
        p = self.prefix
        keys = [f"{p}rr:{model}", f"{p}cooldown", f"{p}drained", *self._line_keys(model),
                f"{p}seq", *(self.lease_key(s.key) for s in pool)]
        args: list[str | int | float] = [
            lease_id, _ms(self.config.lease_ttl), _ms(TICKET_TTL),
            "" if waiter is None else waiter.seq,
            "1" if waiter is not None and waiter.queued else "0", "\n".join(sorted(exclude))]
        for slot in pool:
            args += [slot.key, slot.max_inflight, "1" if slot.key in exclude else "0"]
        out = await self.link.run(lua.ACQUIRE, keys, args)
        self.counters["expiries"] += int(out[2])
        if int(out[0]) == 1:
            return Admitted(pool[int(out[1]) - 1])
        if int(out[0]) == -1:
            return Unavailable(int(out[1]) / 1000.0 if int(out[1]) >= 0 else None)
        hint = int(out[3]) / 1000.0 if int(out[3]) >= 0 else None
        return Waiting(int(out[1]), hint, bool(int(out[4])))

    async def _promote(self, model: str, waiter: Waiter) -> bool:
        out = await self.link.run(lua.PROMOTE, self._line_keys(model), [
            waiter.seq, self.config.queue_max_depth, _ms(TICKET_TTL), self.link.channel,
            f"m:{model}"])
        return int(out) == 1

    async def _leave(self, model: str, waiter: Waiter) -> None:
        """Best effort: a ticket left behind expires within :data:`TICKET_TTL`."""
        if not self.link.usable:
            return
        try:
            await self.link.run(lua.LEAVE, self._line_keys(model),
                                [waiter.seq, self.link.channel, f"m:{model}"])
        except BackendDown:
            log.debug("ticket %s of %s left to expire", waiter.seq, model)

    async def _abandon(self, model: str, lease_id: str) -> None:
        pool = self.pool(model)
        if not pool or not self.link.usable:
            return
        try:
            await self._release(lease_id, [s.key for s in pool])
        except BackendDown:
            log.debug("abandoned lease %s left to expire", lease_id)

    async def heartbeat(self) -> None:
        """Refresh the tickets of this replica's waiters, so the line keeps their places."""
        for model, line in list(self._lines.items()):
            seqs = [w.seq for w in line]
            if seqs:
                await self.link.run(lua.HEARTBEAT, [f"{self.prefix}lexp:{model}"],
                                    [_ms(TICKET_TTL), *seqs])

    # -- leases, health, drain -----------------------------------------------------------

    async def renew(self, lease: Lease) -> None:
        key = lease.session.key
        out = int(await self.link.run(lua.RENEW, [self.lease_key(key)], [
            lease.lease_id, _ms(self.config.lease_ttl), self.link.channel, f"s:{key}"]))
        if out == 1:
            self.counters["renewals"] += 1
        elif out == -1:  # 0: released since the renewal round began, nothing to count
            self.counters["expiries"] += 1

    async def release(self, lease: Lease) -> None:
        await self._release(lease.lease_id, [lease.session.key])

    async def _release(self, lease_id: str, sessions: list[str]) -> None:
        models = sorted({m for s in sessions for m in self._by_session.get(s, ())})
        keys = [*(self.lease_key(s) for s in sessions),
                *(f"{self.prefix}line:{m}" for m in models)]
        await self.link.run(lua.RELEASE, keys, [lease_id, self.link.channel, len(sessions),
                                                *(f"s:{s}" for s in sessions)])

    async def report(self, session_key: str, ok: bool) -> None:
        p = self.prefix
        await self.link.run(lua.REPORT, [f"{p}fails", f"{p}cooldown"], [
            session_key, "1" if ok else "0", self.config.failure_threshold,
            _ms(self.config.cooldown_seconds)])

    async def set_drained(self, session_key: str, drained: bool) -> None:
        key = f"{self.prefix}drained"
        client = self.link.client
        if drained:
            await self.link.call(lambda: client.sadd(key, session_key))
        else:
            await self.link.call(lambda: client.srem(key, session_key))
            await self.link.call(lambda: client.publish(self.link.channel, f"s:{session_key}"))

    async def shared_state(self) -> SharedState:
        """Cooldowns, failure counts and drained sessions (the local fallback adopts them)."""
        p, client = self.prefix, self.link.client

        async def read() -> list[object]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hgetall(f"{p}cooldown")
                pipe.hgetall(f"{p}fails")
                pipe.smembers(f"{p}drained")
                return list(await pipe.execute())

        cooldown, fails, drained = await self.link.call(read)
        return SharedState({k: int(v) / 1000.0 for k, v in cooldown.items()},
                           {k: int(v) for k, v in fails.items()}, set(drained))

    async def read_snapshot(self) -> tuple[list[SessionState], dict[str, int], dict[str, int]]:
        """(sessions, queued per model, waiting per model) across every replica."""
        slots: list[tuple[str, SessionSlot]] = [
            (m, s) for m, pool in self._pools.items() for s in pool]
        models = list(self._pools)
        p = self.prefix
        keys = [f"{p}cooldown", f"{p}fails", f"{p}drained",
                *(self.lease_key(s.key) for _, s in slots)]
        for model in models:
            keys += self._line_keys(model)[:3]
        out = await self.link.run(lua.SNAPSHOT, keys,
                                  [len(slots), len(models), *(s.key for _, s in slots)])
        now_ms = int(out[0])
        sessions = []
        for i, (model, s) in enumerate(slots):
            live, cd, fails, drained = (int(x) for x in out[1 + 4 * i: 5 + 4 * i])
            sessions.append(SessionState(
                key=s.key, model=model, label=s.label, inflight=live, limit=s.max_inflight,
                cooldown_until=cd / 1000.0 if cd > now_ms else None,
                consecutive_failures=fails, drained=bool(drained)))
        base = 1 + 4 * len(slots)
        queued = {m: int(out[base + 2 * j]) for j, m in enumerate(models)}
        waiting = {m: int(out[base + 2 * j + 1]) for j, m in enumerate(models)}
        return sessions, queued, waiting
