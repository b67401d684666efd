"""Task lifecycle route against a constant-JSON route, same server, same run (issue 3).

    python -m bench.api [--tasks 1000000] [--reuse DBNAME] [--keep] [--path rows|batch]
                        [--requests 2000] [--duration 10] [--profile 10] [--cold]

1. A PostgreSQL database (fresh, or ``--reuse DBNAME``: created if missing, loading resumes from
   its cursor and is skipped when complete), upgraded with the migrations, then ``--tasks``
   synthetic task lifecycles over 1,000 sessions (bench/api_load.py: 10 real Cortensor logs per
   task, one miner, one payment) through the store: ``--path rows`` (default) feeds Projector
   rows through the store's bulk upserts; ``--path batch`` uses ``Store.write_batch`` itself
   (3-4x slower here). Then VACUUM ANALYZE. The database is dropped at the end unless
   ``--keep`` or ``--reuse``.
2. Unless ``--cold``: ``pg_prewarm`` reads the route's tables and indexes into the OS page
   cache (a server that has been serving holds them; shared_buffers cannot). Then
   ``python -m bench.api_app`` under uvicorn (1 worker, loopback, free port): the real app
   plus ``GET /bench/constant`` (bench/api_app.py explains the floor).
3. A raw asyncio HTTP/1.1 keep-alive client (cheaper than httpx, so it stays off the critical
   core): warm-up; concurrency 1, ``--requests`` sequential requests per route, alternating
   routes in 4 rounds -> p50/p99; concurrency 32 for ``--duration`` s per route (5 slices,
   interleaved with the other routes') -> requests/s, with the CPU seconds of the server,
   postgres and this client. The same figures for a bench-only variant of the route
   (bench/api_app.py), as a what-if.
4. ``--profile S``: SQL statements per task request (counted in-process, alone and under
   concurrency) and py-spy (if installed) sampling the server for S s at concurrency 32,
   summarised by layer and function.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import sqlalchemy as sa

from bench import api_load
from bench.api_app import CHAIN
from bench.api_profile import profile
from indexer.db import make_engine, upgrade

REPO = Path(__file__).resolve().parent.parent
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
CHAIN_ID = 31337  # the "local" preset
TARGETS = {"p50": 2.0, "throughput": 0.5}  # task / constant, from the issue
# What the lifecycle statement reads: its tables and the indexes it looks a task up by.
WARM = "task task_pkey task_step task_step_pkey task_miner task_miner_pkey payment ix_payment_task"
WARMUP_REQUESTS = 300
WARMUP_SECONDS = 2.0
SLICES = 5  # c=32 runs per route, interleaved with the other routes' (the machine is shared)
VARIANTS = {  # bench/api_app.py: the same statement and document, sync in the threadpool
    "sync SQLAlchemy in the threadpool (the SQLite path)": "/bench/threadpool",
}


def prepare(a: argparse.Namespace) -> str:
    """The database URL, loaded with ``a.tasks`` tasks."""
    name = a.reuse or f"corlens_bench_api_{os.getpid()}"
    with psycopg.connect(a.pg_url, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{a.pg_url.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as c:
        cursor = c.execute(sa.text("SELECT max(cursor_block) FROM chain_state")).scalar()
    if cursor is not None and cursor > api_load.last_block(a.tasks):
        raise SystemExit(f"{name} holds more than {a.tasks:,} tasks; pass the --tasks it holds")
    if cursor == api_load.last_block(a.tasks):
        print(f"database {name}: already holds {a.tasks:,} tasks, load skipped")
        engine.dispose()
        return url
    api_load.self_check()
    print(
        f"database {name}: loading {a.tasks:,} tasks via --path {a.path}"
        f" from block {(cursor or 0) + 1:,}"
    )
    t0 = time.perf_counter()
    st = api_load.load(engine, CHAIN_ID, CHAIN, a.tasks, a.batch_events, a.path, print)
    secs = time.perf_counter() - t0
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as c:
        t1 = time.perf_counter()
        c.execute("VACUUM ANALYZE")
        vac = time.perf_counter() - t1
        rows = {
            t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
            for t in ("task", "task_step", "task_miner", "payment", "block", "event")
        }
    print(
        f"loaded {st.events:,} logs ({st.blocks:,} blocks) in {secs:.0f}s: "
        f"{st.events / secs:,.0f} logs/s, {st.events / secs / api_load.LOGS_PER_TASK:,.0f} "
        f"tasks/s (generating the logs: {st.generate_s:.0f}s of it); VACUUM ANALYZE {vac:.0f}s;"
        f" rows {rows}"
    )
    engine.dispose()
    return url


def prewarm(url: str) -> None:
    """Read the route's tables and indexes once (pg_prewarm, 'read' mode: into the OS page
    cache, as a server that has been serving holds them; shared_buffers is far smaller)."""
    t0 = time.perf_counter()
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        blocks = sum(
            c.execute("SELECT pg_prewarm(%s, 'read')", (rel,)).fetchone()[0]  # type: ignore[index]
            for rel in WARM.split()
        )
    print(
        f"warm-up: pg_prewarm 'read' of {WARM.replace(' ', ', ')}: {blocks * 8 / 1024:,.0f} MB "
        f"in {time.perf_counter() - t0:.1f}s (OS page cache)"
    )


class Http:
    """One keep-alive HTTP/1.1 connection; GET only, Content-Length bodies."""

    async def open(self, port: int) -> Http:
        self.r, self.w = await asyncio.open_connection("127.0.0.1", port)
        return self

    async def get(self, path: str) -> bytes:
        self.w.write(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode())
        head = await self.r.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        body = await self.r.readexactly(length)
        if head[9:12] != b"200":
            raise SystemExit(f"GET {path}: {head[:12]!r} {body[:300]!r}")
        return body

    def close(self) -> None:
        self.w.close()


def task_paths(tasks: int, seed: int, prefix: str = "") -> Iterator[str]:
    """Random existing tasks, on the real route or (``prefix``) a bench variant of it."""
    rng = random.Random(seed)
    while True:
        s, t = api_load.task_key(rng.randrange(tasks))
        yield f"{prefix}/{s}/{t}" if prefix else f"/api/v1/chains/{CHAIN}/sessions/{s}/tasks/{t}"


async def sequential(port: int, paths: Iterator[str], n: int) -> list[float]:
    c, out = await Http().open(port), []
    for _ in range(n):
        p = next(paths)
        t0 = time.perf_counter()
        await c.get(p)
        out.append(time.perf_counter() - t0)
    c.close()
    return out


async def saturate(port: int, paths: Iterator[str], conc: int, seconds: float) -> tuple[int, float]:
    conns = [await Http().open(port) for _ in range(conc)]
    done, end = 0, time.perf_counter() + seconds

    async def worker(c: Http) -> None:
        nonlocal done
        while time.perf_counter() < end:
            await c.get(next(paths))
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.close()
    return done, elapsed


def cpu(server_pid: int, db: str) -> tuple[float, dict[int, float]]:
    """CPU seconds of the server process, and of each PostgreSQL backend serving ``db``."""
    tick, backends, server = os.sysconf("SC_CLK_TCK"), {}, 0.0
    for p in (str(server_pid), *(p for p in os.listdir("/proc") if p.isdigit())):
        try:
            title = Path(f"/proc/{p}/cmdline").read_bytes()
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used = (int(fields[11]) + int(fields[12])) / tick
        if p == str(server_pid):
            server = used
        elif title.startswith(b"postgres") and f" {db} ".encode() in title:
            backends[int(p)] = used
    return server, backends


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def measure(a: argparse.Namespace, port: int, server_pid: int, db: str) -> None:
    routes = {
        "task": task_paths(a.tasks, 1),
        "constant": itertools.repeat("/bench/constant"),
        **{k: task_paths(a.tasks, 1, prefix) for k, prefix in VARIANTS.items()},
    }
    sizes = {k: len(await (await Http().open(port)).get(next(p))) for k, p in routes.items()}
    for p in routes.values():
        await sequential(port, p, WARMUP_REQUESTS)
        await saturate(port, p, a.concurrency, WARMUP_SECONDS)
    lat: dict[str, list[float]] = {k: [] for k in routes}
    for _ in range(4):
        for k, p in routes.items():
            lat[k] += await sequential(port, p, a.requests // 4)
    done = {k: [0.0, 0.0, 0.0, 0.0, 0.0] for k in routes}  # requests, s, server/pg/client CPU
    for _ in range(SLICES):  # interleaved, so every route sees the same machine load
        for k, p in routes.items():
            (srv0, pg0), me0 = cpu(server_pid, db), time.process_time()
            got, el = await saturate(port, p, a.concurrency, a.duration / SLICES)
            (srv, pg), me = cpu(server_pid, db), time.process_time()
            pg_used = sum(v - pg0.get(pid, 0.0) for pid, v in pg.items())
            for i, x in enumerate((got, el, srv - srv0, pg_used, me - me0)):
                done[k][i] += x
    rps = {k: d[0] / d[1] for k, d in done.items()}
    busy = {k: "/".join(f"{x / d[1]:.2f}" for x in d[2:]) for k, d in done.items()}
    print(
        f"\nresponse bodies (bytes): {', '.join(f'{k} {v:,}' for k, v in sizes.items())}; "
        f"c=1: {len(lat['task']):,} requests per route; c={a.concurrency}: {a.duration:g}s each"
    )
    ms = {k: (1e3 * pct(v, 0.5), 1e3 * pct(v, 0.99)) for k, v in lat.items()}
    print(f"{'figure':<30}{'task route':>12}{'constant':>12}{'ratio':>9}{'target':>10}  result")
    for k in routes:
        if k == "constant":
            continue
        if k != "task":
            print(f"what-if, bench-only variant: {k}")
        for label, key, task, const in (
            ("p50 latency, c=1 (ms)", "p50", ms[k][0], ms["constant"][0]),
            ("p99 latency, c=1 (ms)", None, ms[k][1], ms["constant"][1]),
            (f"throughput, c={a.concurrency} (req/s)", "throughput", rps[k], rps["constant"]),
        ):
            ratio, higher = task / const, key == "throughput"
            target, result = "-", "(no target)"
            if key is not None and k == "task":
                lim = TARGETS[key]
                target = f"{'>=' if higher else '<='} {lim:g}x"
                result = "MET" if (ratio >= lim if higher else ratio <= lim) else "MISSED"
            print(f"{label:<30}{task:>12,.2f}{const:>12,.2f}{ratio:>8.2f}x{target:>10}  {result}")
    print(
        f"CPU cores busy at c={a.concurrency} (server / its postgres backends / this client; "
        "backends that exit mid-run are missed): " + ", ".join(f"{k} {v}" for k, v in busy.items())
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_and_measure(a: argparse.Namespace, url: str) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.api_app", "--db", url, "--port", str(port)]
    server = subprocess.Popen(cmd, cwd=REPO)
    try:
        for _ in range(300):  # up to 30 s for imports and startup
            if server.poll() is not None:
                raise SystemExit(f"server exited with {server.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
            except OSError:
                time.sleep(0.1)
        asyncio.run(measure(a, port, server.pid, url.rsplit("/", 1)[1]))
        if a.profile:
            profile(
                url,
                server.pid,
                lambda: asyncio.run(
                    saturate(port, task_paths(a.tasks, 2), a.concurrency, a.profile)
                ),
                a.tasks,
                a.profile,
                a.concurrency,
            )
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=1_000_000)
    p.add_argument("--reuse", metavar="DBNAME", help="keep and reuse this database")
    p.add_argument("--keep", action="store_true", help="do not drop the fresh database")
    p.add_argument("--path", choices=("rows", "batch"), default="rows")
    p.add_argument("--batch-events", type=int, default=50_000, help="logs per transaction")
    p.add_argument("--requests", type=int, default=2_000, help="per route at concurrency 1")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per route, c=32")
    p.add_argument("--profile", type=float, default=10.0, help="seconds of py-spy; 0: none")
    p.add_argument("--cold", action="store_true", help="skip the pg_prewarm pass")
    p.add_argument("--pg-url", default=PG_SERVER, help="a database on the PostgreSQL server")
    a = p.parse_args()
    url = prepare(a)
    try:
        if not a.cold:
            prewarm(url)
        serve_and_measure(a, url)
    finally:
        if not (a.keep or a.reuse):
            with psycopg.connect(a.pg_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


if __name__ == "__main__":
    main()
