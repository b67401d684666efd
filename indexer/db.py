"""Engines and schema checks. SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from indexer.errors import ConfigError, SchemaOutdated
from indexer.writer_start import in_process_only

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# The newest migration. A database already there is checked with one query and no Alembic
# import (a tenth of a second of every start); tests/test_migrations.py keeps it equal to
# Alembic's own head.
HEAD_REVISION = "0005"
SQLITE_PAGE_SIZE = 32768


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for another database or one in memory."""
    if not is_sqlite(url) or in_process_only(url):
        return None
    return Path(url.split("///", 1)[-1].split("?", 1)[0])


def make_engine(url: str, **kw: Any) -> sa.Engine:
    """An engine with the pragmas corlens relies on (WAL and a busy timeout on SQLite)."""
    if is_sqlite(url):
        file = sqlite_file(url)
        memory = file is None
        if file is not None:  # a new file's directory is made; in memory there is none to make
            folder = file.parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(
                    "database_url", f"cannot create the directory {folder}: {e.strerror}"
                ) from None
        connect_args: dict[str, Any] = {"timeout": 30}
        if memory:
            # Each new connection to an in-memory database opens an empty one of its own: every
            # thread (the indexer writes ranges from a worker thread) shares the one connection.
            # Its users take turns: the sync loop waits for a range's write before it reads.
            kw.setdefault("poolclass", sa.pool.StaticPool)
            connect_args["check_same_thread"] = False
        engine = sa.create_engine(url, connect_args=connect_args, **kw)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # Only a new, empty file takes it (before WAL mode, which fixes the page size).
            # Raw events are ~1 KB rows: on 32 KiB pages a backfill commits ~15% faster than on
            # the default 4 KiB.
            cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            # 32 MiB of page cache (the default is 2 MiB): the event table's four indexes stay
            # in memory while a backfill inserts into them.
            cur.execute("PRAGMA cache_size=-32768")
            cur.close()

        return engine
    kw.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kw)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    """The revision stamped in the database; None for a database Alembic never touched."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def upgrade(url: str) -> None:
    """Bring the database to the newest migration (``corlens db upgrade``)."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")


def reach(engine: sa.Engine) -> str | None:
    """:func:`current_revision`, a database that cannot be reached being a ConfigError naming
    ``database_url`` (as every command reports it)."""
    try:
        return current_revision(engine)
    except sa.exc.DatabaseError as e:  # unreachable, refused, or a file that is no database
        raise ConfigError("database_url", f"cannot connect: {e.orig}") from None


def ensure_schema(url: str, engine: sa.Engine) -> None:
    """SQLite: upgrade in place. PostgreSQL: refuse an outdated schema with what to run."""
    current = reach(engine)
    if current == HEAD_REVISION:
        return
    if is_sqlite(url):
        from migrations.fresh import create_fresh

        if current is None and create_fresh(engine, HEAD_REVISION):
            return
        upgrade(url)
        return
    head = head_revision(url)
    if current != head:
        raise SchemaOutdated(
            "database_url",
            f"schema is at revision {current or 'none'}, code expects {head}: "
            "run `corlens db upgrade` first",
        )
