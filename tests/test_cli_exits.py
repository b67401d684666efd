"""The CLI's exit statuses and messages: a database that is down or behind the code (the same
for every command: 2 and `config database_url` for a server that does not answer, 1 and what to
run for an outdated schema, never a driver's raw message), a writer lock held by another
indexer."""

from __future__ import annotations

import os
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
