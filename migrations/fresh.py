"""A new, empty SQLite file gets the schema in one go: the models' tables, stamped at head.

SQLite only (the statements below are its dialect).

Running the migrations one by one on an empty SQLite file costs most of a second of every
``corlens index`` into a new file (Alembic's import, then batch-mode table rebuilds); creating
the tables from the models gives the same schema (tests/test_migrations.py compares the two) and
the stamp lets later migrations apply as usual. Anything not empty goes through Alembic.
"""

from __future__ import annotations

import sqlalchemy as sa


def create_fresh(engine: sa.Engine, revision: str) -> bool:
    """Create every table and stamp ``revision`` if the database has no table yet; in one
    transaction, so a concurrent creator makes this one fail rather than half-apply. Returns
    False, changing nothing, when the database is not empty."""
    from indexer.tables import metadata  # the models' tables in Core, without SQLModel

    with engine.connect() as conn:
        # The sqlite3 module runs DDL outside any transaction of its own: take the write lock
        # first, so that a second process waits here and then finds the tables.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            if sa.inspect(conn).get_table_names():
                conn.rollback()
                return False
            metadata.create_all(conn)
            conn.exec_driver_sql(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
            conn.exec_driver_sql(
                "INSERT INTO alembic_version (version_num) VALUES (?)", (revision,)
            )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return True
