"""Read-only queries behind the routes: one function per question, plain rows out.

Keyset pagination everywhere: ``after`` is the previous page's last key; each function fetches
``limit + 1`` rows to know whether another page exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from api.audit import parse_amount, pending_balance
from api.lifecycle import SUBMISSION_STEPS
from indexer.models import (
    Block,
    ChainState,
    Event,
    NetworkTask,
    NetworkTaskStep,
    Node,
    Payment,
    Session,
    Task,
    TaskMiner,
    TaskStep,
    table,
)
from indexer.schema import TASK_COPIES

Row = dict[str, Any]


CHAIN, BLOCK, EVENT = table(ChainState), table(Block), table(Event)
SESSION, TASK, STEP, MINER = table(Session), table(Task), table(TaskStep), table(TaskMiner)
# A task's columns but its JSON copies of its children (the lifecycle route's, ~2 KB a task).
TASK_FIELDS = [c for c in TASK.columns if c.name not in TASK_COPIES]
ROUND, ROUND_STEP, NODE, PAYMENT = (
    table(NetworkTask),
    table(NetworkTaskStep),
    table(Node),
    table(Payment),
)


def chain_state(conn: sa.Connection, chain_id: int) -> Row | None:
    r = conn.execute(sa.select(CHAIN).where(CHAIN.c.chain_id == chain_id)).mappings().first()
    return dict(r) if r else None


def lag_blocks(head: int, cursor: int) -> int | None:
    """Blocks the cursor is behind the head; None while the head was never read (-1), as an
    unreachable RPC leaves it: unknown, not zero.

    >>> lag_blocks(100, 90), lag_blocks(-1, -1)
    (10, None)
    """
    return max(0, head - cursor) if head >= 0 else None


def block_time(conn: sa.Connection, chain_id: int, number: int) -> int | None:
    v = conn.execute(
        sa.select(BLOCK.c.timestamp).where(BLOCK.c.chain_id == chain_id, BLOCK.c.number == number)
    ).scalar()
    return int(v) if v is not None else None


def _page(rows: Sequence[Any], limit: int) -> tuple[list[Row], bool]:
    out = [dict(r) for r in rows[:limit]]
    return out, len(rows) > limit


def list_sessions(
    conn: sa.Connection,
    chain_id: int,
    *,
    owner: str | None,
    active: bool | None,
    model_identifier: str | None,
    after: int | None,
    limit: int,
) -> tuple[list[Row], bool]:
    q = sa.select(SESSION).where(SESSION.c.chain_id == chain_id)
    if owner:
        q = q.where(SESSION.c.owner == owner)
    if active is not None:
        q = q.where(SESSION.c.active == active)
    if model_identifier is not None:
        q = q.where(SESSION.c.model_identifier == model_identifier)
    if after is not None:
        q = q.where(SESSION.c.session_id > after)
    rows = conn.execute(q.order_by(SESSION.c.session_id).limit(limit + 1)).mappings().all()
    return _page(rows, limit)


def get_session(conn: sa.Connection, chain_id: int, session_id: int) -> Row | None:
    r = (
        conn.execute(
            sa.select(SESSION).where(
                SESSION.c.chain_id == chain_id, SESSION.c.session_id == session_id
            )
        )
        .mappings()
        .first()
    )
    return dict(r) if r else None


def task_counts(conn: sa.Connection, chain_id: int, session_id: int) -> dict[str, int]:
    rows = conn.execute(
        sa.select(TASK.c.status, sa.func.count())
        .where(TASK.c.chain_id == chain_id, TASK.c.session_id == session_id)
        .group_by(TASK.c.status)
    )
    return {str(s): int(n) for s, n in rows}


def _submitted_at() -> sa.ScalarSelect[Any]:
    """The block time of a task's first step (submitted, else queued), per row of ``TASK``
    (the task detail computes the same from its steps: ``api.lifecycle.submitted_at``)."""
    return (
        sa.select(STEP.c.block_time)
        .where(
            STEP.c.chain_id == TASK.c.chain_id,
            STEP.c.session_id == TASK.c.session_id,
            STEP.c.task_id == TASK.c.task_id,
            STEP.c.step.in_(SUBMISSION_STEPS),
        )
        .order_by(STEP.c.block_number)
        .limit(1)
        .scalar_subquery()
    )


def list_tasks(
    conn: sa.Connection,
    chain_id: int,
    session_id: int,
    *,
    status: str | None,
    since: int | None,
    until: int | None,
    after: int | None,
    limit: int,
) -> tuple[list[Row], bool]:
    sub = _submitted_at()
    q = sa.select(*TASK_FIELDS, sub.label("submitted_at")).where(
        TASK.c.chain_id == chain_id, TASK.c.session_id == session_id
    )
    if status:
        q = q.where(TASK.c.status == status)
    if since is not None:
        q = q.where(sub >= since)
    if until is not None:
        q = q.where(sub <= until)
    if after is not None:
        q = q.where(TASK.c.task_id > after)
    rows = conn.execute(q.order_by(TASK.c.task_id).limit(limit + 1)).mappings().all()
    return _page(rows, limit)


def task_by_reference(conn: sa.Connection, client_reference: str) -> Row | None:
    r = (
        conn.execute(
            sa.select(*TASK_FIELDS, _submitted_at().label("submitted_at"))
            .where(TASK.c.client_reference == client_reference)
            .order_by(TASK.c.first_block)
            .limit(1)
        )
        .mappings()
        .first()
    )
    return dict(r) if r else None


def list_rounds(
    conn: sa.Connection, chain_id: int, *, status: str | None, after: int | None, limit: int
) -> tuple[list[Row], bool]:
    q = sa.select(ROUND).where(ROUND.c.chain_id == chain_id)
    if status:
        q = q.where(ROUND.c.status == status)
    if after is not None:
        q = q.where(ROUND.c.round_id > after)
    return _page(
        conn.execute(q.order_by(ROUND.c.round_id).limit(limit + 1)).mappings().all(), limit
    )


def get_round(conn: sa.Connection, chain_id: int, round_id: int) -> tuple[Row, list[Row]] | None:
    r = (
        conn.execute(
            sa.select(ROUND).where(ROUND.c.chain_id == chain_id, ROUND.c.round_id == round_id)
        )
        .mappings()
        .first()
    )
    if r is None:
        return None
    steps = (
        conn.execute(
            sa.select(ROUND_STEP)
            .where(ROUND_STEP.c.chain_id == chain_id, ROUND_STEP.c.round_id == round_id)
            .order_by(ROUND_STEP.c.block_number, ROUND_STEP.c.log_index)
        )
        .mappings()
        .all()
    )
    return dict(r), [dict(s) for s in steps]


def node(conn: sa.Connection, chain_id: int, address: str) -> dict[str, Any] | None:
    """Pool state, sessions, participation and earnings of one node; None if never seen."""
    n = (
        conn.execute(sa.select(NODE).where(NODE.c.chain_id == chain_id, NODE.c.address == address))
        .mappings()
        .first()
    )
    m = MINER.c
    part = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.count(m.ack_tx),
            sa.func.count(m.precommit_tx),
            sa.func.count(m.commit_tx),
            sa.func.count().filter(
                (m.commit_tx.is_(None)) & (TASK.c.status.in_(("ended", "paid")))
            ),
        )
        .select_from(
            MINER.join(
                TASK,
                (TASK.c.chain_id == m.chain_id)
                & (TASK.c.session_id == m.session_id)
                & (TASK.c.task_id == m.task_id),
            )
        )
        .where(m.chain_id == chain_id, m.miner == address)
    ).one()
    amounts = conn.execute(
        sa.select(PAYMENT.c.kind, PAYMENT.c.amount)
        .where(
            PAYMENT.c.chain_id == chain_id,
            PAYMENT.c.node == address,
            PAYMENT.c.kind.in_(("allocation", "withdrawal")),
        )
        .order_by(PAYMENT.c.block_number, PAYMENT.c.log_index, PAYMENT.c.tx_hash)
    ).all()
    moves = [(k, parse_amount(a)) for k, a in amounts]
    readable = [(k, a) for k, a in moves if a is not None]
    sessions = sorted(
        {
            int(s)
            for (s,) in conn.execute(
                sa.select(SESSION.c.session_id).where(SESSION.c.chain_id == chain_id)
            ).all()
        }
        & _node_sessions(conn, chain_id, address)
    )
    if n is None and part[0] == 0 and not amounts and not sessions:
        return None
    return {
        "node": dict(n) if n else None,
        "assigned": part[0],
        "acks": part[1],
        "precommits": part[2],
        "commits": part[3],
        "misses": part[4],
        "allocated": sum(a for k, a in readable if k == "allocation"),
        "withdrawn": sum(a for k, a in readable if k == "withdrawal"),
        "pending": pending_balance(readable),
        "unreadable": len(moves) - len(readable),
        "sessions": sessions,
    }


def _node_sessions(conn: sa.Connection, chain_id: int, address: str) -> set[int]:
    out: set[int] = set()
    rows = conn.execute(
        sa.select(
            SESSION.c.session_id,
            SESSION.c.dedicated_nodes,
            SESSION.c.ephemeral_nodes,
            SESSION.c.miners,
        ).where(SESSION.c.chain_id == chain_id)
    ).all()
    for sid, ded, eph, miners in rows:
        if address in (ded or []) or address in (eph or []) or address in (miners or []):
            out.add(int(sid))
    out |= {
        int(s)
        for (s,) in conn.execute(
            sa.select(MINER.c.session_id)
            .distinct()
            .where(MINER.c.chain_id == chain_id, MINER.c.miner == address)
        ).all()
    }
    return out


def tx_events(conn: sa.Connection, chain_id: int, tx_hash: str) -> list[Row]:
    return [
        dict(r)
        for r in conn.execute(
            sa.select(EVENT)
            .where(EVENT.c.chain_id == chain_id, EVENT.c.tx_hash == tx_hash)
            .order_by(EVENT.c.log_index)
        )
        .mappings()
        .all()
    ]


def has_table(conn: sa.Connection, name: str) -> bool:
    return sa.inspect(conn).has_table(name)
