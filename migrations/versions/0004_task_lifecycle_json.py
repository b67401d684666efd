"""task lifecycle json: each task's steps and miners as JSON in its row

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 16:05:00

The lifecycle route reads a task from one row (api/lifecycle.py). Existing tasks get the JSON
built from their task_step and task_miner rows here; the indexer writes it from then on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (a migration must not change when the code does): the columns of each object.
STEP_COLS = ("step", "event", "tx_hash", "block_number", "block_time", "log_index", "actor")
MINER_COLS = ("miner",) + tuple(
    f"{a}_{c}" for a in ("ack", "precommit", "commit") for c in ("tx", "block", "log_index")
)


def _fill(table: str, cols: tuple[str, ...], pg: bool) -> str:
    agg, obj = ("json_agg", "json_build_object") if pg else ("json_group_array", "json_object")
    pairs = ", ".join(f"'{c}', c.{c}" for c in cols)
    key = " AND ".join(f"c.{k} = task.{k}" for k in ("chain_id", "session_id", "task_id"))
    cast = "::text" if pg else ""
    return f"COALESCE((SELECT {agg}({obj}({pairs})){cast} FROM {table} c WHERE {key}), '[]')"


def upgrade() -> None:
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.add_column(sa.Column("steps_json", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("miners_json", sa.Text(), nullable=True))
    pg = op.get_bind().dialect.name == "postgresql"
    op.execute(
        f"UPDATE task SET steps_json = {_fill('task_step', STEP_COLS, pg)}, "
        f"miners_json = {_fill('task_miner', MINER_COLS, pg)}"
    )


def downgrade() -> None:
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.drop_column("miners_json")
        batch_op.drop_column("steps_json")
