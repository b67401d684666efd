"""Pure capacity decisions: which session takes the next request, and whose turn it is.

No I/O and no clock: every input is passed in. The memory tracker calls these functions directly;
the Redis tracker's Lua script (``lua.ACQUIRE``) walks the pool by the same rules, and a test
proves both agree on the same table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Literal

from gateway.capacity.base import SessionSlot

MIN_RETRY_AFTER = 1.0  # Retry-After is sent in whole seconds; below one second it reads as "now"


@dataclass(frozen=True)
class Pick:
    """Outcome of one walk over a pool.

    ``index`` is the chosen session's position in the pool (None when nothing is free), ``pointer``
    the round-robin pointer to store, ``reason`` why nothing was chosen: ``full`` (a usable session
    exists but is at its limit: wait) or ``unavailable`` (every session is excluded, drained, in
    cooldown or has no capacity at all: waiting for a release cannot help).
    """

    index: int | None
    pointer: int
    reason: Literal["ok", "full", "unavailable"]


def eligible(
    slot: SessionSlot, *, now: float, cooldown_until: Mapping[str, float],
    drained: AbstractSet[str],
) -> bool:
    """A session may take requests at all: limit above zero, not drained, not cooling down."""
    return (slot.max_inflight > 0 and slot.key not in drained
            and cooldown_until.get(slot.key, 0.0) <= now)


def pick(
    pool: Sequence[SessionSlot], inflight: Mapping[str, int], *, now: float,
    cooldown_until: Mapping[str, float], drained: AbstractSet[str],
    exclude: AbstractSet[str], pointer: int,
) -> Pick:
    """Round-robin from ``pointer``: the first eligible, non-excluded session below its limit.

    The new pointer is the position after the chosen session, so equal sessions take turns:

    >>> a, b = (SessionSlot(k, "m", "u", 1, "c", 2, k) for k in "ab")
    >>> pick([a, b], {"a": 0, "b": 0}, now=0, cooldown_until={}, drained=set(),
    ...      exclude=set(), pointer=1)
    Pick(index=1, pointer=0, reason='ok')
    """
    n = len(pool)
    usable = False
    for step in range(n):
        idx = (pointer + step) % n
        slot = pool[idx]
        if slot.key in exclude or not eligible(
                slot, now=now, cooldown_until=cooldown_until, drained=drained):
            continue
        usable = True
        if inflight.get(slot.key, 0) < slot.max_inflight:
            return Pick(idx, (idx + 1) % n, "ok")
    return Pick(None, pointer % n if n else 0, "full" if usable else "unavailable")


def free_slots(
    pool: Sequence[SessionSlot], inflight: Mapping[str, int], *, now: float,
    cooldown_until: Mapping[str, float], drained: AbstractSet[str],
) -> dict[str, int]:
    """Free slots per eligible session that has any (exclusions are per request, not here)."""
    free: dict[str, int] = {}
    for slot in pool:
        if eligible(slot, now=now, cooldown_until=cooldown_until, drained=drained):
            left = slot.max_inflight - inflight.get(slot.key, 0)
            if left > 0:
                free[slot.key] = left
    return free


def my_turn(position: int, free: Mapping[str, int],
            ahead_excludes: Iterable[AbstractSet[str]]) -> bool:
    """FIFO fairness: the request ``position`` places back in its model's line may take a slot
    when fewer requests ahead of it than there are free slots could use one. A request ahead
    whose exclude set covers every free session cannot, so it does not hold the line.

    >>> my_turn(0, {"a": 1}, []), my_turn(1, {"a": 1}, []), my_turn(1, {"a": 1}, [{"a"}])
    (True, False, True)
    """
    total = sum(free.values())
    if total <= 0:
        return False
    keys = set(free)
    blockers = position - sum(1 for ex in ahead_excludes if keys <= ex)
    return blockers < total


def retry_after(
    reason: str, *, wait_timeout: float, queue_timeout: float, cooldown_left: float | None = None,
    breaker_left: float | None = None,
) -> float:
    """Seconds a rejected client should wait, never below :data:`MIN_RETRY_AFTER`.

    ``queue_full``/``queue_timeout``: the queue turns over within one queue timeout (the wait
    window when there is no queue); ``no_sessions``: until the first cooldown ends, if any;
    ``redis_unavailable``: until the breaker probes Redis again.
    """
    if reason == "no_sessions" and cooldown_left is not None:
        value = cooldown_left
    elif reason == "redis_unavailable" and breaker_left is not None:
        value = breaker_left
    elif reason in {"queue_full", "queue_timeout"}:
        value = queue_timeout if queue_timeout > 0 else wait_timeout
    else:
        value = MIN_RETRY_AFTER
    return float(max(MIN_RETRY_AFTER, math.ceil(value)))
