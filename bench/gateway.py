"""Gateway overhead against its upstream, measured side by side in one run.

    python bench/gateway.py [--requests 300] [--streams 200] [--seconds 5] [--concurrency 50]

One simulated router (``python -m devnet.routers``, fixed 20 ms, no chain) and one real
``corlens gateway`` process in Redis mode (a private redis-server) in front of it, all on
loopback. The same client calls the router directly and through the gateway, interleaved:

* added latency at concurrency 1 (non-streaming): p50 and p99 of gateway minus direct;
* added streaming time to first byte (first SSE event) at concurrency 1;
* throughput at concurrency 50 for ``--seconds`` each, direct then through the gateway
  (one gateway worker): the ratio gateway / direct.

Prints the figures, the ratios and MET/MISSED against the issue's targets. Loops are bounded
by counts and durations; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

import httpx

if __package__ in (None, ""):  # run as a file: this file's folder must not shadow `gateway`
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from gateway.store import GatewayStore  # noqa: E402
from indexer.db import upgrade  # noqa: E402
from tests.gateway_helpers import (  # noqa: E402
    GatewayProcess,
    RedisServer,
    RouterProcess,
    write_config,
)

TARGETS = {"p50_added_ms": 3.0, "p99_added_ms": 8.0, "ttfb_added_ms": 5.0, "throughput": 0.5}
UPSTREAM_LATENCY = 0.02
SESSIONS = (1, 2, 3, 4)
PER_SESSION = 100  # far above the bench's concurrency: the gateway never queues here


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


class Conn:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams: a client whose own cost is
    small next to what it measures (httpx's pool bookkeeping would dominate at c=50)."""

    def __init__(self, port: int, auth: str | None) -> None:
        self.port = port
        self.auth = f"Authorization: Bearer {auth}\r\n".encode() if auth else b""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, path: str, body: dict[str, object]) -> float:
        """Send one POST; return seconds to the first body byte (first SSE event for a
        stream), after reading the whole answer."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        raw = json.dumps(body).encode()
        t = time.perf_counter()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\n".encode() + self.auth + b"\r\n" + raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"port {self.port} {path}: {head.splitlines()[0]!r}")
        headers = head.lower()
        if b"transfer-encoding: chunked" not in headers:
            length = int(headers.split(b"content-length:")[1].split(b"\r\n")[0])
            await self.reader.readexactly(length)
            return time.perf_counter() - t
        first: float | None = None
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await self.reader.readexactly(size + 2)
            if first is None and b"data: " in chunk:
                first = time.perf_counter() - t
            if size == 0:
                return first if first is not None else time.perf_counter() - t

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Bench:
    def __init__(self, router: RouterProcess, gw: GatewayProcess, key: str) -> None:
        self.router, self.gw, self.key = router, gw, key
        self.conns: list[Conn] = []
        self.n = 0

    def conn(self, gateway: bool) -> Conn:
        c = Conn(self.gw.port, self.key) if gateway else Conn(self.router.port, None)
        self.conns.append(c)
        return c

    def call(self, c: Conn, gateway: bool, stream: bool) -> Awaitable[float]:
        if gateway:
            return c.request("/v1/completions", {"model": "m", "prompt": "hello",
                                                 "stream": stream})
        self.n += 1
        session = SESSIONS[self.n % len(SESSIONS)]
        return c.request(f"/api/v1/completions/{session}",
                         {"prompt": "hello", "stream": stream, "client_reference": "bench"})

    async def pairs(self, n: int, stream: bool) -> tuple[list[float], list[float]]:
        """``n`` direct and ``n`` gateway calls, interleaved, at concurrency 1 (ms)."""
        cd, cg = self.conn(False), self.conn(True)
        d, g = [], []
        for _ in range(n):
            d.append(await self.call(cd, False, stream) * 1000.0)
            g.append(await self.call(cg, True, stream) * 1000.0)
        return d, g

    async def throughput(self, gateway: bool, concurrency: int, seconds: float) -> float:
        done = 0
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            c = self.conn(gateway)
            while time.perf_counter() < stop:
                await self.call(c, gateway, False)
                done += 1

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - t)

    def close(self) -> None:
        for c in self.conns:
            c.close()


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


async def measure(b: Bench, a: argparse.Namespace) -> dict[str, float]:
    await b.pairs(30, False)  # warm both paths (connections, caches)
    await b.pairs(10, True)
    d, g = await b.pairs(a.requests, False)
    ds, gs = await b.pairs(a.streams, True)
    direct_rps = await b.throughput(False, a.concurrency, a.seconds)
    gw_rps = await b.throughput(True, a.concurrency, a.seconds)
    b.close()
    return {
        "direct_p50": pct(d, 0.5), "gw_p50": pct(g, 0.5),
        "direct_p99": pct(d, 0.99), "gw_p99": pct(g, 0.99),
        "direct_ttfb": statistics.median(ds), "gw_ttfb": statistics.median(gs),
        "direct_rps": direct_rps, "gw_rps": gw_rps,
    }


def report(r: dict[str, float], a: argparse.Namespace) -> bool:
    p50 = r["gw_p50"] - r["direct_p50"]
    p99 = r["gw_p99"] - r["direct_p99"]
    ttfb = r["gw_ttfb"] - r["direct_ttfb"]
    ratio = r["gw_rps"] / r["direct_rps"]
    rows = [
        ("added latency p50 (c=1)", f"{r['direct_p50']:.2f} -> {r['gw_p50']:.2f} ms",
         f"+{p50:.2f} ms", f"<= +{TARGETS['p50_added_ms']:.0f} ms",
         p50 <= TARGETS["p50_added_ms"]),
        ("added latency p99 (c=1)", f"{r['direct_p99']:.2f} -> {r['gw_p99']:.2f} ms",
         f"+{p99:.2f} ms", f"<= +{TARGETS['p99_added_ms']:.0f} ms",
         p99 <= TARGETS["p99_added_ms"]),
        ("added stream TTFB p50", f"{r['direct_ttfb']:.2f} -> {r['gw_ttfb']:.2f} ms",
         f"+{ttfb:.2f} ms", f"<= +{TARGETS['ttfb_added_ms']:.0f} ms",
         ttfb <= TARGETS["ttfb_added_ms"]),
        (f"throughput (c={a.concurrency}, Redis, 1 worker)",
         f"{r['direct_rps']:.0f} -> {r['gw_rps']:.0f} req/s", f"{ratio:.2f}x",
         f">= {TARGETS['throughput']:.1f}x", ratio >= TARGETS["throughput"]),
    ]
    print(f"upstream: devnet router, fixed {UPSTREAM_LATENCY * 1000:.0f} ms, no chain; "
          f"{a.requests} requests and {a.streams} streams at c=1 (interleaved), "
          f"{a.seconds:.0f} s each at c={a.concurrency}")
    for name, figures, delta, target, ok in rows:
        print(f"  {name:<38} {figures:<28} {delta:>10}  target {target:<12} {verdict(ok)}")
    return all(row[4] for row in rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=50)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/bench.db"
        upgrade(db)
        store = GatewayStore(db)
        _, key = store.create_key("bench")
        store.dispose()
        redis = RedisServer().start()
        router = RouterProcess(list(SESSIONS), latency=UPSTREAM_LATENCY, tokens=8).start()
        section = {
            "models": {"m": {"sessions": [
                {"router_url": router.url, "session_id": s, "max_inflight": PER_SESSION}
                for s in SESSIONS]}},
        }
        cfg = write_config(Path(tmp) / "gw.yaml", section, db_url=db, redis_url=redis.url)
        gw = GatewayProcess(cfg, "bench").start()
        try:
            results = asyncio.run(measure(Bench(router, gw, key), a))
            snap = httpx.get(gw.url + "/admin/capacity", timeout=5,
                             headers={"Authorization": "Bearer test-admin-token"}).json()
        finally:
            gw.stop()
            router.stop()
            redis.stop()
    met = report(results, a)
    print(f"  capacity mode during the run: {snap['mode']}; "
          f"counters {json.dumps(snap['counters'], sort_keys=True)}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
