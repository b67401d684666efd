"""One writer per chain: a PostgreSQL advisory lock, or a file lock beside a SQLite database.

A second indexer for the same chain does not fail: it says who holds the lock and waits as a
standby, taking over as soon as the holder dies (PostgreSQL drops a dead session's advisory
locks; the kernel drops a dead process's ``flock``).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from indexer.db import is_sqlite
from indexer.writer_start import in_process_only


def lock_key(chain_id: int) -> int:
    """A stable signed 64-bit advisory-lock key for one chain."""
    digest = hashlib.sha256(f"corlens-indexer:{chain_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def holder_label() -> str:
    return f"corlens-indexer pid={os.getpid()} host={socket.gethostname()}"


class WriterLock:
    """Try-lock with a description of the current holder when it is taken."""

    def __init__(self, url: str, chain_id: int) -> None:
        self.url = url
        self.chain_id = chain_id
        self._conn: sa.Connection | None = None
        self._engine: sa.Engine | None = None
        self._file: IO[str] | None = None

    def try_acquire(self) -> bool:
        if in_process_only(self.url):
            return True  # a database in memory is this process's alone: no one to exclude
        if is_sqlite(self.url):
            return self._try_file()
        return self._try_pg()

    def _lock_path(self) -> Path:
        db = self.url.split("///", 1)[-1] or "corlens.db"
        return Path(f"{db}.chain-{self.chain_id}.lock")

    def _try_file(self) -> bool:
        path = self._lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        f = path.open("a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        f.seek(0)
        f.truncate()
        f.write(holder_label() + "\n")
        f.flush()
        self._file = f
        return True

    def _try_pg(self) -> bool:
        if self._engine is None:
            self._engine = sa.create_engine(
                self.url,
                poolclass=sa.pool.NullPool,
                connect_args={"application_name": holder_label()[:63]},
            )
        conn = self._engine.connect()
        got = bool(
            conn.execute(
                sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(self.chain_id)}
            ).scalar()
        )
        conn.commit()
        if got:
            self._conn = conn
        else:
            conn.close()
        return got

    def holder(self) -> str:
        """Who holds the lock, as well as can be told."""
        if is_sqlite(self.url):
            try:
                return self._lock_path().read_text().strip() or "another process"
            except OSError:
                return "another process"
        key = lock_key(self.chain_id)
        assert self._engine is not None
        with self._engine.connect() as conn:
            row: Any = conn.execute(
                sa.text(
                    "SELECT a.application_name, a.client_addr, a.pid FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                    "AND l.granted AND l.classid = :hi AND l.objid = :lo"
                ),
                {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
            ).first()
        if row is None:
            return "another process"
        return f"{row[0] or 'a client'} (backend pid {row[2]}, from {row[1] or 'local socket'})"

    async def acquire(
        self, on_wait: Callable[[str], None] | None = None, interval: float = 1.0
    ) -> None:
        """Wait as a standby until the lock is ours; ``on_wait`` hears who holds it, once."""
        told = False
        while not self.try_acquire():
            if not told and on_wait is not None:
                on_wait(self.holder())
                told = True
            await asyncio.sleep(interval)

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            try:
                self._conn.execute(
                    sa.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(self.chain_id)}
                )
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
