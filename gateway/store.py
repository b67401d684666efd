"""The only writer of the gateway's tables: API keys and request records.

Synchronous SQLAlchemy (the HTTP layer calls it through ``asyncio.to_thread``, off the request
path for accounting). SQLite gets WAL and a busy timeout, so several gateway processes can
share one file; PostgreSQL by URL. The schema comes from Alembic, never from here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from gateway.models import ApiKey, GatewayRequest

KEY_PREFIX = "clk_"
KEY_BYTES = 32  # 256 bits of entropy: a plain sha256 is a sound hash for such a key
DISPLAY_CHARS = 12  # "clk_" + 8 characters identify a key in listings

REQUESTS = GatewayRequest.__table__  # type: ignore[attr-defined]
KEYS = ApiKey.__table__  # type: ignore[attr-defined]


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``: WAL and a 30 s busy timeout on SQLite, pre-ping on PostgreSQL."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh API key: ``clk_`` + 43 url-safe characters."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


@dataclass(frozen=True)
class KeyInfo:
    id: int
    name: str
    prefix: str
    enabled: bool
    rpm_limit: int | None
    created_at: datetime
    last_used_at: datetime | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "prefix": self.prefix, "enabled": self.enabled,
            "rpm_limit": self.rpm_limit, "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
        }


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _info(row: Mapping[Any, Any]) -> KeyInfo:
    return KeyInfo(
        id=row["id"], name=row["name"], prefix=row["prefix"], enabled=row["enabled"],
        rpm_limit=row["rpm_limit"], created_at=row["created_at"],
        last_used_at=row["last_used_at"],
    )


class GatewayStore:
    """Keys and request records in the corlens database."""

    def __init__(self, database_url: str, engine: sa.Engine | None = None) -> None:
        self.url = database_url
        self.engine = engine or make_engine(database_url)
        self._insert_new = insert_new_requests(self.engine.dialect.name)

    # ---- keys --------------------------------------------------------------------------------

    def create_key(self, name: str, rpm_limit: int | None = None) -> tuple[KeyInfo, str]:
        """Store a new key; return it with the plaintext, which is never stored."""
        key = new_key()
        row = {
            "name": name, "key_hash": hash_key(key), "prefix": key[:DISPLAY_CHARS],
            "enabled": True, "rpm_limit": rpm_limit, "created_at": datetime.now(UTC),
            "last_used_at": None,
        }
        with self.engine.begin() as c:
            new_id = c.execute(sa.insert(KEYS).values(**row).returning(KEYS.c.id)).scalar_one()
        return _info({**row, "id": new_id}), key

    def list_keys(self) -> list[KeyInfo]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(KEYS).order_by(KEYS.c.id)).mappings().all()
        return [_info(r) for r in rows]

    def get_key(self, key_id: int) -> KeyInfo | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(KEYS).where(KEYS.c.id == key_id)).mappings().first()
        return _info(row) if row else None

    def set_key_enabled(self, key_id: int, enabled: bool) -> KeyInfo | None:
        with self.engine.begin() as c:
            c.execute(sa.update(KEYS).where(KEYS.c.id == key_id).values(enabled=enabled))
        return self.get_key(key_id)

    def find_key(self, key: str) -> KeyInfo | None:
        """The key whose hash matches ``key`` (compared in constant time), enabled or not."""
        digest = hash_key(key)
        with self.engine.connect() as c:
            row = c.execute(sa.select(KEYS).where(KEYS.c.key_hash == digest)).mappings().first()
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            return None
        return _info(row)

    # ---- accounting --------------------------------------------------------------------------

    def write_batch(self, rows: list[dict[str, Any]], used: Mapping[int, datetime]) -> None:
        """Insert request records and bump keys' ``last_used_at``, in one transaction.

        A request id already recorded is skipped (a retried flush is a no-op): one
        ``INSERT ... ON CONFLICT (request_id) DO NOTHING``, no read first."""
        with self.engine.begin() as c:
            if rows:
                c.execute(self._insert_new, rows)
            for key_id, at in used.items():
                c.execute(sa.update(KEYS).where(KEYS.c.id == key_id).values(last_used_at=at))

    def dispose(self) -> None:
        self.engine.dispose()


def insert_new_requests(dialect: str) -> Any:
    """An INSERT of request records that skips request ids already stored (SQLite and
    PostgreSQL spell it alike)."""
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(REQUESTS).on_conflict_do_nothing(index_elements=["request_id"])


def columns(names: Iterable[str]) -> list[sa.ColumnElement[Any]]:
    """Columns of ``gateway_request`` by name (for read queries)."""
    return [REQUESTS.c[n] for n in names]
