"""The store's write path in a process of its own, beside the sync loop.

Decoding a range and writing the one before it both need the CPU most of the time, and the GIL
lets only one of them run at once in one process. :class:`ProcessWriter` has the same
``write_batch(batch) -> int`` as :class:`~indexer.store.Store`, and runs it in a child process
(``python -m indexer.writer_proc``) with its own engine on the same database, so the two use
both cores.

Protocol, over the child's stdin and stdout (pipes between two processes of ours): length-prefixed
frames. The first frame is the database URL (never on the command line, where other users could
read its password); the child answers :data:`READY` once it has imported and made its engine.
Each further frame is one encoded batch (:func:`encode_batch`); the child answers each with
``("ok", events written)`` or ``("error", pickled exception or None, type name, message)``.
End of input ends the child. The child asks the kernel to kill it when its parent dies, so a
writer never outlives the process that holds the chain's writer lock. On SQLite the child's
commits leave checkpointing (copying WAL pages into the database file) to a thread of its own.

The batch goes over as plain tuples in ``marshal`` (about twice as fast as pickling the
dataclasses), each event as its raw event row plus the few fields the row lacks; anything
``marshal`` cannot carry falls back to ``pickle``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import marshal
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
from operator import attrgetter
from typing import IO, Any, NoReturn, Protocol

from indexer.decode import DecodedEvent, Malformed
from indexer.errors import RetryableError
from indexer.project import Keys
from indexer.rows import EVENT_COLUMNS, event_rows
from indexer.store import Batch, Store
from indexer.writer_start import start_writer, take_prestarted

_LEN = struct.Struct("<Q")
_MARSHAL, _PICKLE = b"m", b"p"
READY = b"ready"  # the child's first frame: imports done, engine made
# Every field, in the order the dataclass takes them back positionally.
_malformed_tuple = attrgetter(*(f.name for f in dataclasses.fields(Malformed)))
# Seconds the child gets to finish its batch and exit after its input closes.
CLOSE_TIMEOUT = 30.0


class BatchWriter(Protocol):
    """What commits a prepared range: :class:`~indexer.store.Store` or :class:`ProcessWriter`."""

    def write_batch(self, batch: Batch) -> int: ...


class WriterFailed(RetryableError):
    """The writer process died, or failed with an error that could not be carried back. The
    next batch starts a new writer process: following the head, the next tick goes on."""


def encode_batch(b: Batch) -> bytes:
    """One batch as bytes. Each event goes as its raw event row (built here if the batch has
    none) plus what the row holds differently or not at all (:data:`_EXTRA`); the other side
    rebuilds the events from both."""
    rows = b.rows[0] if b.rows is not None else event_rows(b.chain_id, b.events)[0]
    plain = (
        b.chain_id,
        b.name,
        b.from_block,
        b.to_block,
        b.to_hash,
        rows,  # the projection keys are the rows' last columns (_KEYS)
        [_extra(e) for e in b.events],
        [_malformed_tuple(m) for m in b.malformed],
        b.unknown,
        b.headers,
        b.sessions,
        b.head,
        b.safe,
        b.finalized,
        b.from_parent,
    )
    try:
        return _MARSHAL + marshal.dumps(plain)
    except ValueError:  # a value marshal does not know (a date in a snapshot, say)
        return _PICKLE + pickle.dumps(plain, protocol=pickle.HIGHEST_PROTOCOL)


def decode_batch(buf: bytes) -> Batch:
    body = memoryview(buf)[1:]
    plain = marshal.loads(body) if buf[:1] == _MARSHAL else pickle.loads(body)
    (cid, name, lo, hi, to_hash, rows, extras, malformed, unknown, headers, sessions, head,
     safe, fin, from_parent) = plain  # fmt: skip
    return Batch(
        chain_id=cid,
        name=name,
        from_block=lo,
        to_block=hi,
        to_hash=to_hash,
        events=[_event(r, x) for r, x in zip(rows, extras, strict=True)],
        malformed=[Malformed(*t) for t in malformed],
        unknown=unknown,
        headers=headers,
        sessions=sessions,
        head=head,
        safe=safe,
        finalized=fin,
        rows=(rows, [Keys._make(r[_KEYS]) for r in rows]),
        from_parent=from_parent,
    )


# Event fields the raw event row does not hold as they are (JSON text there, or absent).
_EXTRA = ("block_time", "args", "topics", "session_hint")
_extra = attrgetter(*_EXTRA)
_R = {c: i for i, c in enumerate(EVENT_COLUMNS)}
_KEYS = slice(_R["session_id"], _R["subject"] + 1)  # Keys' fields, in its order
(_BN, _BH, _TX, _TXI, _LI, _AD, _CO, _EV, _T0, _DA, _SE) = (
    _R[c] for c in ("block_number", "block_hash", "tx_hash", "tx_index", "log_index",
                    "address", "contract", "event", "topic0", "data", "sender")
)  # fmt: skip


def _event(r: tuple[Any, ...], x: tuple[Any, ...]) -> DecodedEvent:
    return DecodedEvent(
        r[_BN], r[_BH], x[0], r[_TX], r[_TXI], r[_LI], r[_AD], r[_CO], r[_EV], r[_T0], x[1],
        x[2], r[_DA], x[3], r[_SE],
    )  # fmt: skip


def _send(f: IO[bytes], payload: bytes) -> None:
    f.write(_LEN.pack(len(payload)))
    f.write(payload)
    f.flush()


def _recv(f: IO[bytes]) -> bytes | None:
    head = f.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (n,) = _LEN.unpack(head)
    body = f.read(n)
    if len(body) < n:
        return None
    return body


class ProcessWriter:
    """``write_batch`` in a child process; one batch at a time, from one thread at a time.

    The child takes a few tenths of a second to start (imports, engine). Until it says it is
    ready, batches go to ``early`` (the caller's own store, in this process) rather than wait:
    writes never overlap, so the two connections take turns on the database. A short backfill
    may never use the child; it is then stopped without waiting for it. A child found dead is
    replaced at the next batch (the batch it died on raised :class:`WriterFailed`, its
    transaction rolled back). Create it on a thread that lives as long as it: Linux kills the
    child when the thread that started it exits."""

    def __init__(self, database_url: str, early: BatchWriter | None = None) -> None:
        self._url = database_url
        self._early = early
        self._lock = threading.Lock()
        self._start(take_prestarted() or start_writer())

    def _start(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self._in: IO[bytes] = proc.stdin
        self._out: IO[bytes] = proc.stdout
        self._poll = select.poll()  # not select(): that fails on descriptors from 1024 up
        self._poll.register(self._out.fileno(), select.POLLIN)
        self._ready = False
        try:
            _send(self._in, self._url.encode())
        except OSError:  # it died at once
            self._close_proc()
            self._failed()

    def _check_ready(self, wait: bool) -> bool:
        """True once the child has sent its ready frame (waiting for it if ``wait``)."""
        if not self._ready and (wait or self._poll.poll(0)):
            if _recv(self._out) != READY:
                self._failed()
            self._ready = True
        return self._ready

    def _failed(self) -> NoReturn:
        try:
            code: int | None = self._proc.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        raise WriterFailed(
            f"the writer process exited (code {code}); its error, if any, is printed above. "
            "The next batch starts a new one; a stopped run resumes from the last committed "
            "block when started again"
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stage(self, batch: Batch) -> None:
        """Encode ``batch`` now, while the child may still be writing the one before it, so
        that its turn starts without the child waiting (when the child is ready to take it)."""
        # No lock: the writing thread may hold it for the batch before. Once the child has
        # been seen ready it stays so; until then a batch may still go to ``early``.
        if self._ready or self._early is None:
            batch.wire = encode_batch(batch)

    def write_batch(self, batch: Batch) -> int:
        """Commit one range (in the child once it is ready); returns the number of new events
        stored. The child's exception, if it failed, is raised here."""
        with self._lock:
            if self._proc.poll() is not None:  # died since the last batch: a new one
                self._close_proc()
                self._start(start_writer())
            if self._early is not None and not self._check_ready(wait=False):
                return self._early.write_batch(batch)
            payload, batch.wire = batch.wire or encode_batch(batch), None
            try:
                self._check_ready(wait=True)
                _send(self._in, payload)
                reply = _recv(self._out)
            except (BrokenPipeError, ValueError):
                reply = None
        if reply is None:
            self._failed()
        status, *rest = marshal.loads(reply)
        if status == "ok":
            return int(rest[0])
        exc_blob, kind, message = rest
        exc: BaseException | None = None
        if exc_blob is not None:
            with contextlib.suppress(Exception):
                exc = pickle.loads(exc_blob)
        if isinstance(exc, Exception):
            try:
                raise exc
            finally:  # else this frame (the batch, its encoded bytes) and the exception's
                del exc  # traceback hold each other until the cycle collector runs
        raise WriterFailed(f"the writer process failed: {kind}: {message}")

    def close(self) -> None:
        """End the child after the batch it is writing, if any; kill it if it hangs, or if it
        has not even started (nothing of ours is in flight then)."""
        if not self._ready:
            self._proc.kill()
        self._close_proc()

    def _close_proc(self) -> None:
        with contextlib.suppress(OSError):
            self._in.close()
        try:
            self._proc.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        with contextlib.suppress(OSError):
            self._out.close()

    def __enter__(self) -> ProcessWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when its parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def _reply_error(out: IO[bytes], e: Exception) -> None:
    blob: bytes | None
    try:
        blob = pickle.dumps(e)
        pickle.loads(blob)  # some exceptions pickle but do not unpickle
    except Exception:
        blob = None
    _send(out, marshal.dumps(("error", blob, type(e).__name__, str(e))))


def main() -> None:
    _die_with_parent(int(sys.argv[1]))
    # Ctrl-C in a terminal reaches the whole process group, and a service manager may stop the
    # group: the parent decides when the writer ends (it closes the input), so a batch is
    # never cut short by a signal meant for the indexer.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Frames go to the parent over the original stdout; anything printed goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    first = _recv(inp)
    if first is None:
        return
    import sqlalchemy as sa

    from indexer.db import is_sqlite, make_engine
    from indexer.gc_tuning import tune_gc

    tune_gc()
    url = first.decode()
    checkpoints = _Checkpointer(url) if is_sqlite(url) else None
    engine = make_engine(url)
    if checkpoints is not None:
        sa.event.listen(engine, "connect", _no_autocheckpoint)
    store = Store(engine)
    _send(out, READY)
    try:
        while (frame := _recv(inp)) is not None:
            try:
                n = store.write_batch(decode_batch(frame))
            except Exception as e:
                _reply_error(out, e)
                continue
            if checkpoints is not None:
                checkpoints.poke()
            _send(out, marshal.dumps(("ok", n)))
    finally:
        if checkpoints is not None:
            checkpoints.stop()
        store.engine.dispose()


def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()


class _Checkpointer:
    """SQLite: copies committed pages from the WAL into the database on a thread of its own
    (sqlite3 runs it without the GIL), instead of in the writer's commit every 1,000 pages."""

    def __init__(self, url: str) -> None:
        import sqlite3

        from sqlalchemy.engine import make_url

        database = make_url(url).database or ""  # without the URL's query string
        self._conn = sqlite3.connect(database, check_same_thread=False)
        self._wake = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._done:
                return
            with contextlib.suppress(Exception):  # a busy moment: the next poke tries again
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def stop(self) -> None:
        self._done = True
        self._wake.set()
        self._thread.join()
        self._conn.close()


if __name__ == "__main__":
    main()
