"""Alembic environment: targets SQLModel.metadata; batch mode on SQLite."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import gateway.models  # noqa: F401  (registers the gateway's tables)
import indexer.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from indexer.db import is_sqlite, make_engine

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or ""
    context.configure(
        url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=is_sqlite(url)
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url") or ""
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=is_sqlite(url)
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
