"""This replica's waiting requests for one model, in arrival order, and who to wake.

Only the front waiter wakes when a slot frees; when it is admitted (or leaves) the next one is
woken, so a release costs one attempt per replica, not one per waiting request. In memory mode
this line is the model's whole line; in Redis mode it is this replica's part of the shared line
(ordered by the shared sequence number), and Redis decides whose turn it is.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(eq=False)
class Waiter:
    """One request waiting for a slot: ``seq`` orders it in the line, ``queued`` once its wait
    window has passed and it holds a place in the bounded queue."""

    seq: int
    exclude: frozenset[str]
    queued: bool = False
    event: asyncio.Event = field(default_factory=asyncio.Event)


class LocalLine:
    """Waiters ordered by ``seq`` (insert and remove are O(n) list moves; lines are short)."""

    def __init__(self) -> None:
        self._seqs: list[int] = []
        self._waiters: list[Waiter] = []

    def __len__(self) -> int:
        return len(self._waiters)

    def __iter__(self) -> Iterator[Waiter]:
        return iter(list(self._waiters))

    def add(self, waiter: Waiter) -> None:
        at = bisect.bisect(self._seqs, waiter.seq)
        self._seqs.insert(at, waiter.seq)
        self._waiters.insert(at, waiter)

    def remove(self, waiter: Waiter) -> None:
        at = bisect.bisect_left(self._seqs, waiter.seq)
        if at < len(self._waiters) and self._waiters[at] is waiter:
            del self._seqs[at]
            del self._waiters[at]

    def position(self, seq: int) -> int:
        """How many waiters are ahead of ``seq`` (the line's length for a new arrival)."""
        return bisect.bisect_left(self._seqs, seq)

    def ahead_excludes(self, seq: int | None) -> list[frozenset[str]]:
        """Exclude sets of the waiters ahead of ``seq`` that have one (``None``: all of them)."""
        end = len(self._waiters) if seq is None else self.position(seq)
        return [w.exclude for w in self._waiters[:end] if w.exclude]

    def queued(self) -> int:
        return sum(1 for w in self._waiters if w.queued)

    def is_front(self, waiter: Waiter) -> bool:
        return bool(self._waiters) and self._waiters[0] is waiter

    def wake_front(self) -> None:
        if self._waiters:
            self._waiters[0].event.set()

    def wake_after(self, waiter: Waiter) -> None:
        """Wake the waiter behind ``waiter`` (a free slot it could not use may suit the next)."""
        at = bisect.bisect_right(self._seqs, waiter.seq)
        if at < len(self._waiters):
            self._waiters[at].event.set()

    def wake_all(self) -> None:
        for waiter in self._waiters:
            waiter.event.set()
