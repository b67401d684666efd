"""The `corlens` CLI as a user runs it: real processes, kill -9, a standby writer, bad input."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import sqlalchemy as sa

from devnet.anvil import Anvil, free_port
from devnet.deploy import deploy_all
from devnet.scenario import run_scenario
from indexer.db import make_engine
from tests.indexing import devnet_settings, dump, index, write_config
from tests.test_indexer_chain import more_tasks

# The console script's own entry point: `index` starts its writer process there, first.
CORLENS = [sys.executable, "-m", "api.entry"]
ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CORLENS, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CORLENS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def cursor(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            v = conn.execute(sa.text("SELECT cursor_block FROM chain_state")).scalar()
        return int(v) if v is not None else -1
    except sa.exc.OperationalError:
        return -1
    except sa.exc.ProgrammingError:
        return -1
    finally:
        engine.dispose()


class LineReader:
    """Collects a process's stderr lines on a thread so a test can wait for one."""

    def __init__(self, stream: IO[str]) -> None:
        import threading

        self.lines: list[str] = []
        self._t = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._t.start()

    def _run(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)


@pytest.fixture
def devnet(anvil: Anvil) -> Iterator[tuple[Anvil, Any, Any]]:
    dep = deploy_all(anvil.url)
    ledger = run_scenario(anvil.url, dep, seed=4, sessions=2, tasks_per_session=3)
    yield anvil, dep, ledger


def test_kill_9_during_backfill_then_restart(devnet: Any, store_url: str, tmp_path: Path
                                             ) -> None:
    node, dep, _ = devnet
    head = int(node.rpc("eth_blockNumber"), 16)
    cfg = write_config(tmp_path / "c.yaml", node.url, dep.addresses, store_url,
                       start_block=dep.start_block, max_block_range=1)
    proc = start_cli("index", "--once", "--config", cfg)
    try:
        mid = dep.start_block + (head - dep.start_block) // 3
        wait_for(lambda: cursor(store_url) >= mid, 60, "a third of the backfill")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    stopped = cursor(store_url)
    assert mid <= stopped < head, "the kill should land mid-backfill"
    done = run_cli("index", "--once", "--config", cfg, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["cursor"] == head
    engine = make_engine(store_url)
    fresh = devnet_settings(node.url, dep.addresses, f"sqlite:///{tmp_path}/fresh.db",
                            start_block=dep.start_block)
    index(fresh)
    fresh_engine = make_engine(fresh.database_url)
    try:
        assert dump(engine) == dump(fresh_engine)
    finally:
        engine.dispose()
        fresh_engine.dispose()


def test_standby_writer_takes_over_after_kill_9(devnet: Any, store_url: str, tmp_path: Path
                                               ) -> None:
    node, dep, ledger = devnet
    cfg = write_config(tmp_path / "c.yaml", node.url, dep.addresses, store_url,
                       start_block=dep.start_block, poll_interval=0.2)
    head = int(node.rpc("eth_blockNumber"), 16)
    holder = start_cli("index", "--config", cfg)
    standby = None
    try:
        wait_for(lambda: cursor(store_url) >= head, 60, "the first writer to catch up")
        standby = start_cli("index", "--config", cfg)
        assert standby.stderr is not None
        lines = LineReader(standby.stderr)
        wait_for(lambda: lines.has("standby"), 30, "the second writer to go standby")
        line = next(x for x in lines.lines if "standby" in x)
        assert f"pid={holder.pid}" in line, line
        time.sleep(0.5)
        assert not lines.has("writer lock acquired")
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        more_tasks(node.url, dep, ledger, "late", n=1)
        new_head = int(node.rpc("eth_blockNumber"), 16)
        wait_for(lambda: cursor(store_url) >= new_head, 60, "the standby to take over")
        assert lines.has("writer lock acquired")
        standby.send_signal(signal.SIGTERM)
        assert standby.wait(30) == 0
    finally:
        for p in (holder, standby):
            if p is not None and p.poll() is None:
                p.kill()
            if p is not None:
                p.communicate()


def test_cli_errors_name_what_to_fix(anvil: Anvil, tmp_path: Path, pg_url: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("chains:\n  - {name: x, preset: local, rpc_urls: ['ftp://nope']}\n")
    r = run_cli("index", "--once", "--config", str(bad))
    assert r.returncode == 2 and "chains[x].rpc_urls" in r.stderr and "Traceback" not in r.stderr

    r = run_cli("index", "--once", "--config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "--config" in r.stderr

    addrs = {"SessionV2": "0x" + "11" * 20, "CognitiveV1": "0x" + "22" * 20}
    wrong = write_config(tmp_path / "w.yaml", anvil.url, addrs, f"sqlite:///{tmp_path}/w.db",
                         chain_id=5, preset=None)
    r = run_cli("index", "--once", "--config", wrong)
    assert r.returncode == 2 and "chains[local].chain_id" in r.stderr, r.stderr
    assert "reports chain 31337" in r.stderr

    # No contract at the SessionV2 address (an address of another chain, say): its getters
    # answer nothing, which names the key to check rather than failing on the empty answer.
    nocode = write_config(tmp_path / "n.yaml", anvil.url, addrs, f"sqlite:///{tmp_path}/n.db")
    r = run_cli("index", "--once", "--config", nocode)
    assert r.returncode == 2 and "contracts.SessionV2.address" in r.stderr, r.stderr
    assert "getSessionQueueAddress() at 0x1111" in r.stderr and "Traceback" not in r.stderr

    dead = write_config(tmp_path / "d.yaml", "http://127.0.0.1:9/secret-key", addrs,
                        f"sqlite:///{tmp_path}/d.db", rpc_timeout=0.5)
    env_fast = dict(os.environ)
    r = subprocess.run([*CORLENS, "index", "--once", "--config", dead], capture_output=True,
                       text=True, timeout=120, cwd=ROOT, env=env_fast)
    assert r.returncode == 1 and "Check that the node is running" in r.stderr, r.stderr
    assert "secret-key" not in r.stderr and "Traceback" not in r.stderr

    old = write_config(tmp_path / "o.yaml", anvil.url, addrs, pg_url)
    r = run_cli("index", "--once", "--config", old)
    assert r.returncode == 1 and "corlens db upgrade" in r.stderr, r.stderr
    up = run_cli("db", "upgrade", "--config", old)
    assert up.returncode == 0, up.stderr

    for name in ("nope", ""):  # an empty name is no chain, not every chain
        r = run_cli("index", "--once", "--config", old, "--chain", name)
        assert r.returncode == 2 and "--chain" in r.stderr and "local" in r.stderr

    # Wider than the BIGINT column: refused by the argument's bounds, not by the database.
    r = run_cli("verify", "task", "local", str(2**64), "0", "--config", old)
    assert r.returncode == 2 and "'session'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # A directory that cannot be made, a file that is no database, a server's start-up.
    for url in ("sqlite:////proc/nope/x.db", f"sqlite:///{bad}"):
        cfg = write_config(tmp_path / "u.yaml", anvil.url, addrs, url)
        r = run_cli("index", "--once", "--config", cfg)
        assert r.returncode == 2 and "database_url" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    down = write_config(tmp_path / "s.yaml", anvil.url, addrs,
                        "postgresql://postgres@127.0.0.1:9/nope")
    r = run_cli("serve", "--no-indexer", "--config", down, "--port", str(free_port()))
    assert r.returncode == 2 and "database_url: cannot connect" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    memory = write_config(tmp_path / "mem.yaml", anvil.url, addrs, "sqlite://")
    r = run_cli("serve", "--no-indexer", "--config", memory, "--port", str(free_port()))
    assert r.returncode == 2 and "cannot be served" in r.stderr, r.stderr
    for command in ("serve", "gateway"):  # a name that resolves to nothing: a usage error
        r = run_cli(command, "--host", "999.1.1.1", "--config", down)
        assert r.returncode == 2 and "--host: cannot listen on '999.1.1.1'" in r.stderr, r.stderr
    with socket.socket() as taken:  # a port in use: said before the server starts
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for command in ("serve", "gateway"):
            r = run_cli(command, "--port", port, "--config", down)
            assert r.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in r.stderr, r.stderr
            assert "--port" in r.stderr and "Traceback" not in r.stderr


def test_a_contract_address_without_code_is_refused_before_anything_is_stored(
        devnet: Any, tmp_path: Path) -> None:
    """A CognitiveV1 address with no code (another chain's, say) would index no network task
    without a word, and the cursor would pass its history: the run stops first, naming the
    key, and the corrected config then indexes everything."""
    node, dep, _ = devnet
    wrong = {**dep.addresses, "CognitiveV1": "0x" + "22" * 20}
    db = f"sqlite:///{tmp_path}/w.db"
    cfg = write_config(tmp_path / "w.yaml", node.url, wrong, db, start_block=dep.start_block)
    r = run_cli("index", "--once", "--config", cfg)
    assert r.returncode == 2, r.stderr
    assert "contracts.CognitiveV1.address" in r.stderr and "no contract code" in r.stderr
    assert "Traceback" not in r.stderr
    cfg = write_config(tmp_path / "w.yaml", node.url, dep.addresses, db,
                       start_block=dep.start_block)
    r = run_cli("index", "--once", "--json", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["network_tasks"] > 0


def test_a_replacement_payment_abi_is_mapped_in_config(devnet: Any, tmp_path: Path) -> None:
    """SessionPayment's interface is assumed (abis/README.md): a user with the real ABI drops
    the file in and maps its events in config. Here the file names the allocation's arguments
    otherwise (same types, so the same topic0); mapped back, the payments equal those indexed
    with corlens's own ABI. A mapping that matches nothing is refused, naming its key."""
    import sqlite3

    node, dep, _ = devnet
    abi = json.loads((ROOT / "abis" / "SessionPayment.json").read_text())
    theirs = {"sessionId": "sid", "taskId": "tid", "node": "miner", "amount": "value"}
    for item in abi:
        if item.get("name") == "NodePaymentAllocated":
            for p in item["inputs"]:
                p["name"] = theirs[p["name"]]
    (tmp_path / "real.json").write_text(json.dumps(abi))
    mapped = {"NodePaymentAllocated": {"event": "NodePaymentAllocated", "args": theirs}}

    def run(name: str, payment: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        contracts = {"SessionV2": {"address": dep.addresses["SessionV2"]},
                     "CognitiveV1": {"address": dep.addresses["CognitiveV1"]},
                     "SessionPayment": {"address": dep.addresses["SessionPayment"], **payment}}
        cfg = write_config(tmp_path / f"{name}.yaml", node.url, dep.addresses,
                           f"sqlite:///{tmp_path}/{name}.db", start_block=dep.start_block,
                           contracts=contracts)
        return run_cli("index", "--once", "--config", cfg)

    def payments(name: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(tmp_path / f"{name}.db")) as c:
            return c.execute("SELECT * FROM payment ORDER BY block_number, log_index").fetchall()

    assert run("own", {}).returncode == 0
    r = run("real", {"abi": str(tmp_path / "real.json"), "events": mapped})
    assert r.returncode == 0, r.stderr
    assert payments("real") == payments("own")
    assert any(p[3] == "allocation" and p[6] for p in payments("real"))  # node from "miner"
    key = "chains[local].contracts.SessionPayment.events"
    typo = {"NodePaymentAllocated": {"event": "NodePaymentAllocated",
                                     "args": {**theirs, "node": "minr"}}}
    unknown = {"NodePaymentAllocated": {"event": "NodePaymentAllocated",
                                        "args": {**theirs, "nope": "miner"}}}
    for bad, problem in (({"NodePaymentAllocated": {"event": "Allocated"}}, "no event named"),
                         ({"Bogus": {"event": "NodePaymentAllocated"}}, "projects no"),
                         (typo, "has no argument 'minr'"), (unknown, "no argument of this")):
        r = run("bad", {"abi": str(tmp_path / "real.json"), "events": bad})
        assert r.returncode == 2 and key in r.stderr and problem in r.stderr, r.stderr
    r = run("gone", {"abi": "nope.json"})  # a missing ABI file names the contract's key
    assert r.returncode == 2 and "config chains[local].contracts.SessionPayment.abi: " in \
        r.stderr and "nope.json: ABI file not found" in r.stderr, r.stderr


def test_index_into_a_database_in_memory_writes_in_process(devnet: Any, tmp_path: Path
                                                          ) -> None:
    """The console script starts the writer process before the config is read; a database in
    memory cannot be reached from it, so it is stopped and the run writes in-process, from
    a worker thread that shares the loop's one connection (a connection of its own would open
    an empty database)."""
    node, dep, _ = devnet
    cfg = write_config(tmp_path / "m.yaml", node.url, dep.addresses, "sqlite://",
                       start_block=dep.start_block)
    r = run_cli("index", "--once", "--json", "--config", cfg)
    assert r.returncode == 0, r.stderr
    (summary,) = json.loads(r.stdout)
    assert summary["cursor"] == int(node.rpc("eth_blockNumber"), 16)
    assert summary["tasks"] == 6 and summary["events"] > 0
    assert "Traceback" not in r.stderr
    assert not (ROOT / "sqlite:").exists()  # no directory made for a file that is not one


def test_demo_runs_and_summarises(tmp_path: Path) -> None:
    r = run_cli("demo", "--workdir", str(tmp_path / "demo"), "--json", "--no-serve", timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["tasks"] == 8 and summary["sessions"] == 2
    assert summary["network_tasks"] >= 2 and summary["payments"] > 0 and summary["events"] > 100
    assert summary["malformed"] == 0 and summary["cursor"] > 0
    assert (tmp_path / "demo" / "demo.yaml").exists()


def test_follow_stops_on_a_reorg_deeper_than_allowed(devnet: Any, tmp_path: Path) -> None:
    node, dep, _ = devnet
    db = f"sqlite:///{tmp_path}/r.db"
    cfg = write_config(tmp_path / "c.yaml", node.url, dep.addresses, db,
                       start_block=dep.start_block, poll_interval=0.2, max_reorg_depth=4)
    head = int(node.rpc("eth_blockNumber"), 16)
    proc = start_cli("index", "--config", cfg)
    try:
        wait_for(lambda: cursor(db) >= head, 60, "the writer to catch up")
        node.rpc("anvil_reorg", [30, []])
        assert proc.wait(30) == 1
        _, err = proc.communicate()
        assert "deeper than the allowed 4" in err and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_resumed_backfill_says_its_progress_is_this_runs(devnet: Any, tmp_path: Path) -> None:
    """A second run starts at the cursor: its percentage and ETA count this run's blocks, and
    the line says so (not "block 100/110 (10%)")."""
    node, dep, ledger = devnet
    db = f"sqlite:///{tmp_path}/r.db"
    cfg = write_config(tmp_path / "c.yaml", node.url, dep.addresses, db,
                       start_block=dep.start_block, max_block_range=1)
    first = run_cli("index", "--once", "--config", cfg)
    assert first.returncode == 0, first.stderr
    resumed_at = cursor(db)
    more_tasks(node.url, dep, ledger, "resume")
    head = int(node.rpc("eth_blockNumber"), 16)
    again = run_cli("index", "--once", "--config", cfg)
    assert again.returncode == 0, again.stderr
    lines = [x for x in again.stderr.splitlines() if x.startswith("local: block ")]
    assert lines[0].startswith(
        f"local: block {resumed_at + 1:,}/{head:,}; this run 1/{head - resumed_at:,} blocks ("
    ), lines
    assert lines[-1].startswith(
        f"local: block {head:,}/{head:,}; this run {head - resumed_at:,}/{head - resumed_at:,} "
        "blocks (100.0%)"
    ), lines
