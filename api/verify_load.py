"""Loading a task's stored rows for verification: its steps, miner actions and payments as
:class:`~api.verify.StoredStep` values (each with the stored log it refers to and the values its
chain log must carry), its block span and its contracts' addresses. SQL only; no RPC.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from api import queries as q
from api.lifecycle import STEP_ORDER, fetch
from api.verify import StoredLog, StoredStep, pick_log
from indexer.project import MINER_ACTION, PAYMENT_KIND

MINER_EVENT = {action: event for event, action in MINER_ACTION.items()}
PAYMENT_EVENT = {kind: event for event, kind in PAYMENT_KIND.items()}
IN_CHUNK = 500  # tx hashes per IN list: well under every backend's parameter limit
KIND_ORDER = {"step": 0, "miner_action": 1, "payment": 2}  # at one log: the step first
Row = dict[str, Any]


class NotIndexed(Exception):
    """The task (or its whole session: ``what``) is not in the index."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


def _stored_log(r: sa.RowMapping) -> StoredLog:
    args = r["args"] if isinstance(r["args"], dict) else {}
    miner = args.get("miner")
    return StoredLog(
        log_index=int(r["log_index"]),
        block_number=int(r["block_number"]),
        address=str(r["address"]),
        topics=tuple(str(t) for t in r["topics"] or ()),
        data=str(r["data"]),
        block_hash=str(r["block_hash"]),
        event=str(r["event"]),
        session_id=r["session_id"],
        task_id=r["task_id"],
        miner=str(miner).lower() if miner else None,
    )


# The log argument a step's actor is, for steps whose log names it (else the tx's sender).
ACTOR_ARG = {"acked": "miner", "paid": "node"}


def _step(s: Row, sid: int, tid: int, resolve_actors: bool) -> StoredStep:
    arg = ACTOR_ARG.get(s["step"])
    actor = s["actor"]
    return StoredStep(
        "step",
        s["step"],
        s["event"],
        actor,
        sid,
        tid,
        s["tx_hash"],
        s["block_number"],
        s["log_index"],
        s["block_time"],
        None,
        claims=(("actor", arg, str(actor)),) if arg else (),
        sender=arg is None and (resolve_actors or actor is not None),
    )


def _payment(p: Row, sid: int, tid: int) -> StoredStep:
    return StoredStep(
        "payment",
        p["kind"],
        PAYMENT_EVENT[p["kind"]],
        p["node"],
        sid,
        tid,
        p["tx_hash"],
        p["block_number"],
        p["log_index"],
        p["block_time"],
        None,
        claims=(
            ("node", "node", str(p["node"])),
            ("amount", "amount", str(p["amount"])),
            ("session_id", "sessionId", str(p["session_id"])),
            ("task_id", "taskId", str(p["task_id"])),
        ),
    )


@dataclass(frozen=True)
class StoredTask:
    """What :func:`load_task` read: the stored steps (with their logs), the task's block span,
    its miners, and the contracts' addresses to look for its events at."""

    steps: list[StoredStep]
    first_block: int  # the task's block span, widened to its rows' blocks
    last_block: int
    miners: list[str]
    addresses: dict[str, str]


def load_steps(
    conn: sa.Connection, chain_id: int, session_id: int, task_id: int, resolve_actors: bool = True
) -> list[StoredStep]:
    """The task's steps, its miners' actions and its payments in chain order, each with the
    stored log it refers to; raises :class:`NotIndexed` naming the task or its session."""
    return load_task(conn, chain_id, session_id, task_id, resolve_actors).steps


def load_task(
    conn: sa.Connection, chain_id: int, session_id: int, task_id: int, resolve_actors: bool = True
) -> StoredTask:
    """:func:`load_steps` and what the search for rows the store lacks needs."""
    # The child tables themselves (the projection of record), not the task row's JSON copy.
    got = fetch(conn, (chain_id, session_id, task_id), materialized=False)
    if got is None:
        gone = q.get_session(conn, chain_id, session_id) is None
        raise NotIndexed("session" if gone else "task")
    steps, miners = got.steps, got.miners
    out = (
        [_step(s, session_id, task_id, resolve_actors) for s in steps]
        + [
            StoredStep(
                "miner_action",
                act,
                MINER_EVENT[act],
                m["miner"],
                session_id,
                task_id,
                m[f"{act}_tx"],
                m[f"{act}_block"],
                m[f"{act}_log_index"],
                None,
                None,
                claims=(("actor", "miner", str(m["miner"])),),
            )
            for m in miners
            for act in ("ack", "precommit", "commit")
            if m[f"{act}_tx"]
        ]
        + [_payment(p, session_id, task_id) for p in got.payments if p["kind"] in PAYMENT_EVENT]
    )
    by_tx: dict[str, list[StoredLog]] = {}
    txs = sorted({s.tx_hash for s in out})
    for lo in range(0, len(txs), IN_CHUNK):
        rows = conn.execute(
            sa.select(q.EVENT).where(
                q.EVENT.c.chain_id == chain_id, q.EVENT.c.tx_hash.in_(txs[lo : lo + IN_CHUNK])
            )
        )
        for r in rows.mappings():
            by_tx.setdefault(r["tx_hash"], []).append(_stored_log(r))
    out = [dataclasses.replace(s, log=pick_log(s, by_tx.get(s.tx_hash, []))) for s in out]
    out.sort(key=order)
    addresses = {
        str(r.contract): str(r.address)
        for r in conn.execute(
            sa.select(q.EVENT.c.contract, q.EVENT.c.address)
            .where(
                q.EVENT.c.chain_id == chain_id,
                q.EVENT.c.session_id == session_id,
                q.EVENT.c.task_id == task_id,
            )
            .distinct()
        )
    }
    span = conn.execute(
        sa.select(q.TASK.c.first_block, q.TASK.c.updated_block).where(
            q.TASK.c.chain_id == chain_id,
            q.TASK.c.session_id == session_id,
            q.TASK.c.task_id == task_id,
        )
    ).one()
    blocks = [s.block_number for s in out if s.block_number >= 0]
    return StoredTask(
        out,
        min([int(span.first_block), *blocks]),
        max([int(span.updated_block), *blocks]),
        [str(m["miner"]) for m in miners],
        addresses,
    )


def order(s: StoredStep) -> tuple[int, int, int, int]:
    return (s.block_number, s.log_index, KIND_ORDER[s.kind], STEP_ORDER.get(s.step, 0))
