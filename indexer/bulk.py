"""Bulk upserts as plain tuples through the driver's executemany.

SQLAlchemy Core builds and processes every row's parameters on the way in; on the indexer's
write path that bookkeeping cost more than the database's own work. :class:`BulkWriter` renders
one ``INSERT ... ON CONFLICT`` per (table, columns) once and hands the driver tuples, serialising
JSON columns itself (:func:`json_text`: the text differs from the Core ``JSON`` type's in
whitespace and escapes only, so rows written either way read back the same). Tables with types
this module does not render (dates) go through Core.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson
import sqlalchemy as sa

Row = dict[str, Any]
# Rows per executemany call: bounds the parameter list held at once.
CHUNK = 5000
# PostgreSQL: from this many rows, COPY into a staging table beats executemany.
COPY_FROM = 200
# Column types passed to the driver as they are (ints, strings, booleans, None) or as JSON text.
PLAIN = (sa.Integer, sa.String, sa.Boolean, sa.JSON)


def _plain(t: Any) -> bool:
    """A type whose values go to the driver unchanged (or as JSON text). A decorator such as
    sqlmodel's AutoString counts when it leaves bind values alone."""
    if isinstance(t, sa.TypeDecorator):
        if type(t).process_bind_param is not sa.TypeDecorator.process_bind_param:
            return False
        t = t.impl_instance
    return isinstance(t, PLAIN)


def json_text(v: Any) -> str:
    """The JSON text of a column value: orjson's (compact, UTF-8; a fifth of ``json.dumps``'s
    time), or ``json.dumps``'s for what orjson refuses (integers wider than 64 bits, such as
    uint256 amounts; lone surrogates). Both read back as the same value."""
    try:
        return orjson.dumps(v).decode()
    except TypeError:
        return json.dumps(v)


@dataclass(frozen=True)
class Plan:
    """How rows with these columns go into one table."""

    insert_values: str  # INSERT ... VALUES (marks) ON CONFLICT ...: for executemany
    insert_from: str  # INSERT ... SELECT ... FROM {staging} ON CONFLICT ...: after a COPY
    staging: str  # the session's temporary table for the COPY
    create_staging: str
    pick: Callable[[Row], tuple[Any, ...]]  # row dict -> parameter tuple
    pk: tuple[str, ...]


class BulkWriter:
    """``write``: insert or upsert for one dialect (SQLite or PostgreSQL). On PostgreSQL large
    batches go through COPY into a temporary staging table and one ``INSERT ... SELECT``."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self.pg = dialect.name == "postgresql"
        self.mark = "%s" if self.pg else "?"
        self.quote = dialect.identifier_preparer.quote
        self._plans: dict[tuple[str, tuple[str, ...], bool, frozenset[str]], Plan] = {}
        self._supported: dict[str, bool] = {}

    def supports(self, tbl: sa.Table) -> bool:
        ok = self._supported.get(tbl.name)
        if ok is None:
            ok = self._supported[tbl.name] = all(_plain(c.type) for c in tbl.columns)
        return ok

    def _plan(
        self, tbl: sa.Table, cols: tuple[str, ...], update: bool, insert_only: frozenset[str]
    ) -> Plan:
        key = (tbl.name, cols, update, insert_only)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        pk = tuple(c.name for c in tbl.primary_key.columns)
        q = self.quote
        sets = [f"{q(c)} = excluded.{q(c)}" for c in cols if c not in pk and c not in insert_only]
        action = f"DO UPDATE SET {', '.join(sets)}" if update and sets else "DO NOTHING"
        target = f"ON CONFLICT ({', '.join(q(c) for c in pk)}) " if pk else "ON CONFLICT "
        names = ", ".join(q(c) for c in cols)
        staging = q(f"_bulk_{tbl.name}_{len(self._plans)}")
        json_at = [i for i, c in enumerate(cols) if isinstance(tbl.c[c].type, sa.JSON)]
        pick: Callable[[Row], Any] = itemgetter(*cols)
        if len(cols) == 1:
            one = pick

            def pick(r: Row) -> tuple[Any, ...]:
                return (one(r),)

        if json_at:
            plain = pick

            def pick(r: Row) -> tuple[Any, ...]:
                t = list(plain(r))
                for i in json_at:
                    t[i] = json_text(t[i])
                return tuple(t)

        plan = Plan(
            insert_values=f"INSERT INTO {q(tbl.name)} ({names}) "
            f"VALUES ({', '.join([self.mark] * len(cols))}) {target}{action}",
            insert_from=f"INSERT INTO {q(tbl.name)} ({names}) SELECT {names} FROM {staging} "
            f"{target}{action}",
            staging=staging,
            # Column types without constraints: rows may leave out columns the table requires.
            create_staging=f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} "
            f"ON COMMIT DELETE ROWS AS SELECT {names} FROM {q(tbl.name)} WITH NO DATA",
            pick=pick,
            pk=pk,
        )
        self._plans[key] = plan
        return plan

    def write(
        self,
        conn: sa.Connection,
        tbl: sa.Table,
        rows: Sequence[Row],
        *,
        update: bool = True,
        insert_only: frozenset[str] = frozenset(),
    ) -> None:
        """Insert ``rows`` (dicts with the same keys, all columns of ``tbl``); on a primary-key
        conflict update the non-key columns they carry but ``insert_only`` (``update``), or
        skip the row."""
        if not rows:
            return
        cols = tuple(rows[0])
        unknown = [c for c in cols if c not in tbl.c]
        if unknown:
            raise KeyError(f"{tbl.name} has no column {unknown}")
        plan = self._plan(tbl, cols, update, insert_only)
        params = [plan.pick(r) for r in rows]
        if self.pg and len(params) >= COPY_FROM and _distinct_keys(rows, plan.pk):
            copy_rows(conn, plan.create_staging, f"COPY {plan.staging} FROM STDIN", params)
            conn.exec_driver_sql(plan.insert_from)
            conn.exec_driver_sql(f"DELETE FROM {plan.staging}")  # reused within the transaction
            return
        for i in range(0, len(params), CHUNK):
            conn.exec_driver_sql(plan.insert_values, params[i : i + CHUNK])


def _distinct_keys(rows: Sequence[Row], pk: tuple[str, ...]) -> bool:
    """One ``INSERT ... SELECT`` may not update the same row twice; executemany may."""
    get = itemgetter(*pk)
    return len({get(r) for r in rows}) == len(rows)


def copy_rows(
    conn: sa.Connection, prepare: str | None, copy_sql: str, rows: Iterable[tuple[Any, ...]]
) -> None:
    """PostgreSQL: run ``prepare`` (if any), then ``COPY ... FROM STDIN`` with ``rows``."""
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if prepare:
            cur.execute(prepare)
        with cur.copy(copy_sql) as copy:
            for r in rows:
                copy.write_row(r)
    finally:
        cur.close()
