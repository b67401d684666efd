"""Request records written in batches, off the request path.

:meth:`Recorder.record` only appends to a buffer; a background task writes the buffer every
``flush_interval`` seconds or as soon as it holds ``batch_size`` rows, in one transaction per
batch (in a worker thread). :meth:`Recorder.aclose` writes what is left. A batch that fails is
kept and retried with the next one, up to ``MAX_BUFFER`` rows; beyond that the oldest are
dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from gateway.background import stop
from gateway.config import AccountingConfig
from gateway.store import GatewayStore

log = logging.getLogger("corlens.gateway")
MAX_BUFFER = 100_000  # rows kept while the database is unreachable (~50 MB at most)


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
        while self._rows or self._used:
            rows = self._rows[: self.cfg.batch_size]
            used = self._used
            self._rows = self._rows[len(rows) :]
            self._used = {}
            try:
                await asyncio.to_thread(self.store.write_batch, rows, used)
            except SQLAlchemyError as e:
                self.failures += 1
                log.warning("accounting: writing %d request records failed: %s",
                            len(rows), type(e).__name__)
                self._rows = rows + self._rows
                self._used = {**used, **self._used}
                return
            self.written += len(rows)

    async def aclose(self) -> None:
        """Stop the background task and write every buffered row."""
        task, self._task = self._task, None
        await stop(task)
        await self.flush()
