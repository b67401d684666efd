"""What the indexer benchmark's targets leave for corlens's own work, measured in the same run.

A target of 2.5x the floor allows ``2.5 * floor`` seconds of wall time: on a machine with ``n``
cores, at most ``n * 2.5 * floor`` CPU seconds for everything that runs meanwhile, anvil and the
database included. Measured here with no corlens code in the loop:

* anvil serving the logs (its CPU while the floor's ranges are read once more) and the client
  reading them (parsed with orjson, as the indexer does: the floor itself uses json);
* anvil serving the senders of the step transactions (a step's actor is the transaction's
  sender when its log does not name it), by the cheapest of three JSON-RPC methods that give
  it, the client only reading the raw answers (no JSON parsing);
* starting a Python process and importing the least an indexer needs (sqlite3, httpx, orjson);
* the database's own work for corlens's rows as it stores them: Python's ``sqlite3`` inserting
  the SQLite index's rows (every indexer table, its own schema and pragmas) in transactions of
  5,000 rows each, or PostgreSQL's COPY of the same rows. This part is corlens's design, not a
  floor: a leaner schema (no JSON copies of the decoded args, no separate task_step rows, fewer
  indexes) would cost less.

What is left of the budget is all that remains for decoding, the projections and the pipeline;
corlens's own decoding of the same logs is measured too, for scale.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

JSON = {"content-type": "application/json"}
ROWS_PER_TX = 5_000
TABLES = ("block", "event", "task", "task_step", "task_miner", "payment")  # those with rows
BATCH = 100  # JSON-RPC calls per batch, as the indexer's RpcClient sends them
IMPORTS = "import sqlite3, httpx, orjson"  # what an indexer needs at least (no SQLAlchemy)


def _stat(path: Path) -> list[str]:
    """The fields of a /proc/<pid>/stat file after "(comm)": state, ppid, ..., utime, stime,
    cutime, cstime (indices 0, 1, ..., 11, 12, 13, 14)."""
    return path.read_text().rsplit(")", 1)[1].split()


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants, the ones that
    ended and were waited for included, from /proc (anvil from node_modules is a Node.js
    launcher with the anvil binary as its child; PostgreSQL runs a process per connection)."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = _stat(entry / "stat")
            except OSError:  # it ended meanwhile
                continue
    children: dict[int, list[int]] = {}
    for p, f in stats.items():
        children.setdefault(int(f[1]), []).append(p)
    todo, total = [pid], 0
    while todo:
        p = todo.pop()
        if p in stats:
            total += sum(int(x) for x in stats[p][11:15])
        todo += children.get(p, [])
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Part:
    label: str
    node_cpu: float  # anvil's CPU seconds
    own_cpu: float  # the measuring process's CPU seconds (or the child's)
    note: str = ""

    @property
    def cpu(self) -> float:
        return self.node_cpu + self.own_cpu


def server_pid(url: str) -> int | None:
    """The PostgreSQL server's main process (the parent of this connection's backend), when
    it runs on this machine."""
    with psycopg.connect(url) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
    try:
        return int(_stat(Path(f"/proc/{backend[0]}/stat"))[1])
    except (OSError, TypeError):
        return None


def _measured(anvil_pid: int, fn: Callable[[], Any]) -> tuple[float, float, Any]:
    a, c = proc_cpu(anvil_pid), time.process_time()
    out = fn()
    return proc_cpu(anvil_pid) - a, time.process_time() - c, out


def read_logs(url: str, address: str, ranges: list[tuple[int, int]]) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = []
    with httpx.Client(timeout=120.0) as client:
        for i, (lo, hi) in enumerate(ranges):
            body = json.dumps({"jsonrpc": "2.0", "id": i, "method": "eth_getLogs",
                               "params": [{"fromBlock": hex(lo), "toBlock": hex(hi),
                                           "address": [address]}]})
            logs += orjson.loads(client.post(url, content=body, headers=JSON).content)["result"]
    return logs


def read_raw(url: str, calls: list[tuple[str, list[Any]]]) -> int:
    """Send ``calls`` in JSON-RPC batches, one at a time; bytes read."""
    size = 0
    with httpx.Client(timeout=120.0) as client:
        for lo in range(0, len(calls), BATCH):
            body = json.dumps([{"jsonrpc": "2.0", "id": lo + j, "method": m, "params": p}
                               for j, (m, p) in enumerate(calls[lo:lo + BATCH])])
            size += len(client.post(url, content=body, headers=JSON).content)
    return size


def sender_topics() -> set[str]:
    """topic0 of every step event whose actor is its transaction's sender."""
    from indexer.abi import abi_path, events_of, load_abi
    from indexer.project import SENDER_STEPS

    contracts = {c for c, _ in SENDER_STEPS}
    return {s.topic0 for c in contracts for s in events_of(c, load_abi(abi_path(c, None)))
            if (c, s.name) in SENDER_STEPS}


def import_cpu() -> float:
    """CPU seconds of a fresh interpreter importing :data:`IMPORTS` (a child process)."""
    before = os.times()
    subprocess.run([sys.executable, "-c", IMPORTS], check=True)
    after = os.times()
    return (after.children_user - before.children_user
            + after.children_system - before.children_system)


def index_rows(db_path: str) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of the SQLite index ``db_path``, by table (:data:`TABLES`)."""
    src = sqlite3.connect(db_path)
    try:
        return {t: src.execute(f"SELECT * FROM {t}").fetchall() for t in TABLES}
    finally:
        src.close()


def sqlite_inserts(db_path: str) -> dict[str, tuple[int, float]]:
    """Per indexer table of ``db_path``: its row count, and the CPU seconds of inserting those
    rows into an empty copy of its schema with plain sqlite3."""
    src = sqlite3.connect(db_path)
    schema = [(t, sql) for t, sql in src.execute(
        "SELECT tbl_name, sql FROM sqlite_schema WHERE sql IS NOT NULL "
        "AND name NOT LIKE 'sqlite_%' ORDER BY type DESC")]  # tables first, then indexes
    src.close()
    data = index_rows(db_path)
    with tempfile.TemporaryDirectory(prefix="corlens-budget-") as tmp:
        dst = sqlite3.connect(f"{tmp}/copy.db", isolation_level=None)
        for pragma in ("page_size=32768", "journal_mode=WAL", "synchronous=NORMAL",
                       "cache_size=-32768"):
            dst.execute(f"PRAGMA {pragma}")
        for _, sql in schema:
            dst.execute(sql)
        got = {}
        for t in TABLES:
            rows = data[t]
            t0 = time.process_time()
            for lo in range(0, len(rows), ROWS_PER_TX):
                dst.execute("BEGIN")
                dst.executemany(f"INSERT INTO {t} VALUES ({','.join('?' * len(rows[0]))})",
                                rows[lo:lo + ROWS_PER_TX])
                dst.execute("COMMIT")
            got[t] = (len(rows), time.process_time() - t0)
        dst.close()
    return got


def pg_copies(db_url: str, sqlite_db: str) -> tuple[float, float]:
    """(server CPU s, client CPU s) of COPYing the SQLite index's rows into the indexer tables
    of the PostgreSQL database ``db_url`` (which holds the same index: its tables are emptied
    first), one transaction per 5,000 rows: PostgreSQL's own work for these rows at its
    cheapest, no conflict handling."""
    data = index_rows(sqlite_db)
    server = server_pid(db_url)
    if server is None:
        return 0.0, 0.0
    with psycopg.connect(db_url) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)}")
        conn.commit()
        node, own = proc_cpu(server), time.process_time()
        for t, rows in data.items():
            for lo in range(0, len(rows), ROWS_PER_TX):
                with conn.cursor().copy(f"COPY {t} FROM STDIN") as copy:
                    for row in rows[lo:lo + ROWS_PER_TX]:
                        copy.write_row(row)
                conn.commit()
        return proc_cpu(server) - node, time.process_time() - own


def decode_cpu(logs: list[dict[str, Any]], address: str) -> float:
    """CPU seconds of corlens's own decoders over ``logs`` (for scale: not part of the floor)."""
    from indexer.abi import abi_path, events_of, load_abi
    from indexer.decode import Registry

    reg = Registry()
    for c in ("SessionV2", "SessionQueueV2", "SessionPayment", "NodePool"):
        reg.add(address, events_of(c, load_abi(abi_path(c, None))))
    t0 = time.process_time()
    res = reg.decode_logs(logs)
    cpu = time.process_time() - t0
    if len(res.events) != len(logs):
        raise SystemExit(f"decoded {len(res.events)} of {len(logs)} logs")
    return cpu


def measure(
    url: str, anvil_pid: int, address: str, ranges: list[tuple[int, int]], sqlite_db: str
) -> tuple[list[Part], float, dict[str, tuple[int, float]]]:
    """The parts above, corlens's decoding CPU seconds for scale, and per table the rows and
    CPU seconds of their plain sqlite3 inserts."""
    parts: list[Part] = []
    node, own, logs = _measured(anvil_pid, lambda: read_logs(url, address, ranges))
    parts.append(Part(f"eth_getLogs, {len(ranges)} calls", node, own, "anvil + reading the JSON"))
    wanted = sender_topics()
    steps = [lg for lg in logs if lg["topics"] and lg["topics"][0] in wanted]
    txs = sorted({lg["transactionHash"] for lg in steps})
    blocks = sorted({lg["blockNumber"] for lg in steps})
    ways = {
        "eth_getTransactionReceipt": [("eth_getTransactionReceipt", [h]) for h in txs],
        "eth_getTransactionByHash": [("eth_getTransactionByHash", [h]) for h in txs],
        "eth_getBlockReceipts": [("eth_getBlockReceipts", [b]) for b in blocks],
    }
    costs = {}
    for name, calls in ways.items():
        node, own, size = _measured(anvil_pid, lambda calls=calls: read_raw(url, calls))
        costs[name] = (node + own, node, own, len(calls), size)
    best = min(costs, key=lambda k: costs[k][0])
    _, node, own, n, size = costs[best]
    others = ", ".join(f"{k} {v[0]:.2f}" for k, v in costs.items() if k != best)
    parts.append(Part(f"senders of {len(txs):,} txs: {n:,} x {best}", node, own,
                      f"{size / 1e6:.0f} MB unparsed; others: {others} CPU s"))
    parts.append(Part("python start + imports (" + IMPORTS.split(" ", 1)[1] + ")", 0.0,
                      import_cpu()))
    tables = sqlite_inserts(sqlite_db)
    rows = ", ".join(f"{n:,} {t} {cpu:.2f}" for t, (n, cpu) in tables.items() if n)
    parts.append(Part("sqlite3 inserts of corlens's rows, as it stores them", 0.0,
                      sum(cpu for _, cpu in tables.values()), f"rows and CPU s: {rows}"))
    return parts, decode_cpu(logs, address), tables


def _budget(floor: float, target: float) -> tuple[int, float]:
    """(cores, the CPU seconds they have in ``target`` x ``floor`` seconds of wall time)."""
    cores = os.cpu_count() or 1
    return cores, cores * target * floor


def report_pg(copies: tuple[float, float], parts: list[Part], floor: float,
              target: float) -> None:
    """PostgreSQL's case: the same reads and start as ``parts`` (from :func:`measure`), with
    the server's COPY of the rows in place of SQLite's inserts."""
    cores, budget = _budget(floor, target)
    reads = sum(p.cpu for p in parts[:-1])  # all but the SQLite rows, measure()'s last part
    used = reads + sum(copies)
    print(f"PostgreSQL: {cores} x {target}x the floor = {budget:.2f} CPU s; the same reads and "
          f"start ({reads:.2f}) and COPY of the same rows (server "
          f"{copies[0]:.2f}, client {copies[1]:.2f}) = {used:.2f} CPU s, {used / budget:.0%} of "
          f"it; left: {budget - used:.2f} CPU s")


def report(parts: list[Part], decode: float, floor: float, target: float) -> None:
    cores, budget = _budget(floor, target)
    used = sum(p.cpu for p in parts)
    print(f"\nCPU budget at the SQLite target: {cores} cores x {target}x the {floor:.3f} s floor "
          f"= {budget:.3f} CPU s. The reads and the start at their cheapest, corlens's rows as "
          f"it stores them (a leaner schema would cost less; bench/budget.py):")
    print(f"{'part':<62}{'anvil':>7}{'client':>8}{'total':>7}")
    for p in parts:
        print(f"{p.label:<62}{p.node_cpu:>7.2f}{p.own_cpu:>8.2f}{p.cpu:>7.2f}  {p.note}")
    print(f"{'sum':<77}{used:>7.2f}  {used / budget:.0%} of the budget")
    print(f"left for decoding, projections and the pipeline: {budget - used:.2f} CPU s "
          f"(corlens's decoders alone take {decode:.2f} s for these logs), with both cores busy "
          f"from start to end")

