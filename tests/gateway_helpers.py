"""Helpers for the gateway tests: configs, a migrated SQLite file, the gateway served in-process
by a real uvicorn on the test's event loop or as a real ``corlens gateway`` process, and a
private ``redis-server`` a test may stop and restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from devnet.anvil import free_port
from devnet.routers import RouterServer
from gateway.app import Gateway, create_gateway_app
from gateway.config import load_gateway_config
from gateway.store import GatewayStore

ADMIN = "test-admin-token"
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
CORLENS = Path(sys.executable).parent / "corlens"
_TEMPLATE: dict[str, Path] = {}


@pytest.fixture(name="anyio_backend")
def anyio_backend_fixture() -> str:
    return "asyncio"


@pytest.fixture(name="backend", params=["memory", "redis"])
def backend_fixture(request: pytest.FixtureRequest) -> str | None:
    """Each test runs with in-process capacity (None) and with the shared Redis (its URL)."""
    if request.param == "memory":
        return None
    return str(request.getfixturevalue("redis_url"))


def migrated_sqlite(tmp_path: Path) -> str:
    """A SQLite URL at the newest schema (copied from one migrated per test session)."""
    if "db" not in _TEMPLATE:
        from indexer.db import upgrade

        base = Path(os.environ.get("TMPDIR", "/tmp")) / f"corlens-gw-template-{uuid.uuid4().hex}"
        base.mkdir(parents=True)
        upgrade(f"sqlite:///{base}/t.db")
        _TEMPLATE["db"] = base / "t.db"
    target = tmp_path / "gw.db"
    shutil.copy(_TEMPLATE["db"], target)
    return f"sqlite:///{target}"


def sessions_of(router: RouterServer, ids: list[int], limit: int, token: str | None = None,
                chain: str = "local") -> list[dict[str, Any]]:
    return [{"router_url": router.url, "session_id": s, "max_inflight": limit,
             "label": f"{router.port}:{s}", "router_token": token, "chain": chain} for s in ids]


def gateway_section(models: dict[str, list[dict[str, Any]]], **kw: Any) -> dict[str, Any]:
    """A ``gateway:`` section; each test gets its own Redis key prefix."""
    section: dict[str, Any] = {
        "models": {m: {"sessions": s} for m, s in models.items()},
        "redis_prefix": f"corlens:test:{uuid.uuid4().hex[:10]}:",
        "accounting": {"flush_interval": 0.05},
    }
    section.update(kw)
    return section


def add_key(db_url: str, rpm: int | None = None) -> tuple[int, str]:
    store = GatewayStore(db_url)
    try:
        info, key = store.create_key("test", rpm)
    finally:
        store.dispose()
    return info.id, key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Served:
    gateway: Gateway
    url: str


@asynccontextmanager
async def serve_gateway(section: dict[str, Any], *, db_url: str, redis_url: str | None,
                        replica_id: str = "r1", verify_base_url: str | None = None,
                        ) -> AsyncIterator[Served]:
    """The gateway served by uvicorn on this event loop (a real HTTP server)."""
    gw = Gateway(load_gateway_config(section), database_url=db_url, redis_url=redis_url,
                 admin_token=ADMIN, replica_id=replica_id, verify_base_url=verify_base_url)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_gateway_app(gw), host="127.0.0.1", port=port,
                                           log_level="error", access_log=False, backlog=4096))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 15
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        await asyncio.sleep(0.01)
    try:
        yield Served(gw, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await task


class GatewayProcess:
    """``corlens gateway --config FILE --port P`` as a child process."""

    def __init__(self, config_path: Path, replica_id: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.replica_id = replica_id
        self._args = [str(CORLENS), "gateway", "--config", str(config_path), "--port",
                      str(self.port), "--replica-id", replica_id]
        self._env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        self.proc = subprocess.Popen(self._args, env=self._env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"gateway exited {self.proc.returncode}: {err}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("gateway process did not answer /health")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()


def write_config(path: Path, section: dict[str, Any], *, db_url: str, redis_url: str | None
                 ) -> Path:
    cfg: dict[str, Any] = {"database_url": db_url, "admin_token": ADMIN, "gateway": section}
    if redis_url:
        cfg["redis_url"] = redis_url
    path.write_text(yaml.safe_dump(cfg))
    return path


class RedisServer:
    """A private redis-server on a free loopback port (no persistence), stoppable mid-test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        import socket

        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


async def router_max(router: RouterServer) -> dict[int, int]:
    """The highest concurrency the router saw per session (its own record)."""
    return {s: st.max_inflight for s, st in router.app.stats.items()}


class RouterProcess:
    """``python -m devnet.routers`` as a child process (its own interpreter: load tests keep
    the router off the test's GIL). Stats and control over HTTP."""

    def __init__(self, sessions: list[int], *, latency: float = 0.02, tokens: int = 8,
                 gap: float = 0.0, token: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = [sys.executable, "-m", "devnet.routers", "--port", str(self.port),
                      "--sessions", ",".join(map(str, sessions)), "--latency", str(latency),
                      "--tokens", str(tokens), "--gap", str(gap)]
        if token:
            self._args += ["--token", token]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RouterProcess:
        self.proc = subprocess.Popen(self._args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/stats", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("router process did not start")

    def stats(self) -> dict[int, dict[str, int]]:
        data = httpx.get(self.url + "/stats", timeout=5).json()["sessions"]
        return {int(s): v for s, v in data.items()}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> RouterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def stream_and_leave(host: str, port: int, key: str, body: bytes,
                           timeout: float = 30) -> bool:
    """One raw HTTP/1.1 streaming request that reads until the first SSE event, then hangs up
    (a plain socket: a thousand of these cost the test little CPU)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
    try:
        async with asyncio.timeout(timeout):
            return await _first_event(reader, writer, key, body)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _first_event(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str,
                       body: bytes) -> bool:
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return False
    data = b""
    while b"data: {" not in data:
        chunk = await reader.read(4096)
        if not chunk:
            return False
        data += chunk
    return True
