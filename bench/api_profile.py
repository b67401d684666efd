"""Where a task lifecycle request's time goes (``python -m bench.api --profile S``).

* SQL: the app built in-process (``create_app``), called through ``httpx.ASGITransport``; an
  engine listener counts statements and pool checkouts per request (each checkout costs one more
  round trip: the engine pings with ``pool_pre_ping``), and each statement of one request is
  run under ``EXPLAIN ANALYZE`` to show its plan and server time.
* py-spy (``pip install py-spy``; skipped when absent) samples the uvicorn server for S s while
  the bench drives the task route at concurrency 32: ``--gil`` (only the thread holding the GIL,
  i.e. where the server's one core goes), ``--nonblocking``. Samples are summarised by the layer
  of the innermost frame and by function (inclusive).
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import psycopg
import sqlalchemy as sa

from api.app import create_app
from bench import api_load
from bench.api_app import CHAIN, settings_for

SQL_REQUESTS = 100
LAYERS = (  # (substring of the innermost frame's file, layer), first match wins
    ("psycopg", "psycopg (driver; socket I/O to PostgreSQL)"),
    ("sqlalchemy", "SQLAlchemy (Core: compile, execute, result rows)"),
    ("pydantic", "pydantic (validation, serialisation)"),
    ("fastapi", "FastAPI (dependencies, routing, response)"),
    ("starlette", "Starlette (middleware, routing, responses)"),
    ("anyio", "threadpool hand-off (anyio, threading, queue)"),
    ("threading.py", "threadpool hand-off (anyio, threading, queue)"),
    ("queue.py", "threadpool hand-off (anyio, threading, queue)"),
    ("concurrent", "threadpool hand-off (anyio, threading, queue)"),
    ("uvicorn", "uvicorn + h11 (HTTP parsing, writing)"),
    ("h11", "uvicorn + h11 (HTTP parsing, writing)"),
    ("asyncio", "asyncio event loop"),
    ("/api/", "corlens api/ code"),
    ("/indexer/", "corlens indexer/ code"),
)
ROOTS = (
    "runpy",
    "asyncio/",
    "uvicorn/main.py",
    "uvicorn/server.py",
    "_compat.py",
    "api_app.py",
    "threading.py",
    "anyio/_backends",
    "anyio/_core/_tasks.py",
)  # frames on every stack
FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>.*?)(?::\d+)?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", "/python3.11/", str(Path(__file__).parent.parent) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def in_process(url: str, tasks: int, concurrency: int) -> None:
    """Statements, connections and threadpool hand-offs per request (through SQLAlchemy or the
    asyncpg pool); new connections under concurrency; each statement's plan."""
    app = create_app(settings_for(url))
    state = app.state.corlens
    engine: sa.Engine = state.engine
    seen: list[tuple[str, Any]] = []
    n = {"checkout": 0, "connect": 0, "thread": 0}
    real_run_sync, pool = anyio.to_thread.run_sync, state.lifecycles.pool
    real_fetch, real_connect = pool.fetchall, pool._connect

    def count(key: str) -> Callable[..., None]:
        return lambda *_: n.__setitem__(key, n[key] + 1)

    def run_sync(*args: Any, **kw: Any) -> Any:
        n["thread"] += 1
        return real_run_sync(*args, **kw)

    async def fetchall(sql: str, params: tuple[Any, ...]) -> Any:
        seen.append((sql, params))
        n["checkout"] += 1
        return await real_fetch(sql, params)

    async def connect() -> Any:
        n["connect"] += 1
        return await real_connect()

    sa.event.listen(engine, "before_cursor_execute", lambda *a: seen.append((a[2], a[3])))
    sa.event.listen(engine, "checkout", count("checkout"))
    sa.event.listen(engine, "connect", count("connect"))
    pool.fetchall, pool._connect = fetchall, connect
    paths = [
        f"/api/v1/chains/{CHAIN}/sessions/{s}/tasks/{t}"
        for s, t in map(api_load.task_key, range(0, tasks, max(1, tasks // SQL_REQUESTS)))
    ][:SQL_REQUESTS]

    async def drive(conc: int) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:

            async def worker(mine: list[str]) -> None:
                for path in mine:
                    (await c.get(path)).raise_for_status()

            await asyncio.gather(*(worker(paths[i::conc]) for i in range(conc)))
        await pool.close()  # its connections belong to this event loop

    anyio.to_thread.run_sync = run_sync
    try:
        asyncio.run(drive(1))
        per = {k: v / len(paths) for k, v in n.items()}
        statements = len(seen) // len(paths)
        n.update(connect=0)
        before = len(seen)
        for _ in range(3):
            asyncio.run(drive(concurrency))
        coalesced = (len(seen) - before) / (3 * len(paths))
    finally:
        anyio.to_thread.run_sync = real_run_sync
    print(
        f"\nper task request (in-process, {len(paths)} requests): {statements} SQL statements, "
        f"{per['checkout']:g} connection checkouts, {per['thread']:g} threadpool hand-offs; "
        f"at concurrency {concurrency}: {coalesced:.2f} statements per request (coalesced), "
        f"{n['connect']} new PostgreSQL connections for {3 * len(paths)} requests (each run's "
        "event loop opens its own)"
    )
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        for stmt, params in seen[:statements]:
            if isinstance(params, tuple):  # asyncpg's $n parameters, in psycopg's style
                params = [params[int(n) - 1] for n in re.findall(r"\$(\d+)", stmt)]
                stmt = re.sub(r"\$\d+", "%s", stmt)
            plan = [r[0] for r in conn.execute(f"EXPLAIN ANALYZE {stmt}", params).fetchall()]
            print(f"  {stmt[:90]}...")
            for line in plan:
                print(f"    {line}")
    engine.dispose()


def pyspy(pid: int, seconds: float, load: Callable[[], object]) -> None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("\npy-spy is not installed (pip install py-spy): sampling profile skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw.txt"
        cmd = [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            "200",
            "--gil",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(out),
        ]
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # let py-spy attach before the load starts
        load()
        _, err = spy.communicate(timeout=seconds + 60)
        if spy.returncode or not out.exists():
            print(f"\npy-spy failed ({spy.returncode}): {err.decode()[-300:]}")
            return
        summarise(out.read_text())


def summarise(raw: str) -> None:
    layers: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = workers = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [m.groupdict() for f in stack.split(";") if (m := FRAME.match(f))]
        if not frames:
            continue
        total += n
        workers += n if any("threading" in f["file"] for f in frames[:3]) else 0
        inner = frames[-1]["file"]
        layers[next((name for key, name in LAYERS if key in inner), "other")] += n
        leaf[f"{frames[-1]['fn']} ({_short(inner)})"] += n
        for name in {
            f"{f['fn']} ({_short(f['file'])})"
            for f in frames
            if not any(r in f["file"] for r in ROOTS)
        }:
            incl[name] += n
    if not total:
        print("\npy-spy recorded no samples")
        return
    print(
        f"\npy-spy, server process holding the GIL: {total:,} samples at 200 Hz; "
        f"{100 * workers / total:.0f}% in threadpool threads (sync dependencies and route), "
        f"{100 * (total - workers) / total:.0f}% on the event loop thread"
    )
    print("by layer (innermost frame):")
    for name, n in layers.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("by function, inclusive (top 30; event-loop and thread roots left out):")
    for name, n in incl.most_common(30):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("by function, self (top 15):")
    for name, n in leaf.most_common(15):
        print(f"  {100 * n / total:5.1f}%  {name}")


def profile(
    url: str, pid: int, load: Callable[[], object], tasks: int, seconds: float, conc: int
) -> None:
    in_process(url, tasks, conc)
    pyspy(pid, seconds, load)
