"""What the SQLModel models (:mod:`indexer.models`) and the Core tables generated from them
(:mod:`indexer.tables`) share: column types and the lifecycle's column lists.

Light on purpose: SQLAlchemy Core only, no SQLModel or ORM.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

# BIGINT ids on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware datetime, stored in UTC: what SQLModel's own type for ``datetime``
    fields stores, for the Core tables (its module would load SQLModel)."""

    impl = sa.DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, _dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"a datetime without a timezone: {value!r}")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, _dialect: sa.Dialect) -> datetime | None:
        """UTC, aware: SQLite hands back the stored text without its zone."""
        if not isinstance(value, datetime):
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# Task columns that copy its child rows for the lifecycle route; not read by anything else.
TASK_COPIES = ("steps_json", "miners_json", "payments_json")
# What a task's lifecycle document shows of each step and miner row, in this order.
LIFECYCLE_STEP_COLS = (
    "step",
    "event",
    "tx_hash",
    "block_number",
    "block_time",
    "log_index",
    "actor",
)
MINER_ACTIONS = ("ack", "precommit", "commit")
LIFECYCLE_MINER_COLS = (
    "miner",
    *(f"{a}_{c}" for a in MINER_ACTIONS for c in ("tx", "block", "log_index")),
)
LIFECYCLE_PAYMENT_COLS = (
    "kind",
    "tx_hash",
    "log_index",
    "session_id",
    "task_id",
    "node",
    "counterparty",
    "amount",
    "block_number",
    "block_time",
)
