"""The pure capacity core, table-driven: session choice, whose turn, Retry-After, the breaker."""

from __future__ import annotations

import asyncio

import pytest

from gateway.capacity.base import SessionSlot
from gateway.capacity.breaker import CircuitBreaker
from gateway.capacity.decide import free_slots, my_turn, pick, retry_after
from gateway.capacity.line import LocalLine, Waiter


def pool_of(*limits: int) -> list[SessionSlot]:
    return [SessionSlot(f"s{i}", "m", "http://r", i, "c", lim, f"s{i}")
            for i, lim in enumerate(limits)]


# (limits, inflight, cooldown_until, drained, exclude, pointer) -> (index, new pointer, reason)
PICK_TABLE = [
    ("first free from 0", (2, 2, 2), {}, {}, set(), set(), 0, (0, 1, "ok")),
    ("pointer starts the walk", (2, 2, 2), {}, {}, set(), set(), 2, (2, 0, "ok")),
    ("pointer past the end wraps", (2, 2), {}, {}, set(), set(), 5, (1, 0, "ok")),
    ("skips full", (1, 1, 1), {"s0": 1}, {}, set(), set(), 0, (1, 2, "ok")),
    ("skips cooldown", (2, 2), {}, {"s0": 10.0}, set(), set(), 0, (1, 0, "ok")),
    ("ended cooldown is fine", (2, 2), {}, {"s0": 5.0}, set(), set(), 0, (0, 1, "ok")),
    ("skips drained", (2, 2), {}, {}, {"s0"}, set(), 0, (1, 0, "ok")),
    ("skips excluded", (2, 2), {}, {}, set(), {"s0"}, 0, (1, 0, "ok")),
    ("skips zero limit", (0, 2), {}, {}, set(), set(), 0, (1, 0, "ok")),
    ("wraps to find the last free", (1, 1, 1), {"s1": 1, "s2": 1}, {}, set(), set(), 1,
     (0, 1, "ok")),
    ("all full: wait", (1, 1), {"s0": 1, "s1": 1}, {}, set(), set(), 1, (None, 1, "full")),
    ("full + cooldown: still wait", (1, 1), {"s0": 1}, {"s1": 10.0}, set(), set(), 0,
     (None, 0, "full")),
    ("cooldown + drained: unavailable", (1, 1), {}, {"s0": 10.0}, {"s1"}, set(), 0,
     (None, 0, "unavailable")),
    ("all excluded: unavailable", (1, 1), {}, {}, set(), {"s0", "s1"}, 0,
     (None, 0, "unavailable")),
    ("excluded free, other full: wait", (1, 1), {"s1": 1}, {}, set(), {"s0"}, 0,
     (None, 0, "full")),
    ("empty pool", (), {}, {}, set(), set(), 3, (None, 0, "unavailable")),
]


@pytest.mark.parametrize(
    ("limits", "inflight", "cooldown", "drained", "exclude", "pointer", "want"),
    [row[1:] for row in PICK_TABLE], ids=[row[0] for row in PICK_TABLE])
def test_pick(limits: tuple[int, ...], inflight: dict[str, int], cooldown: dict[str, float],
              drained: set[str], exclude: set[str], pointer: int,
              want: tuple[int | None, int, str]) -> None:
    got = pick(pool_of(*limits), inflight, now=5.0, cooldown_until=cooldown, drained=drained,
               exclude=exclude, pointer=pointer)
    assert (got.index, got.pointer, got.reason) == want


def test_pick_round_robin_is_even() -> None:
    pool, pointer, counts = pool_of(3, 3, 3), 0, [0, 0, 0]
    for _ in range(300):
        got = pick(pool, {}, now=0, cooldown_until={}, drained=set(), exclude=set(),
                   pointer=pointer)
        assert got.index is not None
        counts[got.index] += 1
        pointer = got.pointer
    assert counts == [100, 100, 100]


def test_free_slots_ignore_ineligible_and_full() -> None:
    pool = pool_of(3, 2, 2, 0)
    free = free_slots(pool, {"s0": 1, "s1": 2}, now=5.0, cooldown_until={"s2": 9.0},
                      drained=set())
    assert free == {"s0": 2}


# (position in line, free slots, exclude sets of those ahead) -> may take a slot now
TURN_TABLE = [
    ("alone, one free", 0, {"a": 1}, [], True),
    ("nothing free", 0, {}, [], False),
    ("second in line, one free", 1, {"a": 1}, [], False),
    ("second in line, two free", 1, {"a": 1, "b": 1}, [], True),
    ("second, same session twice free", 1, {"a": 2}, [], True),
    ("ahead excludes the only free session", 1, {"a": 1}, [{"a"}], True),
    ("ahead excludes only part of what is free", 2, {"a": 1, "b": 1}, [{"a"}, {"a"}], False),
    ("ahead excludes another session", 1, {"a": 1}, [{"b"}], False),
]


@pytest.mark.parametrize(("position", "free", "ahead", "want"),
                         [row[1:] for row in TURN_TABLE], ids=[row[0] for row in TURN_TABLE])
def test_my_turn(position: int, free: dict[str, int], ahead: list[set[str]], want: bool) -> None:
    assert my_turn(position, free, ahead) is want


RETRY_TABLE = [
    ("queue_full", {}, 5.0),
    ("queue_timeout", {}, 5.0),
    ("no_sessions", {"cooldown_left": 2.2}, 3.0),
    ("no_sessions", {}, 1.0),
    ("redis_unavailable", {"breaker_left": 0.3}, 1.0),
    ("redis_unavailable", {"breaker_left": 4.5}, 5.0),
]


@pytest.mark.parametrize(("reason", "extra", "want"), RETRY_TABLE)
def test_retry_after(reason: str, extra: dict[str, float], want: float) -> None:
    assert retry_after(reason, wait_timeout=2.0, queue_timeout=5.0, **extra) == want


def test_retry_after_without_queue_uses_wait_window() -> None:
    assert retry_after("queue_full", wait_timeout=3.0, queue_timeout=0.0) == 3.0
    assert retry_after("queue_full", wait_timeout=0.0, queue_timeout=0.0) == 1.0


def test_breaker_cycle() -> None:
    now = [0.0]
    b = CircuitBreaker(failures=3, cooloff=2.0, clock=lambda: now[0])
    assert (b.state, b.allows()) == ("closed", True)
    assert [b.failure(), b.failure()] == [False, False]
    b.success()  # a success resets the count: failures must be consecutive
    assert [b.failure(), b.failure(), b.failure()] == [False, False, True]
    assert (b.state, b.allows(), b.retry_in()) == ("open", False, 2.0)
    assert b.failure() is False  # more failures while open change nothing
    now[0] = 2.0
    assert (b.state, b.allows()) == ("half-open", False)
    assert b.failure() is False  # the probe failed: open again for a full cool-off
    assert (b.state, b.retry_in()) == ("open", 2.0)
    now[0] = 4.5
    assert b.state == "half-open"
    assert b.success() is True
    assert (b.state, b.allows(), b.retry_in()) == ("closed", True, 0.0)


def test_local_line_orders_by_seq_and_wakes_front() -> None:
    async def scenario() -> None:
        line = LocalLine()
        w3, w1, w2 = Waiter(3, frozenset()), Waiter(1, frozenset({"a"})), Waiter(2, frozenset())
        for w in (w3, w1, w2):
            line.add(w)
        assert [w.seq for w in line] == [1, 2, 3]
        assert (line.position(2), line.position(9)) == (1, 3)
        assert line.ahead_excludes(3) == [frozenset({"a"})]
        line.wake_front()
        assert (w1.event.is_set(), w2.event.is_set()) == (True, False)
        line.wake_after(w1)
        assert (w2.event.is_set(), w3.event.is_set()) == (True, False)
        line.remove(w1)
        line.remove(w1)  # idempotent
        assert line.is_front(w2) and len(line) == 2

    asyncio.run(scenario())


def test_docstring_examples_hold() -> None:
    import doctest

    from gateway import admin, streaming
    from gateway.capacity import base, breaker, decide

    for module in (decide, breaker, base, admin, streaming):
        assert doctest.testmod(module).failed == 0
