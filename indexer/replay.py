"""Reorg rollback: delete rows above a fork block, then re-fold the keys they touched.

Projections are folds over each key's events (see :mod:`indexer.project`), so after deleting the
events above the fork, folding a key's remaining events from nothing gives exactly the rows a
fresh index of the canonical chain would hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from indexer.decode import DecodedEvent
from indexer.project import Projector
from indexer.tables import (
    Block,
    Event,
    MalformedLog,
    NetworkTask,
    NetworkTaskStep,
    Node,
    Payment,
    Session,
    Task,
    TaskMiner,
    TaskStep,
)

if TYPE_CHECKING:
    from indexer.store import Store


def row_to_event(r: Any) -> DecodedEvent:
    return DecodedEvent(
        block_number=r["block_number"],
        block_hash=r["block_hash"],
        block_time=r["timestamp"],
        tx_hash=r["tx_hash"],
        tx_index=r["tx_index"],
        log_index=r["log_index"],
        address=r["address"],
        contract=r["contract"],
        event=r["event"],
        topic0=r["topic0"],
        args=dict(r["args"]),
        topics=list(r["topics"]),
        data=r["data"],
        session_hint=r["session_id"],
        sender=r["sender"],
    )


def rollback_in(store: Store, conn: sa.Connection, chain_id: int, fork: int) -> int:
    """Inside the caller's transaction: remove rows above ``fork`` and rebuild touched keys."""
    e = Event
    above = (e.c.chain_id == chain_id) & (e.c.block_number > fork)
    tasks = {
        (int(s), int(t))
        for s, t in conn.execute(
            sa.select(e.c.session_id, e.c.task_id)
            .distinct()
            .where(
                above,
                e.c.task_id.is_not(None),
                e.c.session_id.is_not(None),
                e.c.contract != "CognitiveV1",
            )
        ).all()
    }
    rounds = {
        int(s)
        for (s,) in conn.execute(
            sa.select(e.c.subject)
            .distinct()
            .where(above, e.c.contract == "CognitiveV1", e.c.subject.is_not(None))
        ).all()
    }
    nodes = {
        str(s)
        for (s,) in conn.execute(
            sa.select(e.c.subject)
            .distinct()
            .where(above, e.c.contract == "NodePool", e.c.subject.is_not(None))
        ).all()
    }
    sessions = {
        int(s)
        for (s,) in conn.execute(
            sa.select(e.c.session_id)
            .distinct()
            .where(above, e.c.contract == "SessionV2", e.c.session_id.is_not(None))
        ).all()
    }

    removed = conn.execute(e.delete().where(above)).rowcount or 0
    for t, col in (
        (MalformedLog, "block_number"),
        (Block, "number"),
        (Payment, "block_number"),
    ):
        conn.execute(t.delete().where(t.c.chain_id == chain_id, t.c[col] > fork))
    for sid, tid in tasks:
        for t in (Task, TaskStep, TaskMiner):
            conn.execute(
                t.delete().where(
                    t.c.chain_id == chain_id, t.c.session_id == sid, t.c.task_id == tid
                )
            )
    for t in (NetworkTask, NetworkTaskStep):
        if rounds:
            conn.execute(t.delete().where(t.c.chain_id == chain_id, t.c.round_id.in_(rounds)))
    n = Node
    if nodes:
        conn.execute(n.delete().where(n.c.chain_id == chain_id, n.c.address.in_(nodes)))
    s = Session
    if sessions:
        conn.execute(
            s.update()
            .where(s.c.chain_id == chain_id, s.c.session_id.in_(sessions))
            .values(deactivated_tx=None, active=True)
        )

    # Re-fold from what remains.
    conds = []
    for sid, tid in tasks:
        conds.append(
            (e.c.session_id == sid) & (e.c.task_id == tid) & (e.c.contract != "CognitiveV1")
        )
    if rounds:
        conds.append((e.c.contract == "CognitiveV1") & e.c.subject.in_([str(r) for r in rounds]))
    if nodes:
        conds.append((e.c.contract == "NodePool") & e.c.subject.in_(nodes))
    if sessions:
        conds.append(
            (e.c.contract == "SessionV2") & e.c.session_id.in_(sessions) & e.c.task_id.is_(None)
        )
    if conds:
        proj = Projector(chain_id)
        b = Block
        rows = conn.execute(
            sa.select(e, b.c.timestamp)
            .outerjoin(b, (b.c.chain_id == e.c.chain_id) & (b.c.number == e.c.block_number))
            .where(e.c.chain_id == chain_id, sa.or_(*conds))
            .order_by(e.c.block_number, e.c.log_index)
        ).mappings()
        proj.apply_all(row_to_event(r) for r in rows)
        store._write_projection(conn, proj)
    return int(removed)
