"""``corlens demo``: a local Cortensor devnet on anvil, indexed into SQLite.

Starts anvil from node_modules, deploys the devnet contracts, drives a deterministic scenario
(sessions, user tasks, network-task rounds, payments, failure paths), writes the config it used
to ``<workdir>/demo.yaml`` and indexes the chain into ``<workdir>/demo.db`` with progress.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from api.cli_opts import serving_line
from devnet.anvil import Anvil
from indexer.config import load_settings
from indexer.errors import ConfigError
from indexer.runner import Summary, index_once, open_store, summarize
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
    serve_at: tuple[str, int] | None,
    quiet: bool,
    printer: Callable[[Progress], None],
    say: Callable[[str], None],
    on_indexed: Callable[[Summary], None],
) -> Summary:
    """Devnet, scenario, index; then (``serve_at``) the API with the indexer following the
    devnet in-process, until Ctrl-C."""
    from devnet.deploy import deploy_all
    from devnet.scenario import run_scenario

    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("--workdir", f"cannot create {workdir}: {e.strerror}") from None
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
        ledger = run_scenario(node.url, dep, seed=seed, sessions=sessions, tasks_per_session=tasks)
        cfg = devnet_config(node.url, dep.addresses, db_path, dep.start_block)
        cfg_path = workdir / "demo.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        settings = load_settings(cfg_path, env={})
        store = open_store(settings)
        chain = settings.chains[0]
        try:
            if not quiet:
                say(f"indexing into {db_path} (config written to {cfg_path})")
            asyncio.run(index_once(settings, chain, store, printer))
            summary = summarize(store, chain)
        finally:
            store.engine.dispose()
        on_indexed(summary)
        if serve_at is not None:
            import uvicorn

            from api.compose import serve_app

            host, port = serve_at
            base, line = serving_line(host, port)
            sid, tid = next(iter(sorted(ledger.tasks)))
            say(f"{line}; the indexer follows the devnet")
            say(f"  a task's lifecycle: {base}/api/v1/chains/local/sessions/{sid}/tasks/{tid}")
            say(
                f"  its verification:  {base}/api/v1/chains/local/sessions/{sid}/tasks/{tid}/verify"
            )
            say("Ctrl-C to stop")
            uvicorn.run(
                serve_app(settings, run_indexer=True), host=host, port=port, log_level="warning"
            )
        return summary
