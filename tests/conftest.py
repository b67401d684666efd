"""Shared fixtures: real anvil, real PostgreSQL, real Redis.

Outside CI a test whose service is missing is skipped with the reason; under CI (CI=true) a
missing service fails the test instead, because CI must exercise every backend.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devnet.anvil import Anvil, AnvilNotFound, anvil_path

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_ADMIN_URL = os.environ.get(
    "CORLENS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CORLENS_TEST_REDIS", "redis://127.0.0.1:6379/0")


def unavailable(reason: str) -> None:
    """Skip locally, fail under CI."""
    if IN_CI:
        pytest.fail(f"required service unavailable under CI: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """The cycle collector off, after one collection: as in the indexing processes, which run
    it rarely (indexer.gc_tuning), whatever is left in reference cycles meanwhile stays."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    """A fresh anvil chain for one test."""
    try:
        anvil_path()
    except AnvilNotFound as e:
        unavailable(str(e))
    with Anvil() as node:
        yield node


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    if not _port_open("127.0.0.1", 5432):
        unavailable("PostgreSQL is not reachable at 127.0.0.1:5432")
    import sqlalchemy as sa

    name = f"corlens_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def redis_url() -> str:
    if not _port_open("127.0.0.1", 6379):
        unavailable("Redis is not reachable at 127.0.0.1:6379")
    return REDIS_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """Every store test runs on both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/corlens.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store_url(db_url: str) -> str:
    """``db_url`` migrated to the newest schema (what `corlens db upgrade` does)."""
    from indexer.db import upgrade

    upgrade(db_url)
    return db_url


SHARED_ABIS = Path(os.environ.get(
    "CORLENS_SHARED_ABIS", Path(__file__).resolve().parents[2] / "shared" / "abis"))


def public_abi(name: str) -> list[dict[str, object]]:
    """A public Cortensor ABI from ../shared/abis (reference data, never copied in)."""
    import json

    path = SHARED_ABIS / f"{name}.json"
    if not path.exists():
        pytest.fail(f"public ABI {path} not found: the repo expects ../shared/abis beside it "
                    "(or set CORLENS_SHARED_ABIS)")
    data = json.loads(path.read_text())
    return list(data["abi"] if isinstance(data, dict) else data)
