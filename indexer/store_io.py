"""Projection I/O: load the rows a batch's events touch, and the event-derived session facts.

The store loads the current rows of every key a range touches (:func:`load_for`), lets the
:class:`~indexer.project.Projector` fold the events in, then writes the dirty rows back.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from indexer.decode import DecodedEvent
from indexer.project import Keys, Projector, Row
from indexer.rows import payments_json
from indexer.tables import (
    NetworkTask,
    NetworkTaskStep,
    Node,
    Payment,
    Session,
    Task,
    TaskMiner,
    TaskStep,
)

# (session, task) pairs per lookup statement: bounds one statement's parameters.
TUPLE_CHUNK = 5000
# Task columns load_for leaves out: the store rebuilds them whole from the rows it loads.
REBUILT_COPIES = ("steps_json", "miners_json")
# Bound parameters per statement stay well under SQLite's 32766 limit.
IN_CHUNK = 500


def chunks(seq: Sequence[Any], n: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def load_for(
    dialect: str,
    conn: sa.Connection,
    proj: Projector,
    events: list[DecodedEvent],
    keys: list[Keys],
) -> None:
    """Load the current rows of every key the events (with their ``keys``) touch."""
    cid = proj.chain_id
    task_keys: set[tuple[int, int]] = set()
    rounds: set[int] = set()
    nodes: set[str] = set()
    for e, k in zip(events, keys, strict=True):
        if k.task_id is not None and k.session_id is not None and e.contract != "CognitiveV1":
            task_keys.add((k.session_id, k.task_id))
        if e.contract == "CognitiveV1" and k.subject is not None:
            rounds.add(int(k.subject))
        if e.contract == "NodePool" and k.subject is not None:
            nodes.add(k.subject)
    task_targets: tuple[tuple[sa.Table, dict[Any, Row], str | None], ...] = (
        (Task, proj.tasks, None),
        (TaskStep, proj.steps, "step"),
        (TaskMiner, proj.miners, "miner"),
    )
    pairs = sorted(task_keys)
    for tbl, target, key in task_targets:
        # One statement per chunk of (session, task) pairs, whatever the number of sessions.
        # A task's copies of its steps and miners are rebuilt from them, never read here.
        cols = [c.name for c in tbl.columns if c.name not in REBUILT_COPIES]
        for chunk in chunks(pairs, TUPLE_CHUNK):
            for r in _rows_of_pairs(dialect, conn, tbl, cid, chunk, cols):
                row = dict(r)
                k2 = (row["session_id"], row["task_id"])
                target[(*k2, row[key]) if key else k2] = row
    proj.stored_tasks.update(proj.tasks)
    other: tuple[tuple[sa.Table, dict[Any, Row], str, list[Any]], ...] = (
        (NetworkTask, proj.rounds, "round_id", sorted(rounds)),
        (Node, proj.nodes, "address", sorted(nodes)),
    )
    for tbl, target2, col, ids in other:
        for chunk in chunks(ids):
            for r in conn.execute(
                sa.select(tbl).where(tbl.c.chain_id == cid, tbl.c[col].in_(chunk))
            ).mappings():
                target2[r[col]] = dict(r)
    tbl = NetworkTaskStep
    for chunk in chunks(sorted(rounds)):
        for r in conn.execute(
            sa.select(tbl).where(tbl.c.chain_id == cid, tbl.c.round_id.in_(chunk))
        ).mappings():
            proj.round_steps[(r["round_id"], r["step"], r["actor"])] = dict(r)


def _rows_of_pairs(
    dialect: str,
    conn: sa.Connection,
    tbl: sa.Table,
    cid: int,
    pairs: Sequence[tuple[int, int]],
    cols: Sequence[str] | None = None,
) -> Iterable[sa.RowMapping]:
    """Rows of ``tbl`` (``cols``, or all) for these (session, task) pairs, looked up pair by
    pair on the table's (chain_id, session_id, task_id) index. PostgreSQL joins two arrays: a
    row-value IN list of thousands of pairs took most of a backfill's time. SQLite joins the
    pairs as one JSON parameter, first (CROSS JOIN fixes the order): its plan for an IN list
    scanned the chain's whole table, and building the statement cost more than running it."""
    names = tuple(cols or [c.name for c in tbl.columns])
    if dialect == "sqlite":
        pairs_json = orjson.dumps(list(pairs)).decode()
        return conn.execute(_sqlite_pairs(tbl, names), {"pairs": pairs_json, "cid": cid}).mappings()
    if dialect == "postgresql":
        sql = (
            f"SELECT {', '.join(f't.{c}' for c in names)} FROM {tbl.name} AS t "
            "JOIN unnest(%s::bigint[], %s::bigint[]) AS k(s, i) "
            "ON t.session_id = k.s AND t.task_id = k.i WHERE t.chain_id = %s"
        )
        params = ([p[0] for p in pairs], [p[1] for p in pairs], cid)
        return conn.exec_driver_sql(sql, params).mappings()
    pair = sa.tuple_(tbl.c.session_id, tbl.c.task_id)
    q = sa.select(*(tbl.c[c] for c in names)).where(tbl.c.chain_id == cid, pair.in_(pairs))
    return conn.execute(q).mappings()


@functools.cache
def _sqlite_pairs(tbl: sa.Table, names: tuple[str, ...]) -> sa.TextualSelect:
    """The SQLite lookup by pairs, typed by the table's columns so that JSON columns read back
    as values, as through any other select."""
    sql = (
        f"SELECT {', '.join(f't.{c}' for c in names)} FROM json_each(:pairs) AS k "
        f"CROSS JOIN {tbl.name} AS t ON t.chain_id = :cid "
        "AND t.session_id = json_extract(k.value, '$[0]') "
        "AND t.task_id = json_extract(k.value, '$[1]')"
    )
    return sa.text(sql).columns(*(tbl.c[c] for c in names))


def session_facts(conn: sa.Connection, proj: Projector) -> None:
    """Event-derived session columns (creation tx, deactivation) on top of snapshots."""
    tbl = Session
    for sid, facts in proj.sessions.items():
        exists = conn.execute(
            sa.select(tbl.c.session_id).where(
                tbl.c.chain_id == proj.chain_id, tbl.c.session_id == sid
            )
        ).first()
        if exists is None:
            conn.execute(
                tbl.insert().values(
                    chain_id=proj.chain_id,
                    session_id=sid,
                    ephemeral_nodes=[],
                    dedicated_nodes=[],
                    routers=[],
                    miners=facts.get("miners", []),
                    active=facts.get("active", True),
                    **{k: v for k, v in facts.items() if k not in ("miners", "active")},
                )
            )
        else:
            conn.execute(
                tbl.update()
                .where(tbl.c.chain_id == proj.chain_id, tbl.c.session_id == sid)
                .values(**facts)
            )


def set_payments_json(dialect: str, conn: sa.Connection, proj: Projector) -> set[tuple[int, int]]:
    """Set ``payments_json`` on the tasks whose copy changes; return the tasks to write: those
    the events changed and those (stored, or created in this batch) with new payments.

    A stored task's copy gains its new payments. A new task's comes from the payment table too
    when it may have some there: payments stored before it had a row (an index that starts
    after the task was submitted). A task submitted in this batch has none (a payment names a
    task that exists); looking them all up cost ~20% of a PostgreSQL backfill."""
    paid: dict[tuple[int, int], list[Row]] = {}
    for p in proj.payments:
        k = (p.get("session_id"), p.get("task_id"))
        if k in proj.tasks:
            paid.setdefault(k, []).append(p)
    dirty = proj.dirty_tasks | paid.keys()
    stored = proj.stored_tasks
    fresh = {k for k in dirty if k not in stored or proj.tasks[k]["payments_json"] is None}
    look = sorted(k for k in fresh if k in stored or (*k, "submitted") not in proj.steps)
    earlier: dict[tuple[int, int], list[Row]] = {}
    for chunk in chunks(look, TUPLE_CHUNK):
        for r in _rows_of_pairs(dialect, conn, Payment, proj.chain_id, chunk):
            earlier.setdefault((r["session_id"], r["task_id"]), []).append(dict(r))
    for k in dirty:
        t = proj.tasks[k]
        if k in fresh:
            t["payments_json"] = payments_json(earlier.get(k, []), paid.get(k, []))
        elif k in paid:
            t["payments_json"] = payments_json(orjson.loads(t["payments_json"]), paid[k])
    return dirty
