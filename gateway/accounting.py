"""Request records written in batches, off the request path.

:meth:`Recorder.record` only appends to a buffer; a background task writes the buffer every
``flush_interval`` seconds or as soon as it holds ``batch_size`` rows, in one transaction per
batch (in a worker thread). :meth:`Recorder.aclose` writes what is left. A batch that fails
for a reason that may be a row's (a value out of a column's range: an integrity or data error,
or the driver refusing to bind it) is written again row by row, and a row refused on its own
is logged and dropped, so it never holds back the others. Any other failure (the database
away, read-only, or missing a table or a permission) keeps the batch for the next attempt, up
to ``MAX_BUFFER`` rows; beyond that the oldest are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import exc

from gateway.background import stop
from gateway.config import AccountingConfig
from gateway.store import GatewayStore

log = logging.getLogger("corlens.gateway")
MAX_BUFFER = 100_000  # rows kept while the database is unreachable (~50 MB at most)


# Errors that may be one row's fault: the database refused a value (IntegrityError,
# DataError), or the driver could not bind it (sqlite3 raises OverflowError for an integer
# beyond 64 bits; SQLAlchemy wraps such errors in a StatementError).
ROW_FAULTS = (exc.IntegrityError, exc.DataError, OverflowError, ValueError, TypeError)


def transient(e: BaseException) -> bool:
    """Whether a failed write says nothing about its rows (the database away, busy,
    read-only, or missing a table or a permission), so the same rows are kept and written
    later; anything else may be a row's fault."""
    if isinstance(e, exc.StatementError) and not isinstance(e, exc.DBAPIError):
        return not isinstance(e.orig, ROW_FAULTS)  # raised while binding the parameters
    return not isinstance(e, ROW_FAULTS)


def reason(e: BaseException) -> str:
    """The database's one-line complaint, without the statement or its parameters (which hold
    request data)."""
    if isinstance(e, exc.DBAPIError) and e.orig is not None:
        first = str(e.orig).strip().splitlines()
        return f"{type(e).__name__}: {first[0]}" if first else type(e).__name__
    return type(e).__name__


class Recorder:
    def __init__(self, store: GatewayStore, cfg: AccountingConfig) -> None:
        self.store = store
        self.cfg = cfg
        self._rows: list[dict[str, Any]] = []
        self._used: dict[int, datetime] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self.refused = 0  # rows the database refused on their own (logged, then dropped)
        self.failures = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gateway-accounting")

    def record(self, row: dict[str, Any]) -> None:
        """Queue one ``gateway_request`` row (never blocks, never raises)."""
        self._rows.append(row)
        key_id = row.get("key_id")
        if key_id is not None:
            self._used[key_id] = row["created_at"]
        if len(self._rows) > MAX_BUFFER:
            drop = len(self._rows) - MAX_BUFFER
            del self._rows[:drop]
            self.dropped += drop
        if len(self._rows) >= self.cfg.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._rows)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.cfg.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write the buffer, batch by batch; never raises (but for cancellation)."""
        while self._rows or self._used:
            rows = self._rows[: self.cfg.batch_size]
            used = self._used
            self._rows = self._rows[len(rows) :]
            self._used = {}
            try:
                await asyncio.to_thread(self.store.write_batch, rows, used)
            # Whatever the driver raises (OverflowError from sqlite3's binding, DataError from
            # psycopg, ...): the flush task must outlive every failure, or every later record
            # of this replica is lost.
            except Exception as e:
                self.failures += 1
                log.warning("accounting: writing %d request records failed: %s",
                            len(rows), reason(e))
                if transient(e):
                    self._keep(rows, used)
                    return
                if not await self._isolate(rows, used):
                    return
            else:
                self.written += len(rows)

    async def _isolate(self, rows: list[dict[str, Any]], used: dict[int, datetime]) -> bool:
        """Write ``rows`` one per transaction, dropping (and logging) each the database refuses
        on its own. False if the database went away meanwhile: the rest is kept."""
        for i, row in enumerate(rows):
            try:
                await asyncio.to_thread(self.store.write_batch, [row], {})
            except Exception as e:  # as in flush: nothing may end the flush task
                if transient(e):
                    self._keep(rows[i:], used)
                    return False
                self.refused += 1
                log.error("accounting: request record %s (model %r) refused by the database, "
                          "dropped: %s", row.get("request_id"), row.get("model"), reason(e))
            else:
                self.written += 1
        if used:
            try:
                await asyncio.to_thread(self.store.write_batch, [], used)
            except Exception as e:  # as in flush
                if transient(e):
                    self._keep([], used)
                    return False
                log.error("accounting: last-use times of %d keys refused, dropped: %s",
                          len(used), reason(e))
        return True

    def _keep(self, rows: list[dict[str, Any]], used: dict[int, datetime]) -> None:
        """Put unwritten rows back at the head of the buffer (newer last-use times win)."""
        self._rows = rows + self._rows
        self._used = {**used, **self._used}

    async def aclose(self) -> None:
        """Stop the background task and write every buffered row."""
        task, self._task = self._task, None
        await stop(task)
        await self.flush()
