"""The CLI's exit statuses and messages: a database that is down or behind the code (the same
for every command: 2 and `config database_url` for a server that does not answer, 1 and what to
run for an outdated schema, never a driver's raw message), a writer lock held by another
indexer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devnet.anvil import free_port
from indexer.lock import WriterLock
from tests.indexing import write_config
from tests.test_indexer_process import run_cli

ADDRS = {"SessionV2": "0x" + "11" * 20, "CognitiveV1": "0x" + "22" * 20}


def test_a_database_server_that_is_down_is_said_alike_by_every_command(tmp_path: Path) -> None:
    down = write_config(
        tmp_path / "d.yaml",
        "http://127.0.0.1:9",
        ADDRS,
        "postgresql+psycopg://postgres@127.0.0.1:9/nope",
    )
    for command in (["db", "upgrade"], ["keys", "list"], ["index", "--once"]):
        r = run_cli(*command, "--config", down)
        assert r.returncode == 2, (command, r.stderr)
        assert "error: config database_url: cannot connect" in r.stderr, (command, r.stderr)
        assert "sqlalche.me" not in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_an_outdated_schema_is_a_run_time_failure_saying_what_to_run(
    tmp_path: Path, pg_url: str
) -> None:
    old = write_config(tmp_path / "o.yaml", "http://127.0.0.1:9", ADDRS, pg_url)
    serve = ["serve", "--no-indexer", "--port", str(free_port())]
    for command in (["index", "--once"], ["keys", "list"], serve):
        r = run_cli(*command, "--config", old)
        assert r.returncode == 1, (command, r.stderr)
        assert "error: database_url: schema is at revision none" in r.stderr, r.stderr
        assert "run `corlens db upgrade`" in r.stderr and "config" not in r.stderr, r.stderr
    assert run_cli("db", "upgrade", "--config", old).returncode == 0


def test_index_once_does_not_wait_for_a_writer_lock_another_indexer_holds(tmp_path: Path) -> None:
    """A one-shot backfill ends at once, naming the holder (exit 1); with --json nothing but
    JSON reaches stdout (here nothing)."""
    db = f"sqlite:///{tmp_path}/l.db"
    cfg = write_config(tmp_path / "l.yaml", "http://127.0.0.1:9", ADDRS, db)
    lock = WriterLock(db, 31337)
    assert lock.try_acquire()
    try:
        r = run_cli("index", "--once", "--json", "--config", cfg, timeout=60)
    finally:
        lock.release()
    assert r.returncode == 1, r.stderr
    assert f"local: the writer lock is held by corlens-indexer pid={os.getpid()}" in r.stderr
    assert "without --once to wait" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""


def test_a_shorter_progress_line_on_a_terminal_covers_the_longer_one() -> None:
    """On a terminal each line overwrites the last after "\\r": a shorter one is padded, or the
    longer line's tail stays on screen ("ETA 10s" then "ETA 9ss")."""
    code = (
        "from api.cli import ProgressPrinter\n"
        "from indexer.sync import Progress\n"
        "p = ProgressPrinter(every=0)\n"
        "p(Progress('local', 10, 1000, 10, 1000, 5000, 1.0))\n"
        "import time; time.sleep(0.3)\n"
        "p(Progress('local', 20, 1000, 20, 1000, 5000, 10.0))\n"
        "time.sleep(0.3)\n"
        "p(Progress('local', 1000, 1000, 1000, 1000, 5000, 99.0))\n"
    )
    env = {**os.environ, "TTY_COMPATIBLE": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=60)
    stderr = run.stderr.decode()  # not text=True: universal newlines would turn "\r" into "\n"
    assert run.returncode == 0, stderr
    first, second, last = stderr.split("\r")
    assert "5,000 ev/s, ETA 99s" in first and "500 ev/s, ETA 490s" in second, stderr
    assert len(second) >= len(first) and len(last.rstrip("\n")) >= len(second), stderr
