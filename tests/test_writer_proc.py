"""indexer.writer_proc: the write path in a child process writes what the store writes, carries
errors back with their type, and never outlives its parent (both backends, real processes)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import sqlalchemy as sa

from indexer.db import make_engine
from indexer.decode import DecodedEvent, Malformed
from indexer.errors import RetryableError
from indexer.models import Task, table
from indexer.project import Keys
from indexer.rows import event_rows
from indexer.store import Batch, Store
from indexer.writer_proc import ProcessWriter, WriterFailed, decode_batch, encode_batch
from tests.conftest import collector_off
from tests.indexing import check_lifecycle_copies

CHAIN = 31337
MINER = "0x" + "44" * 20


def ev(block: int, log: int, contract: str, event: str, **args: object) -> DecodedEvent:
    return DecodedEvent(block, f"0x{block:064x}", 1000 + block, f"0x{block:064x}", 0, log,
                        "0x" + "11" * 20, contract, event, "0x" + "22" * 32, dict(args),
                        ["0x" + "22" * 32], "0x", sender="0x" + "33" * 20)


def batch(block: int, *events: DecodedEvent, rows: bool = True, **kw: object) -> Batch:
    b = Batch(chain_id=CHAIN, name="t", from_block=block, to_block=block,
              to_hash=f"0x{block:064x}", events=list(events),
              headers=[{"number": block, "hash": f"0x{block:064x}", "timestamp": block,
                        "parent_hash": f"0x{block - 1:064x}"}],
              head=block + 10, safe=block + 5, finalized=block - 1,
              from_parent=f"0x{block - 1:064x}", **kw)  # type: ignore[arg-type]
    if rows:
        b.rows = event_rows(CHAIN, b.events)
    return b


def lifecycle() -> list[Batch]:
    """A task's lifecycle over five ranges, from an index that starts after its submission:
    a payment is stored before the task has a row."""
    return [
        batch(1, ev(1, 0, "SessionPayment", "NetworkPaid", sessionId=1, taskId=1, amount=5)),
        batch(2, ev(2, 0, "SessionQueueV2", "TaskQueued", sessionId=1, taskId=1, globalId=9,
                    taskData="d"),
              ev(2, 1, "SessionV2", "TaskSubmitted", sessionId=1, taskId=2,
                 clientReference="r2", taskData="d")),
        batch(3, ev(3, 0, "SessionQueueV2", "TaskAssigned", sessionId=1, taskId=1,
                    miners=[MINER])),
        batch(4, ev(4, 0, "SessionQueueV2", "TaskAcked", sessionId=1, taskId=1, miner=MINER),
              rows=False),  # the store builds the rows itself
        batch(5, ev(5, 0, "SessionPayment", "NodePaymentAllocated", sessionId=1, taskId=1,
                    node=MINER, amount=2**200)),  # wider than any SQL integer
    ]


def test_a_batch_survives_the_trip_intact() -> None:
    b = batch(7, ev(7, 0, "SessionV2", "TaskSubmitted", sessionId=3, taskId=4, taskData="é"),
              malformed=[Malformed(7, "0xb", "0xt", 3, "0xa", "0x22", "SessionV2",
                                   "TaskSubmitted", "data is 3 bytes")],
              unknown=2, sessions=[{"session_id": 3, "routers": ["0xr"], "active": True}])
    b.events[0].session_hint = 3
    wire = encode_batch(b)
    assert wire[:1] == b"m"
    back = decode_batch(wire)
    assert back == b
    assert back.rows is not None and isinstance(back.rows[1][0], Keys)
    # What marshal cannot carry goes as a pickle, and arrives the same.
    b.sessions[0]["seen"] = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    wire = encode_batch(b)
    assert wire[:1] == b"p" and decode_batch(wire) == b


def dump(url: str) -> dict[str, list[tuple[object, ...]]]:
    engine = make_engine(url)
    tables = ("event", "block", "task", "task_step", "task_miner", "payment", "chain_state")
    try:
        with engine.connect() as conn:
            return {t: sorted(tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {t}")))
                    for t in tables}
    finally:
        engine.dispose()


def drop_volatile(d: dict[str, list[tuple[object, ...]]]) -> dict[str, list[tuple[object, ...]]]:
    """Without chain_state.updated_at and the event ids (a PostgreSQL sequence goes on after
    the tables are emptied)."""
    cut = {"chain_state": slice(None, -1), "event": slice(1, None)}
    return {t: sorted(r[cut.get(t, slice(None))] for r in rows) for t, rows in d.items()}


def test_the_writer_process_writes_what_the_store_writes(store_url: str) -> None:
    """The same batches through the store in this process, then (after emptying the tables)
    through the writer process: the same rows, and the same counts returned."""
    engine = make_engine(store_url)
    store = Store(engine)
    try:
        store.ensure_state(CHAIN, "t", 0)
        direct_counts = [store.write_batch(b) for b in lifecycle()]
        direct = dump(store_url)
        assert check_lifecycle_copies(engine) == 2
        with engine.begin() as conn:
            for t in ("event", "block", "task", "task_step", "task_miner", "payment",
                      "chain_state"):
                conn.execute(sa.text(f"DELETE FROM {t}"))
        store.ensure_state(CHAIN, "t", 0)
        with ProcessWriter(store_url) as w:
            counts = []
            for b in lifecycle():
                if b.from_block % 2:  # encoded ahead of its turn, as the sync loop does
                    w.stage(b)
                    assert b.wire is not None
                counts.append(w.write_batch(b))
                assert b.wire is None  # not held once sent
            assert w.write_batch(lifecycle()[-1]) == 0  # a range written again: nothing new
        assert counts == direct_counts == [1, 2, 1, 1, 1]
        assert drop_volatile(dump(store_url)) == drop_volatile(direct)
        assert check_lifecycle_copies(engine) == 2
        # Loaded back for the later batches and written again, JSON columns stay values.
        t = table(Task)
        with engine.connect() as conn:
            assert conn.execute(sa.select(t.c.miners).where(t.c.task_id == 1)).scalar_one() \
                == [MINER]
            raw = conn.execute(sa.text("SELECT miners FROM task WHERE task_id = 1")).scalar_one()
        # PostgreSQL's driver reads JSON as values, SQLite's as text: never as doubly encoded.
        assert (raw if store_url.startswith("postgresql") else json.loads(raw)) == [MINER]
    finally:
        engine.dispose()


def test_an_error_in_the_child_comes_back_with_its_type(store_url: str) -> None:
    """A header without a hash breaks the block table's NOT NULL: the database's own error is
    raised here, the batch leaves nothing behind, and the writer takes the next batch."""
    engine = make_engine(store_url)
    Store(engine).ensure_state(CHAIN, "t", 0)
    bad = batch(1, ev(1, 0, "SessionV2", "TaskSubmitted", sessionId=1, taskId=1))
    bad.headers[0]["hash"] = None
    try:
        with ProcessWriter(store_url) as w:
            with pytest.raises(sa.exc.IntegrityError):
                w.write_batch(bad)
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM event")).scalar() == 0
            assert w.write_batch(lifecycle()[0]) == 1
    finally:
        engine.dispose()


def test_an_error_from_the_child_leaves_nothing_to_the_cycle_collector(store_url: str) -> None:
    """The child's error, raised here, does not keep the failed batch alive in a cycle with
    the frame that raised it: a follower meets such errors tick after tick, and the indexing
    processes run the cycle collector rarely."""
    engine = make_engine(store_url)
    Store(engine).ensure_state(CHAIN, "t", 0)
    bad = batch(1, ev(1, 0, "SessionV2", "TaskSubmitted", sessionId=1, taskId=1))
    bad.headers[0]["hash"] = None
    kept = weakref.ref(bad)
    try:
        with collector_off(), ProcessWriter(store_url) as w:
            try:
                w.write_batch(bad)
            except sa.exc.IntegrityError:
                failed = True
            del bad
            alive = kept() is not None
    finally:
        engine.dispose()
    assert failed and not alive


def fresh_sqlite(tmp_path: object, name: str) -> str:
    """A new SQLite database at the newest schema with the chain's state row."""
    from indexer.db import ensure_schema

    url = f"sqlite:///{tmp_path}/{name}"
    engine = make_engine(url)
    ensure_schema(url, engine)
    Store(engine).ensure_state(CHAIN, "t", 0)
    engine.dispose()
    return url


def test_signals_for_the_indexer_do_not_cut_a_write_short(tmp_path: object) -> None:
    """Ctrl-C reaches the whole process group: the writer ignores SIGINT and SIGTERM and goes
    on until its parent closes its input."""
    url = fresh_sqlite(tmp_path, "s.db")
    with ProcessWriter(url) as w:
        assert os.getpgid(w.pid) == w.pid != os.getpgid(0)  # Ctrl-C at a terminal: not it
        assert w.write_batch(lifecycle()[0]) == 1
        os.kill(w.pid, signal.SIGINT)
        os.kill(w.pid, signal.SIGTERM)
        assert w.write_batch(lifecycle()[1]) == 2
    assert w._proc.returncode == 0


def test_a_dead_writer_is_a_clear_error(tmp_path: object) -> None:
    """A real fault: the child is killed with SIGKILL before the next batch."""
    url = fresh_sqlite(tmp_path, "w.db")
    batches = lifecycle()
    with ProcessWriter(url) as w:
        assert w.write_batch(batches[0]) == 1
        first = w.pid
        os.kill(first, signal.SIGKILL)
        with pytest.raises(WriterFailed, match=r"writer process exited \(code -9\).*resumes"):
            w.write_batch(batches[1])
        # Retryable (following the head, the next tick goes on) with a new child.
        assert issubclass(WriterFailed, RetryableError)
        assert [w.write_batch(b) for b in batches[1:]] == [2, 1, 1, 1]
        assert w.pid != first
    engine = make_engine(url)
    try:
        assert check_lifecycle_copies(engine) == 2
    finally:
        engine.dispose()


# The writer's input stays open in a second process ("sleep"), so the writer does not see the
# end of its input when the parent dies, as when it is in the middle of a batch: only the
# kernel's parent-death signal ends it.
PARENT = """
import subprocess, sys, time
from indexer.db import ensure_schema, make_engine
from indexer.store import Batch, Store
from indexer.writer_proc import ProcessWriter
engine = make_engine(sys.argv[1])
ensure_schema(sys.argv[1], engine)
Store(engine).ensure_state(1, "t", 0)
w = ProcessWriter(sys.argv[1])
w.write_batch(Batch(chain_id=1, name="t", from_block=0, to_block=0, to_hash="0x0"))  # started
keeper = subprocess.Popen(["sleep", "60"], pass_fds=[w._in.fileno()])
print(w.pid, keeper.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_writer_dies_with_its_parent(tmp_path: object) -> None:
    """kill -9 of the process holding the writer lock takes its writer down too, so a standby
    that takes over never writes beside a leftover writer."""
    with subprocess.Popen([sys.executable, "-c", PARENT, f"sqlite:///{tmp_path}/p.db"],
                          stdout=subprocess.PIPE, text=True) as parent:
        assert parent.stdout is not None
        child, keeper = map(int, parent.stdout.readline().split())
        assert _alive(child)
        parent.kill()
    deadline = time.monotonic() + 10
    try:
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child)
    finally:
        os.kill(keeper, signal.SIGKILL)


class Recording:
    """The in-process store, noting which batches it wrote."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.blocks: list[int] = []

    def write_batch(self, b: Batch) -> int:
        self.blocks.append(b.from_block)
        return self.store.write_batch(b)


def test_batches_before_the_child_is_ready_are_written_here(store_url: str) -> None:
    """The child needs tenths of a second to start: a batch sent at once is written by the
    caller's own store, the rest by the child once it is ready; one database either way. A
    writer that never got a batch is stopped at once."""
    engine = make_engine(store_url)
    store = Store(engine)
    store.ensure_state(CHAIN, "t", 0)
    early = Recording(store)
    batches = lifecycle()
    try:
        with ProcessWriter(store_url, early=early) as w:
            counts = [w.write_batch(batches[0])]
            assert early.blocks == [1]
            assert w._check_ready(wait=True)
            counts += [w.write_batch(b) for b in batches[1:]]
        assert early.blocks == [1] and counts == [1, 2, 1, 1, 1]
        assert check_lifecycle_copies(engine) == 2
        unused = ProcessWriter(store_url, early=early)
        t0 = time.monotonic()
        unused.close()
        assert time.monotonic() - t0 < 1 and unused._proc.returncode == -signal.SIGKILL
    finally:
        engine.dispose()


def test_sqlite_pages_reach_the_database_file_while_writing(tmp_path: object) -> None:
    """The child's commits leave their pages in the WAL; its checkpoint thread copies them into
    the database file as it goes (not only when the last connection closes). The file is read
    on its own, WAL ignored."""
    import sqlite3

    url = fresh_sqlite(tmp_path, "c.db") + "?timeout=30"  # a query string is not the file's
    path = url.split("///", 1)[1].split("?")[0]

    def in_file() -> int:
        with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as c:
            return int(c.execute("SELECT count(*) FROM event").fetchone()[0])

    with ProcessWriter(url) as w:
        written = sum(w.write_batch(b) for b in lifecycle())
        deadline = time.monotonic() + 10
        while in_file() < written and time.monotonic() < deadline:
            time.sleep(0.02)
        assert in_file() == written == 6


def test_a_prestarted_writer_is_adopted(tmp_path: object) -> None:
    """`corlens index` starts the writer process before loading anything else; the next
    ProcessWriter takes that one rather than starting another. An in-memory database gets
    none: no other process could reach it."""
    from indexer import writer_start

    assert writer_start.in_process_only("sqlite://")
    assert writer_start.in_process_only("sqlite:///:memory:")
    assert writer_start.in_process_only("sqlite:///file:x?mode=memory&cache=shared")
    assert writer_start.in_process_only("sqlite:///file::memory:?cache=shared&uri=true")
    assert not writer_start.in_process_only(f"sqlite:///{tmp_path}/a.db")
    assert not writer_start.in_process_only("postgresql+psycopg://u@h/db")
    writer_start.prestart("sqlite://")
    assert writer_start.take_prestarted() is None
    # The console script starts one before the config is read (api.entry); an in-memory
    # database then stops it.
    writer_start.prestart()
    early = writer_start._prestarted[0]
    writer_start.prestart("sqlite:///:memory:")
    assert writer_start.take_prestarted() is None
    assert early.poll() is not None and early.stdin is not None and early.stdin.closed
    # A database on disk keeps it: the same process is adopted, told the URL only then.
    writer_start.prestart()
    early_pid = writer_start._prestarted[0].pid
    url = fresh_sqlite(tmp_path, "a.db")
    writer_start.prestart(url)
    assert [p.pid for p in writer_start._prestarted] == [early_pid]
    with ProcessWriter(url) as w:
        assert w.pid == early_pid and writer_start.take_prestarted() is None
        assert w.write_batch(lifecycle()[0]) == 1


def test_a_package_of_the_same_name_where_corlens_runs_is_not_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child does not put the working directory on its import path: an `indexer`
    directory there can neither shadow the package nor see the database URL."""
    url = fresh_sqlite(tmp_path, "p.db")
    shadow = tmp_path / "indexer"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise SystemExit('shadowed')\n")
    monkeypatch.chdir(tmp_path)
    with ProcessWriter(url) as w:
        assert w.write_batch(lifecycle()[0]) == 1
