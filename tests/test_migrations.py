"""Alembic owns the schema: `upgrade head` on an empty database equals the models."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import gateway.models  # noqa: F401
import indexer.models  # noqa: F401
from indexer.db import (
    HEAD_REVISION,
    current_revision,
    ensure_schema,
    head_revision,
    make_engine,
    upgrade,
)
from indexer.errors import ConfigError


def test_upgrade_head_matches_models(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, SQLModel.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        assert current_revision(engine) == head_revision(db_url)
        # The shortcut that skips Alembic on a current database names the same head.
        assert HEAD_REVISION == head_revision(db_url), "bump indexer.db.HEAD_REVISION"
        upgrade(db_url)  # idempotent
    finally:
        engine.dispose()


def test_new_sqlite_file_created_from_models_equals_migrations(tmp_path: object) -> None:
    """A new SQLite file skips the migrations (migrations/fresh.py): the tables it gets must be
    the models' exactly, stamped at head, and Alembic must take it from there."""
    url = f"sqlite:///{tmp_path}/fresh.db"
    engine = make_engine(url)
    try:
        ensure_schema(url, engine)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, SQLModel.metadata) == []
            tables = set(sa.inspect(conn).get_table_names())
        assert tables == set(SQLModel.metadata.tables) | {"alembic_version"}
        assert current_revision(engine) == head_revision(url)
        upgrade(url)  # nothing left to apply
        ensure_schema(url, engine)  # current: a no-op
        assert current_revision(engine) == head_revision(url)
    finally:
        engine.dispose()


def test_postgres_refuses_outdated_schema(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        with pytest.raises(ConfigError, match="run `corlens db upgrade`"):
            ensure_schema(pg_url, engine)
        upgrade(pg_url)
        ensure_schema(pg_url, engine)
    finally:
        engine.dispose()


def test_sqlite_upgrades_itself(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    engine = make_engine(url)
    try:
        ensure_schema(url, engine)
        assert current_revision(engine) == head_revision(url)
        with engine.connect() as conn:
            mode = conn.execute(sa.text("PRAGMA journal_mode")).scalar()
        assert mode == "wal"
    finally:
        engine.dispose()
