"""eth_getLogs range planning.

:class:`LogRangePlanner` (pure, no I/O) decides how many blocks the next ``eth_getLogs`` asks for,
growing while answers are small and shrinking when the provider refuses or times out.
:func:`range_error` (pure) recognises the providers' "range too large" messages. :func:`fetch_logs`
is the thin driver that applies the planner over an :class:`~indexer.rpc.RpcClient`; import it
from :mod:`indexer.rpc`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from indexer.errors import ConfigError, LogsTimeout, RangeTooLarge

if TYPE_CHECKING:  # rpc imports this module; the client is only a parameter type here
    from indexer.rpc import RpcClient

T = TypeVar("T")

# A refused size is not probed again for this many successful chunks in a row: log density
# changes along a chain, so an old refusal should not cap the range forever.
FORGET_REFUSAL_AFTER = 16
# Hold growth once a chunk brings this many logs: providers cap answers at 10,000 logs.
DEFAULT_TARGET_LOGS = 5_000

_RANGE_MESSAGES = re.compile(
    "|".join(
        [
            r"logs matched by query exceeds limit",  # Arbitrum Nitro
            r"query returned more than \d+ results",  # geth, Infura
            r"log response size exceeded",  # Alchemy
            r"response size (is )?(exceeded|too large|larger than|should not exceed)",
            r"block range (is )?too (large|wide|big)",  # QuickNode, Ankr
            r"exceed(s|ed)? (the )?max(imum)? block range",
            r"(?<!rate )limit exceeded",  # not "rate limit exceeded", which is throttling
            r"is limited to an? [\d,]+ ?(block)?s? range",  # QuickNode
        ]
    ),
    re.IGNORECASE,
)
# Alchemy: "... this block range should work: [0x1, 0x7d0]"; Infura: "Try with this block range
# [0x1, 0x2]".
_SUGGESTED_RANGE = re.compile(r"\[\s*(0x[0-9a-f]+)\s*,\s*(0x[0-9a-f]+)\s*\]", re.IGNORECASE)


def range_error(message: str) -> RangeTooLarge | None:
    """The :class:`RangeTooLarge` a provider's error text means, or ``None`` if it is another error.

    >>> range_error("Log response size exceeded. ... should work: [0x10, 0x7d0]").suggested_to
    2000
    >>> range_error("execution reverted") is None
    True
    """
    if not _RANGE_MESSAGES.search(message):
        return None
    found = _SUGGESTED_RANGE.search(message)
    return RangeTooLarge(int(found.group(2), 16) if found else None, message)


class LogRangePlanner:
    """Adaptive number of blocks per ``eth_getLogs``.

    Invariants: ``minimum <= size <= maximum``; ``next_range(start, head)`` returns
    ``(start, to)`` with ``start <= to <= head`` and at most ``size`` blocks. Growth multiplies by
    ``grow`` after a small answer, holds when the answer nears ``target_logs``, shrinks in
    proportion above it, and stays below a recently refused size (probing halfway towards it).

    >>> p = LogRangePlanner(initial=100, minimum=10, maximum=1000)
    >>> p.next_range(0, 10_000)
    (0, 99)
    >>> p.on_too_large(); p.next_range(0, 10_000)
    (0, 49)
    """

    def __init__(
        self,
        initial: int = 2000,
        minimum: int = 1,
        maximum: int = 100_000,
        grow: float = 2.0,
        *,
        target_logs: int = DEFAULT_TARGET_LOGS,
    ) -> None:
        if not 1 <= minimum <= initial <= maximum:
            raise ConfigError(
                "log_range",
                f"need 1 <= minimum <= initial <= maximum, got {minimum}, {initial}, {maximum}",
            )
        if grow < 1.0 or target_logs < 1:
            raise ConfigError(
                "log_range", f"need grow >= 1 and target_logs >= 1, got {grow}, {target_logs}"
            )
        self.minimum = minimum
        self.maximum = maximum
        self.grow = grow
        self.target_logs = target_logs
        self.size = initial
        self._refused: int | None = None  # smallest size refused lately
        self._successes = 0  # in a row since the last refusal
        self._last: tuple[int, int] | None = None

    def next_range(self, start: int, head: int) -> tuple[int, int]:
        """The next ``(from, to)`` block range starting at ``start``, never past ``head``."""
        if start > head:
            raise ValueError(f"start {start} is past head {head}")
        self._last = (start, min(head, start + self.size - 1))
        return self._last

    def on_success(self, n_logs: int) -> None:
        """The last range answered with ``n_logs`` logs: grow, hold or shrink towards the target."""
        self._successes += 1
        if self._refused is not None and self._successes >= FORGET_REFUSAL_AFTER:
            self._refused = None
        if n_logs > self.target_logs:
            self._set(int(self.size * self.target_logs / n_logs))
        elif n_logs * self.grow <= self.target_logs:
            grown = max(self.size + 1, int(self.size * self.grow))
            if self._refused is not None and grown >= self._refused:
                grown = (self.size + self._refused) // 2
            self._set(max(self.size, grown))

    def on_too_large(self, suggested_to: int | None = None) -> None:
        """The last range was refused: end where the provider suggests if that shrinks it, else
        halve."""
        start, to = self._last if self._last else (0, self.size - 1)
        failed = to - start + 1
        self._refused = failed if self._refused is None else min(self._refused, failed)
        self._successes = 0
        if suggested_to is not None and start <= suggested_to < to:
            self._set(suggested_to - start + 1)
        else:
            self._set(failed // 2)

    def on_timeout(self) -> None:
        """The last range timed out: treated as too large, without a suggestion."""
        self.on_too_large(None)

    @property
    def at_minimum(self) -> bool:
        """True when the last range cannot be split any further."""
        start, to = self._last if self._last else (0, self.size - 1)
        return to - start + 1 <= self.minimum

    def _set(self, size: int) -> None:
        self.size = max(self.minimum, min(self.maximum, size))


async def fetch_logs(
    rpc: RpcClient,
    planner: LogRangePlanner,
    *,
    addresses: Sequence[str],
    topics: list[Any] | None,
    start: int,
    end: int,
) -> AsyncIterator[tuple[int, int, list[dict[str, Any]]]]:
    """Yield consecutive ``(from, to, logs)`` chunks covering ``[start, end]`` exactly once.

    A refused or timed-out range is split (``planner`` decides how); one that cannot be split
    further re-raises its :class:`RangeTooLarge`.
    """
    cursor = start
    while cursor <= end:
        lo, hi = planner.next_range(cursor, end)
        try:
            logs = await rpc.get_logs(
                addresses=addresses, topics=topics, from_block=lo, to_block=hi
            )
        except LogsTimeout:
            if planner.at_minimum:
                raise
            planner.on_timeout()
            continue
        except RangeTooLarge as e:
            if planner.at_minimum:
                raise
            planner.on_too_large(e.suggested_to)
            continue
        planner.on_success(len(logs))
        yield lo, hi, logs
        cursor = hi + 1


async def prepared_ranges(
    rpc: RpcClient,
    planner: LogRangePlanner,
    addresses: Sequence[str],
    start: int,
    end: int,
    max_ranges: int,
    prepare: Callable[[int, int, list[dict[str, Any]]], Coroutine[Any, Any, T]],
) -> AsyncGenerator[tuple[int, asyncio.Task[T]], None]:
    """``(first block, task preparing it)`` for consecutive ranges from ``start``.

    :func:`fetch_logs` over up to ``max_ranges`` planner ranges; each answer goes to ``prepare``
    (decoding, lookups on the node) in a task as soon as it arrives, so the next ``eth_getLogs``
    and this range's lookups are in flight together while the consumer handles the previous
    one. At most one prepared range waits in the queue; closing the generator cancels the
    rest.
    """
    queue: asyncio.Queue[tuple[int, asyncio.Task[T]] | Exception | None] = asyncio.Queue(1)
    # Prepared ranges not handed out yet, cancelled on close. (Not every range started: a
    # long step would hold each range's result until its end.)
    started: set[asyncio.Task[T]] = set()

    async def produce() -> None:
        try:
            pos = start
            for _ in range(max_ranges):
                if pos > end:
                    break
                lo, hi = planner.next_range(pos, end)
                async for a, b, logs in fetch_logs(
                    rpc, planner, addresses=addresses, topics=None, start=lo, end=hi
                ):
                    task = asyncio.create_task(prepare(a, b, logs))
                    started.add(task)
                    await queue.put((a, task))
                pos = hi + 1
            await queue.put(None)
        except Exception as e:  # handed to the consumer, which raises it
            await queue.put(e)

    producer = asyncio.create_task(produce())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, Exception):
                try:
                    raise item
                finally:  # else this frame and the exception's traceback hold each other,
                    del item  # and the range's data with them, until the cycle collector runs
            started.discard(item[1])
            yield item
    finally:
        for t in (producer, *started):
            t.cancel()
        for t in (producer, *started):
            # Ranges never consumed: their outcome, failure included, no longer matters.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        started.clear()  # their prepared ranges: not kept by the generator's frame
