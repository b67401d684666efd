"""task payments json: each task's payments as JSON in its row

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 16:10:00

Like 0004 for steps and miners: existing tasks get the JSON built from their payment rows in
chain order; the indexer rewrites it whenever it stores a payment for the task.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (a migration must not change when the code does): the columns of each object.
COLS = (
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


def upgrade() -> None:
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payments_json", sa.Text(), nullable=True))
    pg = op.get_bind().dialect.name == "postgresql"
    pairs = ", ".join(f"'{c}', c.{c}" for c in COLS)
    key = " AND ".join(f"c.{k} = task.{k}" for k in ("chain_id", "session_id", "task_id"))
    order = "c.block_number, c.log_index"
    if pg:
        doc = f"COALESCE((SELECT json_agg(json_build_object({pairs}) ORDER BY {order})::text"
        doc += f" FROM payment c WHERE {key}), '[]')"
    else:  # json_group_array keeps the order of its (ordered) input rows
        doc = f"(SELECT json_group_array(json(x)) FROM (SELECT json_object({pairs}) AS x"
        doc += f" FROM payment c WHERE {key} ORDER BY {order}))"
    op.execute(f"UPDATE task SET payments_json = {doc}")


def downgrade() -> None:
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.drop_column("payments_json")
