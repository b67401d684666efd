"""The app factory: the composition root that builds the FastAPI app from one Settings.

``create_app(settings)`` mounts the verification API, the ops routes and (when given) the
gateway, and — for ``corlens serve`` and ``demo`` — runs each chain's indexer loop in-process
under APScheduler during the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api import errors, ops, routes, routes_more
from api.lifecycle import PgLifecycles
from api.state import AppState, Metrics
from indexer.config import Settings
from indexer.db import ensure_schema, make_engine
from indexer.errors import IndexerError
from indexer.rpc import RpcClient
from indexer.sync import Progress

log = logging.getLogger("corlens.indexer")
# Seconds between console lines for an indexer failure that repeats (it retries every tick).
LOG_REPEAT_EVERY = 60.0
# Seconds before an indexer whose start failed on a retryable error (the RPC down) tries again.
RETRY_START = 10.0

API_DESCRIPTION = """
Verified Cortensor task state for dashboards and auditors: sessions, task lifecycles with a
link from every step to the block explorer, independent on-chain verification, network-task
rounds, nodes, payouts and the payout audit. Errors are `{"error": {"code", "message",
"details"}}`; malformed input is a 422 whose `details.field` names the field.
"""


def create_app(
    settings: Settings,
    *,
    run_indexer: bool = False,
    extra_routers: list[Any] | None = None,
    on_startup: list[Callable[[], Awaitable[None]]] | None = None,
    on_shutdown: list[Callable[[], Awaitable[None]]] | None = None,
) -> FastAPI:
    """Build the app. Nothing connects until the app starts (lifespan)."""
    engine = read_engine(settings.database_url)
    state = AppState(
        settings=settings,
        engine=engine,
        chains={c.name: c for c in settings.chains},
        rpcs={},
        public_url=settings.public_url,
        lifecycles=(
            PgLifecycles(settings.database_url) if engine.dialect.name == "postgresql" else None
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        ensure_schema(settings.database_url, engine)
        for c in settings.chains:
            state.rpcs[c.name] = RpcClient(c.rpc_urls, timeout=c.rpc_timeout)
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        if run_indexer:
            tasks = _start_indexers(state, stop)
        for hook in on_startup or []:
            await hook()
        # What startup built (routes, schemas, metadata) lives as long as the app: keep it out
        # of the cyclic GC's full collections, which re-scanned ~150k objects and took ~19% of
        # the lifecycle route's CPU under concurrency (bench/api.py); ~5% with this.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            stop.set()
            for hook in on_shutdown or []:
                await hook()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(t, 10)
            for rpc in state.rpcs.values():
                await rpc.aclose()
            engine.dispose()
            if state.lifecycles is not None:
                await state.lifecycles.close()
            if "write_engine" in state.extra:
                state.extra["write_engine"].dispose()

    app = FastAPI(title="corlens", version="0.1.0", description=API_DESCRIPTION, lifespan=lifespan)
    app.state.corlens = state
    errors.install(app)

    app.add_middleware(TimingMiddleware, metrics=state.metrics)
    app.include_router(routes.router)
    app.include_router(routes_more.router)
    app.include_router(ops.router)
    for r in extra_routers or []:
        app.include_router(r)
    return app


# Connections the API may hold at once: anyio's default threadpool size, so no request waits
# for a connection while a thread is free (and no overflow connection churns under load).
READ_POOL = 40


def read_engine(url: str) -> sa.Engine:
    """The API's engine: a pool as large as the threadpool, recycled instead of pinged on every
    checkout. (Not autocommit: the CSV and audit paths stream with server-side cursors, which
    PostgreSQL allows only inside a transaction.)"""
    if url.startswith("sqlite"):
        return make_engine(url)
    return make_engine(
        url, pool_size=READ_POOL, max_overflow=0, pool_pre_ping=False, pool_recycle=300
    )


class TimingMiddleware:
    """Per-route latency for /metrics, as plain ASGI (no extra task per request)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            self.metrics.observe(getattr(route, "path", "unmatched"), time.perf_counter() - t0)


class IndexerLog:
    """What each chain's in-process indexer says: kept for /status, and logged to the console
    (messages carry redacted URLs only). A failure repeats every tick while it lasts: the same
    message is logged once, then again at most every ``repeat_every`` seconds."""

    def __init__(self, seen: dict[str, str], repeat_every: float = LOG_REPEAT_EVERY) -> None:
        self.seen = seen
        self.repeat_every = repeat_every
        self._logged: dict[str, tuple[str, float]] = {}

    def __call__(self, chain: str, message: str) -> None:
        self.seen[chain] = message
        now = time.monotonic()
        last = self._logged.get(chain)
        if last is None or last[0] != message or now - last[1] >= self.repeat_every:
            self._logged[chain] = (message, now)
            log.warning("%s", message if message.startswith(f"{chain}:") else f"{chain}: {message}")


def _start_indexers(state: AppState, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    from indexer.runner import follow
    from indexer.store import Store

    store = Store(make_engine(state.settings.database_url))  # writes need real transactions
    state.extra["write_engine"] = store.engine
    progress: dict[str, Progress] = state.extra.setdefault("progress", {})
    say = IndexerLog(state.extra.setdefault("indexer_errors", {}))

    def on_progress(p: Progress) -> None:
        progress[p.chain] = p

    async def run(chain_name: str) -> None:
        chain = state.chains[chain_name]
        try:
            await follow(
                state.settings,
                chain,
                store,
                on_progress,
                lambda m: say(chain_name, m),
                stop,
                rpc=state.rpcs[chain_name],
                retry_start=RETRY_START,  # the RPC down at start: keep trying, keep serving
            )
        except IndexerError as e:  # shown on /status; the API keeps serving what is indexed
            say(chain_name, f"indexer stopped: {e}")

    return [asyncio.create_task(run(name)) for name in state.chains]
