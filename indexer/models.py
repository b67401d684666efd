"""SQL tables the indexer writes (SQLModel). Alembic migrations own the schema.

Conventions: ``chain_id`` is BIGINT (testnet1a's id does not fit 32 bits); addresses and hashes are
lowercase ``0x`` hex; token amounts are decimal strings (uint256 does not fit SQL integers on
SQLite); ids are BIGINT. Every row derived from a log keeps its ``block_number`` so that a reorg
can roll it back, and its finality follows from :class:`ChainState`'s safe/finalized blocks and
the ``finality`` column of :class:`Block`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from indexer.schema import BigId


def table(model: Any) -> Any:
    """The Core ``Table`` of a SQLModel class (for bulk statements)."""
    return model.__table__


def _big(**kw: Any) -> Any:
    return Field(sa_type=BigInteger, **kw)


def _id() -> Any:
    return Field(default=None, sa_type=BigId, primary_key=True)


def _json() -> Any:
    return Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class ChainState(SQLModel, table=True):
    """One row per chain: the cursor (committed with the rows) and the chain's tags."""

    __tablename__ = "chain_state"
    chain_id: int = _big(primary_key=True)
    name: str
    cursor_block: int = _big(default=-1)  # last block fully indexed; -1 = nothing yet
    cursor_hash: str | None = None
    head_block: int = _big(default=-1)
    safe_block: int = _big(default=-1)
    finalized_block: int = _big(default=-1)
    events_indexed: int = _big(default=0)
    unknown_logs: int = _big(default=0)
    malformed_logs: int = _big(default=0)
    reorgs: int = _big(default=0)
    updated_at: datetime | None = None


class Block(SQLModel, table=True):
    """Headers of indexed blocks: every block with events, and each cursor block."""

    __tablename__ = "block"
    chain_id: int = _big(primary_key=True)
    number: int = _big(primary_key=True)
    hash: str
    parent_hash: str | None = None
    timestamp: int | None = _big(default=None)
    finality: str = "latest"  # latest | safe | finalized


class Event(SQLModel, table=True):
    """Every decoded log, once. ``session_id``/``task_id``/``subject`` index it for projections."""

    __tablename__ = "event"
    __table_args__ = (
        UniqueConstraint("chain_id", "tx_hash", "log_index", name="uq_event_log"),
        Index("ix_event_chain_block", "chain_id", "block_number"),
        Index("ix_event_task", "chain_id", "session_id", "task_id"),
        Index("ix_event_subject", "chain_id", "contract", "subject"),
    )
    id: int | None = _id()
    chain_id: int = _big()
    block_number: int = _big()
    block_hash: str
    tx_hash: str
    tx_index: int
    log_index: int
    address: str
    contract: str
    event: str
    topic0: str
    args: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    topics: list[str] = _json()
    data: str
    session_id: int | None = _big(default=None)
    task_id: int | None = _big(default=None)
    subject: str | None = None  # node address or network-task id, for per-key replay
    sender: str | None = None  # tx sender, kept for step events that do not name their actor


class MalformedLog(SQLModel, table=True):
    __tablename__ = "malformed_log"
    __table_args__ = (UniqueConstraint("chain_id", "tx_hash", "log_index", name="uq_malformed"),)
    id: int | None = _id()
    chain_id: int = _big()
    block_number: int = _big()
    block_hash: str
    tx_hash: str
    log_index: int
    address: str
    topic0: str
    contract: str
    event: str
    reason: str


class Session(SQLModel, table=True):
    """A SessionV2 session: a snapshot of ``getSession`` at the last block that changed it."""

    __tablename__ = "session"
    chain_id: int = _big(primary_key=True)
    session_id: int = _big(primary_key=True)
    sid: str | None = None
    name: str | None = None
    owner: str | None = Field(default=None, index=True)
    model_identifier: str | None = Field(default=None, index=True)
    state: int | None = None
    active: bool = True
    redundant: int | None = None
    min_nodes: int | None = None
    max_nodes: int | None = None
    mode: int | None = None
    ephemeral_nodes: list[str] = _json()
    dedicated_nodes: list[str] = _json()
    miners: list[str] = _json()
    routers: list[dict[str, str]] = _json()
    created_block: int | None = _big(default=None)
    created_tx: str | None = None
    updated_block: int | None = _big(default=None)
    deactivated_tx: str | None = None
    snapshot_block: int | None = _big(default=None)


class Task(SQLModel, table=True):
    """A user task (SessionV2 + SessionQueueV2)."""

    __tablename__ = "task"
    chain_id: int = _big(primary_key=True)
    session_id: int = _big(primary_key=True)
    task_id: int = _big(primary_key=True)
    global_id: int | None = _big(default=None)
    client_reference: str | None = Field(default=None, index=True)
    task_data: str | None = None
    status: str = "submitted"
    force_ended: bool = False
    miners: list[str] = _json()
    node_ids: list[str] = _json()
    first_block: int = _big()
    updated_block: int = _big()
    # The task's task_step and task_miner rows as JSON arrays of objects (LIFECYCLE_STEP_COLS,
    # LIFECYCLE_MINER_COLS), written with them: the lifecycle route reads a task in one row
    # instead of four index lookups (api/lifecycle.py). NULL: not written (read falls back).
    steps_json: str | None = Field(default=None, sa_type=Text)
    miners_json: str | None = Field(default=None, sa_type=Text)
    # Its payment rows (LIFECYCLE_PAYMENT_COLS), rewritten when a payment for it is stored.
    payments_json: str | None = Field(default=None, sa_type=Text)


class TaskStep(SQLModel, table=True):
    """One lifecycle step of a task: the first log that reached it."""

    __tablename__ = "task_step"
    chain_id: int = _big(primary_key=True)
    session_id: int = _big(primary_key=True)
    task_id: int = _big(primary_key=True)
    step: str = Field(primary_key=True)
    event: str
    tx_hash: str
    block_number: int = _big()
    log_index: int
    block_time: int | None = _big(default=None)
    actor: str | None = None


class TaskMiner(SQLModel, table=True):
    """One assigned miner of one task, with the tx of each of its actions."""

    __tablename__ = "task_miner"
    chain_id: int = _big(primary_key=True)
    session_id: int = _big(primary_key=True)
    task_id: int = _big(primary_key=True)
    miner: str = Field(primary_key=True)
    assigned_block: int = _big()
    ack_tx: str | None = None
    ack_block: int | None = _big(default=None)
    ack_log_index: int | None = None
    precommit_tx: str | None = None
    precommit_block: int | None = _big(default=None)
    precommit_log_index: int | None = None
    commit_tx: str | None = None
    commit_block: int | None = _big(default=None)
    commit_log_index: int | None = None


class NetworkTask(SQLModel, table=True):
    """A CognitiveV1 network-task round."""

    __tablename__ = "network_task"
    chain_id: int = _big(primary_key=True)
    round_id: int = _big(primary_key=True)
    status: str = "requested"
    creator: str | None = None
    preparer: str | None = None
    miners: list[str] = _json()
    force_end: bool = False
    start_time: int | None = _big(default=None)
    end_time: int | None = _big(default=None)
    first_block: int = _big()
    updated_block: int = _big()


class NetworkTaskStep(SQLModel, table=True):
    """A step of a round; per-participant steps carry the participant in ``actor``."""

    __tablename__ = "network_task_step"
    chain_id: int = _big(primary_key=True)
    round_id: int = _big(primary_key=True)
    step: str = Field(primary_key=True)
    actor: str = Field(default="", primary_key=True)
    event: str
    tx_hash: str
    block_number: int = _big()
    log_index: int
    block_time: int | None = _big(default=None)


class Payment(SQLModel, table=True):
    """A SessionPayment event: deposit, network payment, allocation or withdrawal."""

    __tablename__ = "payment"
    __table_args__ = (
        Index("ix_payment_task", "chain_id", "session_id", "task_id"),
        Index("ix_payment_node", "chain_id", "node"),
    )
    chain_id: int = _big(primary_key=True)
    tx_hash: str = Field(primary_key=True)
    log_index: int = Field(primary_key=True)
    kind: str  # deposit | network | allocation | withdrawal
    session_id: int | None = _big(default=None)
    task_id: int | None = _big(default=None)
    node: str | None = None
    counterparty: str | None = None
    amount: str
    block_number: int = _big()
    block_time: int | None = _big(default=None)


class Node(SQLModel, table=True):
    """A NodePool node: pool state and whether it serves dedicated or ephemeral."""

    __tablename__ = "node"
    chain_id: int = _big(primary_key=True)
    address: str = Field(primary_key=True)
    node_id: str | None = None
    pool_state: str = "added"  # added | reserved | ephemeral | released | removed
    in_pool: bool = True
    kind: str | None = None  # dedicated | ephemeral
    last_execution: int | None = _big(default=None)
    first_block: int = _big()
    updated_block: int = _big()
