"""``corlens demo``: a local Cortensor devnet on anvil, indexed into SQLite.

Starts anvil from node_modules, deploys the devnet contracts, drives a deterministic scenario
(sessions, user tasks, network-task rounds, payments, failure paths), writes the config it used
to ``<workdir>/demo.yaml`` and indexes the chain into ``<workdir>/demo.db`` with progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from devnet.anvil import Anvil
from indexer.config import load_settings
from indexer.runner import Summary, follow, index_once, open_store, summarize
from indexer.sync import Progress


def devnet_config(
    url: str, addresses: dict[str, str], db_path: Path, start_block: int = 0
) -> dict[str, Any]:
    """The config corlens uses for a devnet: SessionV2 and CognitiveV1 named, the rest resolved
    from SessionV2's getters as on a real chain."""
    return {
        "database_url": f"sqlite:///{db_path}",
        "chains": [
            {
                "name": "local",
                "preset": "local",
                "rpc_urls": [url],
                "poll_interval": 1.0,
                "contracts": {
                    "SessionV2": {"address": addresses["SessionV2"], "start_block": start_block},
                    "CognitiveV1": {"address": addresses["CognitiveV1"]},
                },
                "start_block": start_block,
            }
        ],
    }


def run_demo(
    workdir: Path,
    *,
    seed: int,
    sessions: int,
    tasks: int,
    follow_head: bool,
    quiet: bool,
    printer: Callable[[Progress], None],
    say: Callable[[str], None],
) -> Summary:
    from devnet.deploy import deploy_all
    from devnet.scenario import run_scenario

    workdir.mkdir(parents=True, exist_ok=True)
    db_path = (workdir / "demo.db").resolve()
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{db_path}{suffix}").unlink()
    with Anvil(slots_in_an_epoch=4) as node:
        if not quiet:
            say(f"devnet: anvil on {node.url} (pid {node.pid}); deploying contracts")
        dep = deploy_all(node.url)
        if not quiet:
            say(
                f"devnet: driving scenario seed={seed}: {sessions} sessions x {tasks} tasks, "
                "network rounds, payments, failure paths"
            )
        run_scenario(node.url, dep, seed=seed, sessions=sessions, tasks_per_session=tasks)
        cfg = devnet_config(node.url, dep.addresses, db_path, dep.start_block)
        cfg_path = workdir / "demo.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        settings = load_settings(cfg_path, env={})
        store = open_store(settings)
        chain = settings.chains[0]
        try:
            if not quiet:
                say(f"indexing into {db_path} (config written to {cfg_path})")
            asyncio.run(index_once(settings, chain, store, printer, say))
            if follow_head:
                say("following the devnet head; Ctrl-C to stop")

                async def run() -> None:
                    stop = asyncio.Event()
                    loop = asyncio.get_running_loop()
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        loop.add_signal_handler(sig, stop.set)
                    await follow(settings, chain, store, printer, say, stop)

                asyncio.run(run())
            return summarize(store, chain)
        finally:
            store.engine.dispose()
