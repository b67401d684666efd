"""Wires settings into running indexers: store, RPC clients, writer locks, the follow loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from indexer.config import ChainConfig, Settings
from indexer.db import ensure_schema, make_engine
from indexer.errors import IndexerError, RetryableError, RpcError, WriterLockHeld
from indexer.gc_tuning import tune_gc
from indexer.lock import WriterLock
from indexer.rpc import RpcClient
from indexer.store import Store
from indexer.sync import ChainIndexer, Progress, Reorged, Waiting
from indexer.writer_proc import ProcessWriter
from indexer.writer_start import in_process_only

Say = Callable[[str], None]
# Steps one scheduler tick may take before yielding to the next tick.
MAX_STEPS_PER_TICK = 1000


@dataclass
class Summary:
    chain: str
    chain_id: int
    cursor: int
    events: int
    tasks: int
    sessions: int
    network_tasks: int
    payments: int
    nodes: int
    malformed: int
    unknown: int
    reorgs: int


def open_store(settings: Settings) -> Store:
    engine = make_engine(settings.database_url)
    ensure_schema(settings.database_url, engine)
    return Store(engine)


def select_chains(settings: Settings, name: str | None) -> list[ChainConfig]:
    if name is not None:  # "" too: an empty name is not "every chain"
        return [settings.chain(name)]
    return list(settings.chains)


async def index_once(
    settings: Settings,
    chain: ChainConfig,
    store: Store,
    on_progress: Callable[[Progress], None] | None = None,
) -> Progress:
    """Backfill one chain to the head seen at start, holding the writer lock; a lock another
    indexer holds is :class:`WriterLockHeld` (a one-shot run does not wait as a standby)."""
    lock = WriterLock(settings.database_url, int(chain.chain_id or 0))
    if not lock.try_acquire():
        try:
            raise WriterLockHeld(chain.name, lock.holder())
        finally:
            lock.release()
    try:
        async with contextlib.AsyncExitStack() as stack:
            rpc = await stack.enter_async_context(
                RpcClient(chain.rpc_urls, timeout=chain.rpc_timeout)
            )
            writer = _writer(stack, settings, store)
            ix = ChainIndexer(chain, store, rpc, config_dir=config_dir(settings), writer=writer)
            await ix.setup()
            return await ix.backfill(on_progress)
    finally:
        lock.release()


async def follow(
    settings: Settings,
    chain: ChainConfig,
    store: Store,
    on_progress: Callable[[Progress], None] | None = None,
    say: Say | None = None,
    stop: asyncio.Event | None = None,
    rpc: RpcClient | None = None,
    retry_start: float | None = None,
) -> None:
    """Backfill, then follow the head on an APScheduler interval job until ``stop`` is set.
    With ``retry_start``, a retryable failure before the head is reached (the RPC down) is said
    and tried again after that many seconds, instead of raised."""
    stop = stop or asyncio.Event()
    lock = WriterLock(settings.database_url, int(chain.chain_id or 0))
    await lock.acquire(
        on_wait=(
            lambda who: say(f"{chain.name}: standby, the writer lock is held by {who}; waiting")
        )
        if say
        else None
    )
    if say:
        say(f"{chain.name}: writer lock acquired")
    try:
        async with contextlib.AsyncExitStack() as stack:
            if rpc is None:
                rpc = await stack.enter_async_context(
                    RpcClient(chain.rpc_urls, timeout=chain.rpc_timeout)
                )
            writer = _writer(stack, settings, store)
            ix = ChainIndexer(chain, store, rpc, config_dir=config_dir(settings), writer=writer)
            if not await _start(ix, on_progress, say, stop, retry_start):
                return

            fatal: list[IndexerError] = []

            async def tick() -> None:
                try:
                    # Catch up within one tick; a bound keeps a tick from running forever.
                    for _ in range(MAX_STEPS_PER_TICK):
                        out = await ix.step()
                        if isinstance(out, Reorged) and say:
                            say(
                                f"{chain.name}: reorg, rolled back to block {out.fork_block} "
                                f"({out.removed_events} events removed)"
                            )
                        if isinstance(out, Waiting):
                            break
                except (RetryableError, RpcError) as e:
                    if say:
                        say(f"{chain.name}: {e}; retrying at the next tick")
                except IndexerError as e:  # not retryable (a reorg too deep): stop, say why
                    fatal.append(e)
                    stop.set()

            from apscheduler.schedulers.asyncio import AsyncIOScheduler  # follow mode only

            sched = AsyncIOScheduler()
            sched.add_job(
                tick,
                "interval",
                seconds=chain.poll_interval,
                max_instances=1,
                coalesce=True,
                id=f"index-{chain.name}",
            )
            sched.start()
            try:
                await stop.wait()
            finally:
                sched.shutdown(wait=False)
            if fatal:
                raise fatal[0]
    finally:
        lock.release()


async def _start(
    ix: ChainIndexer,
    on_progress: Callable[[Progress], None] | None,
    say: Say | None,
    stop: asyncio.Event,
    retry_after: float | None,
) -> bool:
    """Set up and backfill ``ix``; False if ``stop`` was set while retrying (see follow)."""
    set_up = False
    while True:
        try:
            if not set_up:
                await ix.setup()
                set_up = True
            await ix.backfill(on_progress)
            return True
        except RetryableError as e:
            if retry_after is None:
                raise
            if say:
                say(f"{ix.chain.name}: {e}; retrying in {retry_after:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_after)
            if stop.is_set():
                return False


def _writer(
    stack: contextlib.AsyncExitStack, settings: Settings, store: Store
) -> ProcessWriter | None:
    """A writer process for the chain's ranges (closed with ``stack``), or None to write in a
    thread of this process: an in-memory SQLite database is this process's alone."""
    if in_process_only(settings.database_url):
        return None
    return stack.enter_context(ProcessWriter(settings.database_url, early=store))


def config_dir(settings: Settings) -> Path | None:
    """Where relative paths in the config (a contract's ``abi``) are read from."""
    return Path(settings.config_path).parent if settings.config_path else None


def summarize(store: Store, chain: ChainConfig) -> Summary:
    import sqlalchemy as sa

    cid = int(chain.chain_id or 0)
    st = store.state(cid)
    counts = {}
    with store.engine.connect() as conn:
        for table in ("task", "session", "network_task", "payment", "node"):
            counts[table] = int(
                conn.execute(
                    sa.text(f"SELECT COUNT(*) FROM {table} WHERE chain_id = :c"), {"c": cid}
                ).scalar()
                or 0
            )
    return Summary(
        chain=chain.name,
        chain_id=cid,
        cursor=st.cursor_block if st else -1,
        events=st.events_indexed if st else 0,
        tasks=counts["task"],
        sessions=counts["session"],
        network_tasks=counts["network_task"],
        payments=counts["payment"],
        nodes=counts["node"],
        malformed=st.malformed_logs if st else 0,
        unknown=st.unknown_logs if st else 0,
        reorgs=st.reorgs if st else 0,
    )


__all__ = [
    "IndexerError",
    "Summary",
    "follow",
    "index_once",
    "open_store",
    "select_chains",
    "summarize",
    "tune_gc",
]
