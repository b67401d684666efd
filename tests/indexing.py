"""Helpers for indexing tests: build settings for a devnet, index, dump rows for comparison."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import sqlalchemy as sa

from indexer.config import Settings, load_settings
from indexer.rpc import RpcClient
from indexer.runner import index_once, open_store
from indexer.store import Store
from indexer.sync import ChainIndexer, Progress

# Columns that legitimately differ between two correct indexes of the same chain.
VOLATILE = {"id", "updated_at", "snapshot_block"}
TABLES = ("event", "malformed_log", "session", "task", "task_step", "task_miner",
          "network_task", "network_task_step", "payment", "node")


def devnet_settings(rpc_url: str, addresses: dict[str, str], db_url: str, *,
                    start_block: int = 0, **chain: Any) -> Settings:
    cfg: dict[str, Any] = {
        "name": "local", "preset": "local", "rpc_urls": [rpc_url], "start_block": start_block,
        "contracts": {"SessionV2": {"address": addresses["SessionV2"]},
                      "CognitiveV1": {"address": addresses["CognitiveV1"]}},
    }
    cfg.update(chain)
    return load_settings(None, env={}, overrides={"database_url": db_url, "chains": [cfg]})


def index(settings: Settings, store: Store | None = None) -> Progress:
    own = store is None
    store = store or open_store(settings)
    try:
        return asyncio.run(index_once(settings, settings.chains[0], store))
    finally:
        if own:
            store.engine.dispose()


async def _steps(settings: Settings, store: Store, n: int) -> list[Any]:
    c = settings.chains[0]
    async with RpcClient(c.rpc_urls, timeout=c.rpc_timeout) as rpc:
        ix = ChainIndexer(settings.chains[0], store, rpc)
        await ix.setup()
        return [await ix.step() for _ in range(n)]


def step(settings: Settings, store: Store, n: int = 1) -> list[Any]:
    """Run ``n`` sync steps (what the follower does each tick)."""
    return asyncio.run(_steps(settings, store, n))


def dump(engine: sa.Engine, chain_id: int = 31337, *, tables: tuple[str, ...] = TABLES
         ) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the indexer's tables for one chain, sorted, minus volatile columns."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    md = sa.MetaData()
    with engine.connect() as conn:
        for name in tables:
            t = sa.Table(name, md, autoload_with=conn)
            cols = [c for c in t.columns if c.name not in VOLATILE]
            rows = conn.execute(sa.select(*cols).where(t.c.chain_id == chain_id)).all()
            out[name] = sorted(tuple(repr(v) for v in r) for r in rows)
    return out


def write_config(path: Any, rpc_url: str, addresses: dict[str, str], db_url: str, *,
                 start_block: int = 0, **chain: Any) -> str:
    """A YAML config file for a devnet, for tests that run the real CLI."""
    import yaml

    cfg: dict[str, Any] = {
        "database_url": db_url,
        "chains": [{
            "name": "local", "preset": "local", "rpc_urls": [rpc_url], "start_block": start_block,
            "contracts": {"SessionV2": {"address": addresses["SessionV2"]},
                          "CognitiveV1": {"address": addresses["CognitiveV1"]}},
            **chain,
        }],
    }
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def check_lifecycle_copies(engine: sa.Engine, chain_id: int = 31337) -> int:
    """Every task's JSON copies (task.steps_json, task.miners_json) hold exactly its task_step
    and task_miner rows. Returns the number of tasks checked."""
    from indexer.schema import LIFECYCLE_MINER_COLS, LIFECYCLE_PAYMENT_COLS, LIFECYCLE_STEP_COLS

    def rows_of(conn: sa.Connection, table: str, cols: tuple[str, ...]) -> dict[Any, list[Any]]:
        out: dict[Any, list[Any]] = {}
        for r in conn.execute(sa.text(f"SELECT session_id, task_id, {', '.join(cols)} "
                                      f"FROM {table} WHERE chain_id = :c"), {"c": chain_id}):
            out.setdefault((r[0], r[1]), []).append(dict(zip(cols, r[2:], strict=True)))
        return out

    with engine.connect() as conn:
        steps = rows_of(conn, "task_step", LIFECYCLE_STEP_COLS)
        miners = rows_of(conn, "task_miner", LIFECYCLE_MINER_COLS)
        pays = rows_of(conn, "payment", LIFECYCLE_PAYMENT_COLS)
        tasks = conn.execute(sa.text("SELECT session_id, task_id, steps_json, miners_json, "
                                     "payments_json FROM task WHERE chain_id = :c"),
                             {"c": chain_id}).all()
    for sid, tid, s_json, m_json, p_json in tasks:
        key = (sid, tid)
        assert s_json is not None and m_json is not None, key
        got_s, got_m = json.loads(s_json), json.loads(m_json)
        assert sorted(got_s, key=repr) == sorted(steps.get(key, []), key=repr), key
        assert sorted(got_m, key=repr) == sorted(miners.get(key, []), key=repr), key
        assert p_json is not None, key
        want = sorted(pays.get(key, []), key=lambda p: (p["block_number"], p["log_index"]))
        assert json.loads(p_json) == want, key
    return len(tasks)
