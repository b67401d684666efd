"""`corlens serve` as a user runs it: what it prints, and what it reports with the RPC down."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from devnet.anvil import free_port
from tests.indexing import write_config
from tests.test_indexer_process import CORLENS, LineReader, start_cli, wait_for

ADDRS = {"SessionV2": "0x" + "11" * 20, "CognitiveV1": "0x" + "22" * 20}


def test_serve_with_the_rpc_down_says_so_once_and_reports_lag_unknown(tmp_path: Path) -> None:
    """Lag is unknown while the head was never read: /api/v1/chains, /status and /metrics agree
    (null, no sample), /ready says why; the console names the URL served and the RPC failure,
    once for the streak and without the URL's secret."""
    cfg = write_config(
        tmp_path / "c.yaml", "http://127.0.0.1:1/secret-key", ADDRS, f"sqlite:///{tmp_path}/c.db"
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_cli("serve", "--config", cfg, "--port", str(port))
    assert proc.stderr is not None
    lines = LineReader(proc.stderr)
    failed = "local: no RPC URL answered"
    try:
        wait_for(lambda: lines.has(failed), 60, "the RPC failure on the console")
        assert lines.has(f"serving the API on {base} (docs: {base}/docs)"), lines.lines
        (chain,) = httpx.get(f"{base}/api/v1/chains").json()["chains"]
        assert chain["head_block"] == -1 and chain["lag_blocks"] is None, chain

        def rpc_errors() -> int:
            (st,) = httpx.get(f"{base}/status").json()["chains"]
            assert st["lag_blocks"] is None and failed in st["indexer_message"], st
            return int(st["rpc_errors"]["eth_chainId"])

        first = rpc_errors()
        ready = httpx.get(f"{base}/ready")
        assert ready.status_code == 503 and ready.json()["chains"] == ["local"]
        assert ready.json()["reason"].startswith("head unknown: the chain's RPC has not answered")
        metrics = httpx.get(f"{base}/metrics").text
        assert "corlens_indexer_events{" in metrics
        assert "corlens_indexer_lag_blocks{" not in metrics, metrics
        # The indexer tries again (and fails the same way); the console does not repeat it.
        wait_for(lambda: rpc_errors() >= 2 * first, 60, "a second failed start")
        time.sleep(0.5)
        assert sum(failed in x for x in lines.lines) == 1, lines.lines
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
    text = "\n".join([*lines.lines, rest])
    assert "secret-key" not in text and "Traceback" not in text, text


def test_without_any_config_serve_warns_and_a_new_sqlite_file_is_named(tmp_path: Path) -> None:
    """No --config, no $CORLENS_CONFIG, no ./corlens.yaml: serve says it serves no chain and how
    to configure one; every command that creates ./corlens.db says so (once: when it is new)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORLENS_")}
    created = f"database: creating a new SQLite file {tmp_path / 'corlens.db'}"
    r, again = (
        subprocess.run(
            [*CORLENS, *cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        for cmd in (["keys", "list"], ["db", "upgrade"])
    )
    assert r.returncode == 0 and created in r.stderr, r.stderr
    assert again.returncode == 0 and "creating" not in again.stderr, again.stderr
    (tmp_path / "corlens.db").unlink()
    port = free_port()
    proc = subprocess.Popen(
        [*CORLENS, "serve", "--no-indexer", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines = LineReader(proc.stderr)
    try:
        wait_for(lambda: lines.has("serving the API on"), 60, "serve to start")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    text = "\n".join(lines.lines)
    assert "warning: no config file found: no chain configured (config key chains)" in text, text
    assert "--config FILE" in text and created in text, text
