"""Async reads on PostgreSQL for the API's hot route: a small asyncpg pool and a coalescer.

The task lifecycle route awaits its statement on the event loop instead of handing a
synchronous SQLAlchemy call to the threadpool: no thread hop and no GIL contention with 40
worker threads. The driver is asyncpg (binary protocol, its wire code in C, every statement
prepared once per connection and cached): against psycopg's async connection it took a
lifecycle statement from about 220 to 90 us of client CPU and from 580 to 340 us of wall time
(1M-task bench database, one connection, uvloop). Connections open lazily (in the serving
loop), at most ``size`` at once; a connection that fails is dropped, and a statement that fails
on a reused connection (the server restarted, say) is retried once on a fresh one.

:class:`Coalescer` batches lookups like a group commit: a request runs its statement at once
while connections are free; the requests that arrive while all are busy share the next
statement. Alone, a request pays nothing; under load, one round trip and one statement's fixed
cost serve several requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

import asyncpg
import sqlalchemy as sa

# Statements in flight (and connections held) for the hot route: one executing while the
# previous batch's rows are decoded. More in flight means smaller batches and more backends
# competing for the same cores: on 2 cores, 8 in flight served 12-30% fewer requests/s than
# 1-2 (bench/api.py-style load at concurrency 32, shuffled A/B slices).
IN_FLIGHT = 2
# Keys per coalesced statement; keys beyond it wait for the next statement.
MAX_BATCH = 64
# What a dropped or restarted server looks like to a reused connection.
LOST = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def conninfo(url: str) -> str:
    """A libpq URI from a SQLAlchemy URL (``postgresql+psycopg://`` -> ``postgresql://``)."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class AsyncPgPool:
    """``await pool.fetchall(sql, args)``: one statement (``$1``-style parameters) on a pooled
    async connection."""

    def __init__(self, url: str, size: int = IN_FLIGHT) -> None:
        self.conninfo = conninfo(url)
        self.size = size
        self._idle: list[asyncpg.Connection] = []
        self._slots: asyncio.Semaphore | None = None

    async def _connect(self) -> asyncpg.Connection:
        # Key lookups plan the same for any key; with an array of keys PostgreSQL would
        # otherwise re-plan every execution (its custom plan looks cheaper than the generic).
        conn: asyncpg.Connection = await asyncpg.connect(
            self.conninfo, server_settings={"plan_cache_mode": "force_generic_plan"}
        )
        return conn

    async def fetchall(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else await self._connect()
            ok = False
            try:
                try:
                    rows: list[Any] = await conn.fetch(sql, *args)
                except LOST:
                    if not reused:
                        raise
                    conn.terminate()
                    conn = await self._connect()
                    rows = await conn.fetch(sql, *args)
                ok = True
                return rows
            finally:
                if ok and not conn.is_closed():
                    self._idle.append(conn)
                else:
                    conn.terminate()  # broken, or cancelled mid-statement

    async def close(self) -> None:
        idle, self._idle, self._slots = self._idle, [], None
        for conn in idle:
            await conn.close()


class Coalescer(Generic[K, V]):
    """``await c.get(key)``: a key goes to ``lookup`` at once while fewer than ``limit``
    lookups are running; otherwise it waits, and all the keys that waited go together when
    one finishes (group commit: no added latency when idle, fewer statements under load).

    ``lookup`` returns the values it found (a key left out gets None); an exception it raises
    reaches every caller of that batch."""

    def __init__(
        self,
        lookup: Callable[[list[K]], Awaitable[dict[K, V]]],
        limit: int = IN_FLIGHT,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.lookup = lookup
        self.limit = limit
        self.max_batch = max_batch
        self._running = 0
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # the loop only holds weak references

    async def get(self, key: K) -> V | None:
        if self._running >= self.limit:
            fut: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(key, []).append(fut)
            return await fut
        self._running += 1
        try:
            return (await self.lookup([key])).get(key)
        finally:
            self._done()

    def _done(self) -> None:
        self._running -= 1
        if not self._waiting:
            return
        keys = list(self._waiting)[: self.max_batch]
        part = {k: self._waiting.pop(k) for k in keys}
        self._running += 1
        task = asyncio.ensure_future(self._run(part))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, waiting: dict[K, list[asyncio.Future[V | None]]]) -> None:
        try:
            found = await self.lookup(list(waiting))
        except BaseException as e:  # not handled here: every caller of the batch raises it
            for futs in waiting.values():
                for f in futs:
                    if not f.done():
                        f.set_exception(e) if isinstance(e, Exception) else f.cancel()
            if not isinstance(e, Exception):
                raise
            return
        finally:
            self._done()
        for k, futs in waiting.items():
            for f in futs:
                if not f.done():  # a caller that went away (client disconnect) cancelled it
                    f.set_result(found.get(k))
