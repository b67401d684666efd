"""A task's lifecycle in one SQL statement, and its response document (the hot route).

One round trip reads the task, its steps, its miners' actions, its payments and the chain's
safe/finalized tags, all from the task's own row: the indexer keeps each child table's rows for
the task as a JSON array in it (``Task.steps_json``, ``miners_json``, ``payments_json``). A row
without one of them (none, unless written by something other than the indexer's store) is read
again with each child table folded into a JSON array by a correlated subquery
(``json_agg(json_build_object(..))`` on PostgreSQL, ``json_group_array(json_object(..))`` on
SQLite), as verify always reads it. The same statements run on both backends, sync through
SQLAlchemy or async through asyncpg. The document is built as plain dicts in the shape of
:class:`TaskDetail` and encoded by orjson: no model is instantiated per request.

>>> _sql("sqlite", materialized=False).count("json_group_array(json_object(")
3
>>> PG_MANY_TABLES.count("json_agg("), PG_MANY.count("json_agg(")
(3, 0)
>>> [_sql("sqlite", materialized=m).count("t.steps_json") for m in (True, False)]
[1, 0]
"""

from __future__ import annotations

import functools
import operator
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa

from api.links import Links
from api.payouts_view import payment_doc
from api.pg_async import AsyncPgPool, Coalescer
from indexer.config import ChainConfig
from indexer.finality import finality_of
from indexer.project import TASK_STATUSES
from indexer.rows import chain_order
from indexer.schema import (
    LIFECYCLE_MINER_COLS,
    LIFECYCLE_PAYMENT_COLS,
    LIFECYCLE_STEP_COLS,
    MINER_ACTIONS,
    TASK_COPIES,
)

KEY = ("chain_id", "session_id", "task_id")  # the task's primary key, the statement's parameters
TASK_COLS = (
    "global_id", "client_reference", "task_data", "status", "force_ended", "updated_block"
)
# The steps whose block time is a task's ``submitted_at`` (the earliest of them by block), the
# same here, computed from the task's steps already read, as in api/queries.py's task lists.
SUBMISSION_STEPS = ("submitted", "queued")
STEP_COLS = LIFECYCLE_STEP_COLS
ACTIONS = MINER_ACTIONS
MINER_COLS = LIFECYCLE_MINER_COLS
PAY_COLS = LIFECYCLE_PAYMENT_COLS
CHILDREN = (("task_step", STEP_COLS), ("task_miner", MINER_COLS), ("payment", PAY_COLS))
# The task row's own JSON copy of a child table (indexer/models.py: Task.steps_json), read
# instead of that table: one row instead of four index lookups, each a few pages that a 1M-task
# database does not keep in shared_buffers. bench/api.py's database, one connection, p50 of the
# statement: about 650 us with three lookups, 240 us with the payment lookup left, 200 us with
# none but the subqueries still in the statement as a fallback (PostgreSQL sets up their plans on
# every execution), 115 us (cached) with the fallback as a second statement; SELECT 1: 80 us.
MATERIALIZED = dict(zip((table for table, _ in CHILDREN), TASK_COPIES, strict=True))
STEP_ROLE = {
    "submitted": "client",
    "queued": "client",
    "assigned": "router",
    "acked": "miner",
    "precommitted": "router",
    "committed": "router",
    "ended": "router",
    "paid": "network",
}
STEP_ORDER = {s: i for i, s in enumerate(TASK_STATUSES)}
Row = dict[str, Any]
Key = tuple[int, int, int]  # chain_id, session_id, task_id
Tags = tuple[int | None, int | None]  # safe, finalized: finality_of's arguments after the block
NO_TAGS: Tags = (None, None)


class TaskRows(NamedTuple):
    """What the statement returns for one task; ``tags`` is (safe, finalized) or None."""

    task: Row
    steps: list[Row]
    miners: list[Row]
    payments: list[Row]
    tags: tuple[int, int] | None


def _select(dialect: str, materialized: bool) -> str:
    """Columns of one result row: task, tags, the three arrays of objects, the task's key.
    ``materialized``: the task row's own JSON copies of its child rows (NULL where a copy
    was never written); otherwise the child tables themselves (the fallback, and verify's)."""
    if materialized:
        subs = [f"t.{MATERIALIZED[table]}" for table, _ in CHILDREN]
    else:
        pg = dialect == "postgresql"
        agg, obj = ("json_agg", "json_build_object") if pg else ("json_group_array", "json_object")
        key = " AND ".join(f"c.{k} = t.{k}" for k in KEY)
        pairs = {table: ", ".join(f"'{x}', c.{x}" for x in cols) for table, cols in CHILDREN}
        subs = [
            f"(SELECT {agg}({obj}({pairs[table]})){'::text' if pg else ''} FROM {table} c"
            f" WHERE {key})"
            for table, _ in CHILDREN
        ]
    return (
        f"SELECT {', '.join(f't.{c}' for c in TASK_COLS)}, s.safe_block, s.finalized_block, "
        f"{', '.join(subs)}, t.session_id, t.task_id"
    )


TAGS = "LEFT JOIN chain_state s ON s.chain_id = t.chain_id"


@functools.cache
def _sql(dialect: str, bind: str = ":{name}", materialized: bool = True) -> str:
    """One task, by its key (binds formatted by ``bind`` from each key column's ``name`` and
    position ``n``: SQLAlchemy's ``:name``, or asyncpg's ``$n``)."""
    where = " AND ".join(f"t.{k} = {bind.format(name=k, n=n)}" for n, k in enumerate(KEY, 1))
    return f"{_select(dialect, materialized)} FROM task t {TAGS} WHERE {where}"


def _pg_many(materialized: bool) -> str:
    """Several tasks of one chain in one statement; the keys travel as one JSON text parameter
    (one value to encode instead of two arrays of them). For one task it costs more than
    :data:`PG_ONE`."""
    return (
        f"{_select('postgresql', materialized)} FROM json_to_recordset($2::json)"
        " AS k(session_id bigint, task_id bigint) JOIN task t ON t.chain_id = $1"
        f" AND t.session_id = k.session_id AND t.task_id = k.task_id {TAGS}"
    )


PG_ONE, PG_MANY = _sql("postgresql", "${n}"), _pg_many(True)
PG_ONE_TABLES, PG_MANY_TABLES = _sql("postgresql", "${n}", False), _pg_many(False)
# Where the JSON copies sit in a result row.
_JSON = slice(len(TASK_COLS) + 2, len(TASK_COLS) + 2 + len(CHILDREN))


def _copied(row: Any) -> bool:
    """Whether a materialized row holds all three JSON copies."""
    return None not in row[_JSON]


def _rows(raw: str | None) -> list[Row]:
    rows: list[Row] = orjson.loads(raw) if raw else []
    return rows


def _step_order(s: Row) -> tuple[int, int, int]:
    return STEP_ORDER[s["step"]], s["block_number"], s["log_index"]


_by_miner = operator.itemgetter("miner")
_by_block = operator.itemgetter("block_number")


def decode(row: Any) -> TaskRows:
    """One result row (a sequence in :func:`_sql`'s column order) as plain rows."""
    n = len(TASK_COLS)
    task = dict(zip(TASK_COLS, row[:n], strict=True))
    task["force_ended"] = bool(task["force_ended"])  # SQLite stores 0/1
    safe, final = row[n], row[n + 1]
    steps, miners, pays = (_rows(row[n + 2 + i]) for i in range(len(CHILDREN)))
    steps.sort(key=_step_order)
    miners.sort(key=_by_miner)
    pays.sort(key=chain_order)
    tags = None if safe is None else (int(safe), int(final))
    return TaskRows(task, steps, miners, pays, tags)


def fetch(conn: sa.Connection, key: Key, materialized: bool = True) -> TaskRows | None:
    """The rows of task ``key`` (chain_id, session_id, task_id) on any backend, or None:
    from the task row's JSON copies (``materialized``) where it has them all, else from the
    child tables."""
    params = dict(zip(KEY, key, strict=True))
    dialect = conn.dialect.name
    row = conn.execute(sa.text(_sql(dialect, materialized=materialized)), params).first()
    if row is not None and materialized and not _copied(row):
        row = conn.execute(sa.text(_sql(dialect, materialized=False)), params).first()
    return None if row is None else decode(row)


async def fetch_many_pg(pool: AsyncPgPool, keys: list[Key]) -> dict[Key, TaskRows]:
    """:func:`fetch` for many tasks on PostgreSQL: one statement per chain among ``keys``
    (and one more for those whose row lacks a JSON copy)."""
    if len(keys) == 1:
        rows = await pool.fetchall(PG_ONE, keys[0])
        if rows and not _copied(rows[0]):
            rows = await pool.fetchall(PG_ONE_TABLES, keys[0])
        return {keys[0]: decode(rows[0])} if rows else {}
    out = {}
    for chain_id in {k[0] for k in keys}:
        mine = [{"session_id": k[1], "task_id": k[2]} for k in keys if k[0] == chain_id]
        for sql in (PG_MANY, PG_MANY_TABLES):
            missing = []
            for row in await pool.fetchall(sql, (chain_id, orjson.dumps(mine).decode())):
                if sql is PG_MANY and not _copied(row):
                    missing.append({"session_id": row[-2], "task_id": row[-1]})
                else:
                    out[(chain_id, row[-2], row[-1])] = decode(row)
            if not missing:
                break
            mine = missing
    return out


class PgLifecycles:
    """Lifecycle reads on PostgreSQL: the async pool, and requests that arrive together
    coalesced into one statement."""

    def __init__(self, url: str) -> None:
        self.pool = AsyncPgPool(url)
        self.batch: Coalescer[Key, TaskRows] = Coalescer(self._many)

    async def _many(self, keys: list[Key]) -> dict[Key, TaskRows]:
        return await fetch_many_pg(self.pool, keys)

    async def get(self, key: Key) -> TaskRows | None:
        return await self.batch.get(key)

    async def close(self) -> None:
        await self.pool.close()


# Each miner action's columns: (action, tx column, block column, log index column).
ACTION_COLS = tuple((a, f"{a}_tx", f"{a}_block", f"{a}_log_index") for a in ACTIONS)


def _action(
    m: Row, cols: tuple[str, str, str, str], safe: int | None, final: int | None, links: Links
) -> Row | None:
    tx = m[cols[1]]
    if not tx:
        return None
    block = m[cols[2]]
    return {
        "tx_hash": tx,
        "block_number": block,
        "log_index": m[cols[3]],
        "finality": finality_of(block, safe, final),
        "explorer_url": links.tx(tx),
    }


def submitted_at(steps: list[Row]) -> int | None:
    """The block time of the earliest of a task's :data:`SUBMISSION_STEPS` (by block), as
    ``api.queries.list_tasks`` gives it; None without one.

    >>> submitted_at([{"step": "queued", "block_number": 9, "block_time": 90},
    ...               {"step": "acked", "block_number": 8, "block_time": 80}])
    90
    >>> submitted_at([]) is None
    True
    """
    firsts = [s for s in steps if s["step"] in SUBMISSION_STEPS]
    if not firsts:
        return None
    t = min(firsts, key=_by_block)["block_time"]
    return None if t is None else int(t)


def document(chain: ChainConfig, links: Links, session_id: int, task_id: int, r: TaskRows) -> Row:
    """The response document: exactly the fields of :class:`api.schemas.TaskDetail`."""
    (safe, final), t, tx = r.tags or NO_TAGS, r.task, links.tx
    return {
        "chain": chain.name,
        "session_id": session_id,
        "task_id": task_id,
        "global_id": t["global_id"],
        "client_reference": t["client_reference"],
        "task_data": t["task_data"],
        "status": t["status"],
        "force_ended": t["force_ended"],
        "submitted_at": submitted_at(r.steps),
        "updated_block": t["updated_block"],
        "steps": [  # STEP_COLS are StepOut's first fields, in order (tests/test_lifecycle.py)
            {
                **s,
                "actor_role": STEP_ROLE[s["step"]],
                "finality": finality_of(s["block_number"], safe, final),
                "explorer_url": tx(s["tx_hash"]),
            }
            for s in r.steps
        ],
        "miners": [
            {
                "address": m["miner"],
                "explorer_url": links.address(m["miner"]),
                **{cols[0]: _action(m, cols, safe, final, links) for cols in ACTION_COLS},
            }
            for m in r.miners
        ],
        "payments": [
            payment_doc(p, finality_of(p["block_number"], safe, final), links)
            for p in r.payments
        ],
        "dashboard_url": links.task_dashboard(session_id, task_id),
        "verify_url": links.verify(session_id, task_id),
    }


def encode(doc: Row) -> bytes:
    """JSON bytes of a document (orjson: a quarter of pydantic-core's time for this one)."""
    return orjson.dumps(doc)
