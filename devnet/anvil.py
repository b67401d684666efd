"""Start and stop a local anvil chain from the project's node_modules.

anvil comes from the npm package ``@foundry-rs/anvil`` pinned in ``package.json``; nothing is
downloaded here. :class:`Anvil` picks a free loopback port, waits until the node answers
``eth_chainId``, and stops the process (and only it) on exit.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
# Where `npm ci` puts the binary; CORLENS_ANVIL overrides for a system-wide install.
DEFAULT_ANVIL = REPO_ROOT / "node_modules" / ".bin" / "anvil"
# anvil answers within about a second on this machine; 30 s covers a loaded CI box.
START_TIMEOUT_S = 30.0


class AnvilNotFound(RuntimeError):
    """anvil is not installed where corlens looks for it."""


def anvil_path() -> Path:
    """Return the anvil binary, or raise :class:`AnvilNotFound` naming the fix."""
    env = os.environ.get("CORLENS_ANVIL")
    if env:
        path = Path(env)
    elif DEFAULT_ANVIL.exists():
        path = DEFAULT_ANVIL
    else:
        found = shutil.which("anvil")
        path = Path(found) if found else DEFAULT_ANVIL
    if not path.exists():
        raise AnvilNotFound(
            f"anvil not found at {path}: run `npm ci` in {REPO_ROOT} "
            "(it installs @foundry-rs/anvil from package.json) or set CORLENS_ANVIL"
        )
    return path


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anvil:
    """One anvil process on a loopback port.

    >>> with Anvil() as node:          # doctest: +SKIP
    ...     node.rpc("eth_chainId")
    '0x7a69'
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        chain_id: int | None = None,
        accounts: int = 20,
        fork_url: str | None = None,
        fork_block: int | None = None,
        slots_in_an_epoch: int | None = None,
        block_time: float | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = [
            str(anvil_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--accounts",
            str(accounts),
            "--silent",
        ]
        if chain_id is not None:
            self._args += ["--chain-id", str(chain_id)]
        if fork_url is not None:
            self._args += ["--fork-url", fork_url]
            if fork_block is not None:
                self._args += ["--fork-block-number", str(fork_block)]
        if slots_in_an_epoch is not None:
            self._args += ["--slots-in-an-epoch", str(slots_in_an_epoch)]
        if block_time is not None:
            self._args += ["--block-time", str(block_time)]
        self._args += extra_args or []
        self._proc: subprocess.Popen[bytes] | None = None
        self._client = httpx.Client(timeout=30.0)
        self._id = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> Anvil:
        self._proc = subprocess.Popen(
            self._args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"anvil exited with {self._proc.returncode}: {err.strip()}")
            try:
                self.rpc("eth_chainId")
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"anvil did not answer on {self.url} within {START_TIMEOUT_S:.0f}s")

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """One JSON-RPC call; raises RuntimeError carrying the node's error message."""
        self._id += 1
        resp = self._client.post(
            self.url,
            json={"jsonrpc": "2.0", "id": self._id, "method": method, "params": params or []},
        )
        body = resp.json()
        if "error" in body:
            raise RuntimeError(f"{method}: {body['error'].get('message', body['error'])}")
        return body["result"]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr:
            proc.stderr.close()
        self._client.close()

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
