"""Indexer throughput against a floor measured in the same run.

    python bench/indexer.py [--events 100000] [--blocks 10000] [--pg-url URL] [--profile FILE]

One anvil, one BulkEmitter emitting the real Cortensor signatures (SessionV2 TaskSubmitted,
the SessionQueueV2 task lifecycle, SessionPayment NodePaymentAllocated): per task 8 logs, spread
over at least ``--blocks`` blocks. Then, over the range ``corlens`` indexes (block 0 to the head):

* the floor: a minimal loop of raw ``eth_getLogs`` (httpx, JSON parsed, logs counted), once with
  the indexer's own range planner and once in fixed 2,000-block chunks, best of three each;
* ``corlens index --once --json`` as a subprocess, end to end (start, imports, migrations, sync),
  into SQLite, then into a fresh PostgreSQL database when the server answers.

Then the ceiling (bench/ceiling.py): the leanest loop we could write, doing strictly less than
``corlens index`` must, over the same chain, and from it the least wall time an indexer doing
what corlens must could take on this machine.

Prints events/s, the ratio to the floor and the child's peak RSS against the targets, anvil's
CPU during each run, and the CPU budget the targets leave (bench/budget.py); fails loudly when
an index (corlens's or the ceiling's) does not hold exactly the generated events. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa

from devnet.anvil import Anvil
from devnet.chain import Chain, load_abi

REPO = Path(__file__).resolve().parent.parent
CORLENS = Path(sys.executable).parent / "corlens"  # the console script of this venv
LOGS_PER_TASK = 8  # TaskSubmitted + emitTaskLifecycles' 7
SESSIONS = 50  # tasks are spread over this many session ids
SENDERS = 20  # anvil's unlocked accounts; one tx per account per JSON-RPC batch keeps nonces sane
MAX_TASKS_PER_CALL = 200  # keeps one call's gas (below) far under anvil's 30M block gas limit
FIXED_CHUNK = 2_000  # blocks per eth_getLogs in the fixed-chunk floor
FLOOR_RUNS = 3  # the floor is the best of this many runs (a low floor is the strict one)
# Projection rows an indexer must store beside the raw events (task_step, a copy of the task
# rows' steps, is left out): their plain sqlite3 inserts count towards the least wall time.
PROJECTION_TABLES = ("block", "task", "task_miner", "payment")
# Each step transaction's sender, as an index stores it (corlens's or the ceiling's).
SENDERS_SQL = "SELECT DISTINCT tx_hash, sender FROM event WHERE sender IS NOT NULL"
TARGETS = {"sqlite": 2.5, "postgresql": 3.0}  # end to end / floor, from the issue
RSS_TARGET_MB = 300.0
PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
JSON = {"content-type": "application/json"}


def gas_for(logs: int) -> str:
    # A fixed limit skips eth_estimateGas; measured cost is ~2-4k gas per log plus ~22k base.
    return hex(60_000 + 8_000 * logs)


def generate(url: str, events: int, blocks: int) -> tuple[str, int, int]:
    """Deploy BulkEmitter and emit exactly ``events`` logs over at least ``blocks`` blocks.

    Tasks 1..n get TaskSubmitted then their lifecycle (a pair of calls from one sender, so nonce
    order keeps them in order); ``events % 8`` extra TaskQueued finish the count. After each
    round of batches empty blocks are mined up to a linear schedule, so logs spread evenly.
    Returns (address, tasks, head).
    """
    with Chain(url) as chain, httpx.Client(timeout=120.0) as client:
        senders = chain.accounts()[:SENDERS]
        miner = senders[0]
        address, _ = chain.deploy(miner, "BulkEmitter")
        abi = load_abi("BulkEmitter")
        tasks, rest = divmod(events, LOGS_PER_TASK)
        per_call = max(1, min(MAX_TASKS_PER_CALL, 2 * tasks // blocks if tasks else 1))
        groups = [(f, min(per_call, tasks + 1 - f)) for f in range(1, tasks + 1, per_call)]
        rounds = [groups[i : i + len(senders)] for i in range(0, len(groups), len(senders))]
        start = chain.block_number()

        def send(calls: list[tuple[str, str, tuple[Any, ...], int]]) -> list[str]:
            batch = [
                {"jsonrpc": "2.0", "id": i, "method": "eth_sendTransaction",
                 "params": [{"from": sender, "to": address, "gas": gas_for(logs),
                             "data": abi.function(fn).encode_call(args)}]}
                for i, (sender, fn, args, logs) in enumerate(calls)
            ]
            answers = client.post(url, json=batch).json()
            if any("error" in item for item in answers):
                raise SystemExit(f"generation failed: {answers}")
            return [str(item["result"]) for item in answers]

        last: list[str] = []
        for r, rnd in enumerate(rounds):
            sids = [1 + (first // per_call) % SESSIONS for first, _ in rnd]
            send([(s, "emitTaskSubmitted", (sid, f, n, f"ref-{f}"), n)
                  for s, sid, (f, n) in zip(senders, sids, rnd, strict=False)])
            last = send([(s, "emitTaskLifecycles", (sid, f, n, miner, 10**18), 7 * n)
                         for s, sid, (f, n) in zip(senders, sids, rnd, strict=False)])
            behind = start + (r + 1) * blocks // len(rounds) - chain.block_number()
            if behind > 0:
                chain.rpc("anvil_mine", [hex(behind)])
        if rest:
            last += send([(miner, "emitTaskQueued", (1, tasks + 1, rest, "bench"), rest)])
        # Automine mines after eth_sendTransaction returns: wait for each sender's last tx.
        if any(chain.receipt(h)["status"] != "0x1" for h in last):
            raise SystemExit("generation failed: a transaction reverted")
        head = chain.block_number()
        if head - start < blocks:
            chain.rpc("anvil_mine", [hex(blocks - (head - start))])
        return address, tasks + rest, chain.block_number()


def floor(
    url: str, address: str, head: int, fixed: int | None
) -> tuple[float, int, list[tuple[int, int]]]:
    """Best-of-N seconds of raw eth_getLogs over [0, head]: fixed chunks, or the indexer's
    planner (``fixed=None``) fed each answer's size exactly as the sync loop feeds it.
    Returns (seconds, logs, the block ranges requested)."""
    from indexer.config import ChainConfig  # imported late: see main()
    from indexer.ranges import LogRangePlanner

    default_range = ChainConfig.model_fields["max_block_range"].default
    best, logs, ranges = float("inf"), 0, []
    with httpx.Client(timeout=120.0) as client:
        for _ in range(FLOOR_RUNS):
            planner = LogRangePlanner(initial=min(2000, default_range), maximum=default_range)
            t0, cursor, logs, ranges = time.perf_counter(), 0, 0, []
            while cursor <= head:
                if fixed:
                    lo, hi = cursor, min(head, cursor + fixed - 1)
                else:
                    lo, hi = planner.next_range(cursor, head)
                flt = {"fromBlock": hex(lo), "toBlock": hex(hi), "address": [address]}
                body = json.dumps({"jsonrpc": "2.0", "id": len(ranges), "method": "eth_getLogs",
                                   "params": [flt]})
                got = json.loads(client.post(url, content=body, headers=JSON).content)["result"]
                planner.on_success(len(got))
                logs, cursor = logs + len(got), hi + 1
                ranges.append((lo, hi))
            best = min(best, time.perf_counter() - t0)
    return best, logs, ranges


def write_config(
    path: Path, db_url: str, rpc_url: str, address: str, start_block: int = 0
) -> str:
    # SessionV2 is mapped so that TaskSubmitted decodes, and NodePool so that setup() calls no
    # SessionV2 address getter (BulkEmitter has none; no NodePool topic is emitted). BulkEmitter
    # emits no session event, so no session snapshot is read either.
    contracts = {name: {"address": address}
                 for name in ("SessionV2", "SessionQueueV2", "SessionPayment", "NodePool")}
    chain = {"name": "bench", "preset": "local", "rpc_urls": [rpc_url],
             "start_block": start_block, "contracts": contracts}
    path.write_text(json.dumps({"database_url": db_url, "chains": [chain]}))  # JSON is YAML
    return str(path)


# Linux starts a child's ru_maxrss at its parent's peak (the RSS recorded at exec), and this
# process has held 100,000 parsed logs by then: a bare launcher forks the measured process,
# times it and writes "<wall s> <CPU s> <peak RSS KB>" to the file named by its first argument.
LAUNCHER = """
import os, sys, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{time.perf_counter() - t} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(args: list[str], profile: str | None = None,
        program: list[str] | None = None) -> tuple[float, float, float, str]:
    """Run ``corlens *args`` (or ``program *args``); (wall seconds, CPU seconds, its own peak
    RSS in MB, stdout)."""
    cmd = [*(program or [str(CORLENS)]), *args]
    if profile:
        cmd = [sys.executable, "-m", "cProfile", "-o", profile, *cmd]
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CORLENS_")}
    with tempfile.NamedTemporaryFile("r") as stats:
        proc = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, stats.name, *cmd],
                              capture_output=True, env=env, cwd=REPO, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                             f"{proc.stderr.decode(errors='replace')}")
        wall, cpu, kb = stats.read().split()
    return float(wall), float(cpu), int(kb) / 1024, proc.stdout.decode()


def verify(db_url: str, summary_json: str, events: int, tasks: int) -> None:
    """Fail loudly unless the index holds exactly the generated events and tasks."""
    (summary,) = json.loads(summary_json)
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        got = {t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
               for t in ("event", "task", "payment")}
    engine.dispose()
    want = {"event": events, "task": tasks, "payment": events // LOGS_PER_TASK}
    if got != want or summary["events"] != events or summary["unknown"] or summary["malformed"]:
        raise SystemExit(f"index is wrong: tables {got}, expected {want}; summary {summary}")


@contextlib.contextmanager
def pg_database(server_url: str) -> Iterator[str | None]:
    """A fresh database on the server (dropped afterwards), or None when it does not answer."""
    name = f"corlens_bench_{os.getpid()}"
    try:
        admin = psycopg.connect(server_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        print(f"PostgreSQL at {server_url} not reachable ({e}); skipped")
        yield None
        return
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base = server_url.rsplit("/", 1)[0]
            yield f"{base.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_ceilings(url: str, node_pid: int, address: str, tmp: Path, events: int,
                 corlens_db: Path) -> dict[str, tuple[float, float, float]]:
    """bench/ceiling.py in each mode over the same chain: mode -> (seconds, CPU s, anvil CPU s).
    Fails loudly unless each stored every event, and the senders loop (only it) the very
    senders corlens stored in ``corlens_db``; the unstored loop (which stores nothing) must have
    handed over every event and read one sender per transaction corlens stored one for."""
    from bench import budget, ceiling  # imported late: see main()

    with contextlib.closing(sqlite3.connect(corlens_db)) as db:
        corlens_senders = set(db.execute(SENDERS_SQL))
    got = {}
    for mode in ceiling.MODES:
        node_cpu = budget.proc_cpu(node_pid)
        secs, cpu, _, out = run([mode, url, address, str(tmp / f"ceiling-{mode}.db")],
                                program=[sys.executable, str(REPO / "bench" / "ceiling.py")])
        node_cpu = budget.proc_cpu(node_pid) - node_cpu
        counts = json.loads(out)
        got[mode] = (secs, cpu, node_cpu)
        if mode == "unstored":
            if counts != {"stored": events, "senders": len(corlens_senders)}:
                raise SystemExit(f"the ceiling's {mode} loop is wrong: it says {counts}; "
                                 f"{events} events, corlens stored {len(corlens_senders)} "
                                 "(tx, sender) pairs")
            continue
        with contextlib.closing(sqlite3.connect(tmp / f"ceiling-{mode}.db")) as db:
            (rows,) = db.execute("SELECT COUNT(*) FROM event").fetchone()
            senders = set(db.execute(SENDERS_SQL))
        wanted = corlens_senders if mode == "senders" else set()
        if (counts["stored"], rows) != (events, events) or senders != wanted:
            raise SystemExit(f"the ceiling's {mode} loop is wrong: it says {counts}, its table "
                             f"holds {rows} rows and {len(senders)} (tx, sender) pairs, "
                             f"{len(senders & wanted)} of them as corlens's {len(wanted)}; "
                             f"{events} events")
    return got


def report_ceilings(ceilings: dict[str, tuple[float, float, float]],
                    tables: dict[str, tuple[int, float]], floor: float) -> None:
    """The ceiling's figures, and the least wall time an indexer doing what corlens must could
    take here: the senders loop's CPU and anvil's, plus the plain sqlite3 inserts of the
    projection rows it leaves out, spread over every core with none ever idle."""
    cores = os.cpu_count() or 1
    print(f"\nThe ceiling (bench/ceiling.py): the leanest loop we could write, doing strictly "
          f"less than corlens must (no projections, headers, reorg or finality checks), "
          f"against the {floor:.3f} s floor:")
    print(f"{'loop':<42}{'seconds':>8}{'CPU s':>7}{'anvil CPU s':>13}{'ratio':>8}"
          f"{'all ' + str(cores) + ' cores busy':>18}")
    for mode, (secs, cpu, node_cpu) in ceilings.items():
        packed = (cpu + node_cpu) / cores
        print(f"{'ceiling, ' + mode:<42}{secs:>8.2f}{cpu:>7.2f}{node_cpu:>13.2f}"
              f"{secs / floor:>7.2f}x{packed / floor:>17.2f}x")
    _, cpu, node_cpu = ceilings["senders"]
    extra = {t: tables[t] for t in PROJECTION_TABLES}
    extra_cpu = sum(c for _, c in extra.values())
    bound = (cpu + node_cpu + extra_cpu) / cores
    listed = ", ".join(f"{n:,} {t} {c:.2f}" for t, (n, c) in extra.items())
    limit = TARGETS["sqlite"]
    verdict_text = "not ruled out" if bound / floor <= limit else "ruled out by this bound"
    print(f"least wall time for the SQLite index: the senders loop ({cpu:.2f} + anvil "
          f"{node_cpu:.2f} CPU s) plus the projection rows it leaves out ({listed}: "
          f"{extra_cpu:.2f} CPU s in plain sqlite3) over {cores} cores never idle = "
          f"{bound:.2f} s, {bound / floor:.2f}x the floor: the {limit}x target is "
          f"{verdict_text} on this machine")


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--blocks", type=int, default=10_000, help="at least this many blocks")
    p.add_argument("--pg-url", default=PG_URL, help="PostgreSQL server ('' to skip)")
    p.add_argument("--profile", metavar="FILE", help="also profile a SQLite run into FILE")
    a = p.parse_args()
    # `python bench/indexer.py` puts bench/ first on sys.path, where this file would shadow the
    # `indexer` package; the repository root takes its place before anything imports it.
    if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path[0] = str(REPO)
    from bench import budget

    # Cancun, not anvil's default Prague, under which each new block costs more as the chain
    # grows (the first 3,000 blocks took 4.5x longer to mine here, and the gap widens).
    anvil = Anvil(extra_args=["--hardfork", "cancun"])
    with anvil as node, tempfile.TemporaryDirectory(prefix="corlens-bench-") as tmp:
        assert node.pid is not None
        node_pid = node.pid
        t0 = time.perf_counter()
        address, tasks, head = generate(node.url, a.events, a.blocks)
        print(f"generated {a.events:,} events ({tasks:,} tasks) in blocks 1..{head:,} "
              f"in {time.perf_counter() - t0:.1f}s (not measured)")
        floors: dict[str, tuple[float, int]] = {}  # chunking -> (best seconds, requests)
        planned: list[tuple[int, int]] = []  # the planner floor's eth_getLogs ranges

        def measure_floors() -> None:
            for label, fixed in (("planner", None), (f"fixed {FIXED_CHUNK}", FIXED_CHUNK)):
                secs, logs, ranges = floor(node.url, address, head, fixed)
                if logs != a.events:
                    raise SystemExit(f"floor saw {logs} logs, generated {a.events}")
                floors[label] = min(floors.get(label, (secs, len(ranges))), (secs, len(ranges)))
                if fixed is None:
                    planned[:] = ranges

        measure_floors()
        server_cpus: list[float] = []  # the PostgreSQL server's CPU s during its run
        pg_copy: tuple[float, float] | None = None  # budget.pg_copies(): server, client CPU s
        # label, seconds, CPU s, backend, peak MB, anvil's CPU s meanwhile
        rows: list[tuple[str, float, float, str | None, float, float | None]] = []
        backends: list[tuple[str, str | None]] = [("sqlite", f"sqlite:///{tmp}/bench.db")]
        with contextlib.ExitStack() as stack:
            if a.pg_url:
                backends.append(("postgresql", stack.enter_context(pg_database(a.pg_url))))
            for name, db_url in backends:
                if db_url is None:
                    continue
                cfg = write_config(Path(tmp) / f"{name}.yaml", db_url, node.url, address)
                if name == "postgresql":
                    run(["db", "upgrade", "--config", cfg])
                plain_url = db_url.replace("+psycopg", "")  # for psycopg itself
                server = budget.server_pid(plain_url) if name == "postgresql" else None
                node_cpu = budget.proc_cpu(node_pid)
                server_cpu = budget.proc_cpu(server) if server else 0.0
                secs, cpu, rss, out = run(["index", "--once", "--json", "--config", cfg])
                node_cpu = budget.proc_cpu(node_pid) - node_cpu
                if server:
                    server_cpus.append(budget.proc_cpu(server) - server_cpu)
                verify(db_url, out, a.events, tasks)
                if server:  # the index is checked: its tables may now take the COPY floor
                    pg_copy = budget.pg_copies(plain_url, f"{tmp}/bench.db")
                rows.append((f"corlens index --once, {name}", secs, cpu, name, rss, node_cpu))
        ceilings = run_ceilings(node.url, node_pid, address, Path(tmp), a.events,
                                Path(tmp) / "bench.db")
        # The fixed cost in the figures above: process start, imports, migrations, one block.
        cfg = write_config(Path(tmp) / "one.yaml", f"sqlite:///{tmp}/one.db", node.url, address,
                           start_block=head)
        secs, cpu, rss, _ = run(["index", "--once", "--json", "--config", cfg])
        rows.append(("  of which fixed cost (1 block, sqlite)", secs, cpu, None, rss, None))
        measure_floors()  # again after: on a shared machine the quieter moment counts
        budget_parts = budget.measure(node.url, node_pid, address, planned, f"{tmp}/bench.db")
        if a.profile:
            cfg = write_config(Path(tmp) / "prof.yaml", f"sqlite:///{tmp}/prof.db",
                               node.url, address)
            run(["index", "--once", "--json", "--config", cfg], profile=a.profile)

    planner, fixed = floors["planner"][0], floors[f"fixed {FIXED_CHUNK}"][0]
    print(f"\n{a.events:,} events over {head + 1:,} blocks (0..{head:,}). Ratios are against the "
          f"planner floor (the indexer's own eth_getLogs ranges), in brackets the fixed-chunk one.")
    print(f"{'run':<42}{'seconds':>8}{'CPU s':>7}{'events/s':>10}{'ratio':>17}{'target':>15}"
          f"{'peak RSS':>10}{'target':>16}{'anvil CPU s':>13}")
    for label, (secs, calls) in floors.items():
        print(f"{'floor, ' + label + f' ({calls} eth_getLogs)':<42}{secs:>8.2f}{'-':>7}"
              f"{a.events / secs:>10,.0f}")
    for label, secs, cpu, backend, rss, node_cpu in rows:
        rate = f"{a.events / secs:,.0f}" if backend else "-"
        line = f"{label:<42}{secs:>8.2f}{cpu:>7.2f}{rate:>10}"
        if backend:
            limit = TARGETS[backend]
            line += (f"{secs / planner:>7.2f}x ({secs / fixed:.2f}x)"
                     f"{'<= ' + str(limit) + 'x':>8} {verdict(secs / planner <= limit):<6}")
        ok = verdict(rss < RSS_TARGET_MB)
        anvil = f"{node_cpu:>9.2f}" if node_cpu is not None else ""
        print(f"{line:<99}{rss:>7.0f} MB  < {RSS_TARGET_MB:.0f} MB {ok:<6}{anvil}")
    for server_cpu in server_cpus:
        print(f"the PostgreSQL server (all its processes) used {server_cpu:.2f} CPU s "
              "during its run")
    budget.report(*budget_parts[:2], planner, TARGETS["sqlite"])
    report_ceilings(ceilings, budget_parts[2], planner)
    if pg_copy is not None:
        budget.report_pg(pg_copy, budget_parts[0], planner, TARGETS["postgresql"])
    if a.profile:
        print(f"\nprofile of another SQLite run (cProfile: per-call costs inflated) in "
              f"{a.profile}; indexer/ functions by cumulative time:")
        pstats.Stats(a.profile).sort_stats("cumulative").print_stats(r"indexer/", 25)


if __name__ == "__main__":
    main()
