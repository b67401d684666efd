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


def test_0004_0005_fill_the_lifecycle_json_of_existing_tasks(db_url: str) -> None:
    """Tasks stored before 0004 get steps_json, miners_json (0004) and payments_json (0005)
    built from their child rows."""
    from alembic import command

    from indexer.db import alembic_config
    from tests.indexing import check_lifecycle_copies

    command.upgrade(alembic_config(db_url), "0003")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO task (chain_id, session_id, task_id, status, force_ended, miners,"
                " node_ids, first_block, updated_block) VALUES"
                " (31337, 1, 1, 'acked', false, '[]', '[]', 5, 7),"
                " (31337, 1, 2, 'submitted', false, '[]', '[]', 6, 6)"))
            for step, block in (("submitted", 5), ("assigned", 6), ("acked", 7)):
                conn.execute(sa.text(
                    "INSERT INTO task_step (chain_id, session_id, task_id, step, event, tx_hash,"
                    " block_number, log_index, block_time, actor) VALUES"
                    " (31337, 1, 1, :s, 'E', :h, :b, 2, 100, NULL)"),
                    {"s": step, "h": f"0x{block:064x}", "b": block})
            conn.execute(sa.text(
                "INSERT INTO task_miner (chain_id, session_id, task_id, miner, assigned_block,"
                " ack_tx, ack_block, ack_log_index) VALUES (31337, 1, 1, '0xm', 6, '0xa', 7, 3)"))
            for i, block in ((9, 9), (8, 8)):
                conn.execute(sa.text(
                    "INSERT INTO payment (chain_id, tx_hash, log_index, kind, session_id, task_id,"
                    " node, amount, block_number) VALUES"
                    " (31337, :h, 1, 'allocation', 1, 1, '0xm', '12', :b)"),
                    {"h": f"0x{i:064x}", "b": block})
        upgrade(db_url)
        assert check_lifecycle_copies(engine) == 2
        with engine.connect() as conn:
            empty = conn.execute(sa.text(
                "SELECT steps_json, miners_json, payments_json FROM task WHERE task_id = 2")).one()
        assert tuple(empty) == ("[]", "[]", "[]")
    finally:
        engine.dispose()


def test_core_tables_mirror_the_models() -> None:
    """indexer/tables.py (what the indexing processes use, without SQLModel) is current with
    the models, and every table, index and column default renders alike from both, on both
    backends. The indexing processes then load neither SQLModel nor the ORM."""
    import subprocess
    import sys

    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    from indexer import tables, tables_gen

    assert tables_gen.render() == tables_gen.TARGET.read_text(), (
        "indexer/tables.py is stale: run `python -m indexer.tables_gen`")
    models = SQLModel.metadata.tables
    assert sorted(tables.metadata.tables) == sorted(models)
    for name, mirror in tables.metadata.tables.items():
        model = models[name]
        for dialect in (sqlite.dialect(), postgresql.dialect()):
            assert (str(CreateTable(mirror).compile(dialect=dialect))
                    == str(CreateTable(model).compile(dialect=dialect))), name
            assert (sorted(str(CreateIndex(i).compile(dialect=dialect)) for i in mirror.indexes)
                    == sorted(str(CreateIndex(i).compile(dialect=dialect))
                              for i in model.indexes)), name
        for col in model.columns:
            got, want = mirror.c[col.name].default, col.default
            assert getattr(got, "arg", None) == getattr(want, "arg", None), f"{name}.{col.name}"
    probe = ("import sys, api.entry, api.cli, indexer.runner, indexer.writer_proc, "
             "migrations.fresh; print(sorted(m for m in sys.modules if m.startswith("
             "('sqlmodel', 'sqlalchemy.orm', 'indexer.models', 'gateway.models'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout
