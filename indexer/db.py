"""Engines and schema checks. SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from indexer.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, **kw: Any) -> sa.Engine:
    """An engine with the pragmas corlens relies on (WAL and a busy timeout on SQLite)."""
    if is_sqlite(url):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30}, **kw)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    kw.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kw)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str) -> None:
    """Bring the database to the newest migration (``corlens db upgrade``)."""
    command.upgrade(alembic_config(url), "head")


def ensure_schema(url: str, engine: sa.Engine) -> None:
    """SQLite: upgrade in place. PostgreSQL: refuse an outdated schema with what to run."""
    if is_sqlite(url):
        upgrade(url)
        return
    try:
        current = current_revision(engine)
    except sa.exc.OperationalError as e:
        raise ConfigError("database_url", f"cannot connect: {e.orig}") from None
    head = head_revision(url)
    if current != head:
        raise ConfigError(
            "database_url",
            f"schema is at revision {current or 'none'}, code expects {head}: "
            "run `corlens db upgrade` first",
        )
