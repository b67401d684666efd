"""A small pool of async psycopg connections for the API's hot reads on PostgreSQL.

The task lifecycle route awaits its one statement on the event loop instead of handing a
synchronous SQLAlchemy call to the threadpool: no thread hop, no GIL contention with 40 worker
threads, and psycopg prepares the statement server-side after a few executions on each
connection. Connections open lazily (in the serving loop), in autocommit, at most ``size`` at
once; a connection that fails is dropped, and a statement that fails on a reused connection
(the server restarted, say) is retried once on a fresh one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.pq import TransactionStatus

# Connections the hot route may hold: enough to keep PostgreSQL's backends busy on this kind
# of machine while requests queue in the loop, far fewer than the 40 threads of the sync pool.
ASYNC_POOL = 8


def conninfo(url: str) -> str:
    """A libpq URI from a SQLAlchemy URL (``postgresql+psycopg://`` -> ``postgresql://``)."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class AsyncPgPool:
    """``await pool.fetchone(sql, params)``: one statement on a pooled async connection."""

    def __init__(self, url: str, size: int = ASYNC_POOL) -> None:
        self.conninfo = conninfo(url)
        self.size = size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots: asyncio.Semaphore | None = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)

    async def fetchone(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else await self._connect()
            try:
                try:
                    return await self._run(conn, sql, params)
                except psycopg.OperationalError:
                    if not reused:
                        raise
                    await conn.close()
                    conn = await self._connect()
                    return await self._run(conn, sql, params)
            finally:
                if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                    await conn.close()  # broken, or cancelled mid-statement
                else:
                    self._idle.append(conn)

    @staticmethod
    async def _run(
        conn: psycopg.AsyncConnection[Any], sql: str, params: dict[str, Any]
    ) -> tuple[Any, ...] | None:
        cur = await conn.execute(sql, params)
        return await cur.fetchone()

    async def close(self) -> None:
        idle, self._idle, self._slots = self._idle, [], None
        for conn in idle:
            await conn.close()
