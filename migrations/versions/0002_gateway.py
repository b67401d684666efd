"""gateway

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 11:01:41.672287
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # gateway tables: API keys and request accounting
    op.create_table(
        "gateway_api_key",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("key_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("prefix", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("rpm_limit", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("last_used_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("gateway_api_key", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gateway_api_key_key_hash"), ["key_hash"], unique=True)

    op.create_table(
        "gateway_request",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("request_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("key_id", sa.BigInteger(), nullable=True),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("endpoint", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("chain", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("session_id", sa.BigInteger(), nullable=True),
        sa.Column("session_key", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("router_label", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("router_url", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=False),
        sa.Column("error_code", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttfb_ms", sa.Float(), nullable=True),
        sa.Column("waited_ms", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("task_id", sa.BigInteger(), nullable=True),
        sa.Column("replica_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("gateway_request", schema=None) as batch_op:
        batch_op.create_index("ix_gateway_request_created", ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_gateway_request_key_id"), ["key_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_gateway_request_model"), ["model"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_gateway_request_request_id"), ["request_id"], unique=True
        )
        batch_op.create_index(
            "ix_gateway_request_session_created", ["session_key", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_gateway_request_status"), ["status"], unique=False)



def downgrade() -> None:
    # gateway tables: API keys and request accounting
    with op.batch_alter_table("gateway_request", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_request_status"))
        batch_op.drop_index("ix_gateway_request_session_created")
        batch_op.drop_index(batch_op.f("ix_gateway_request_request_id"))
        batch_op.drop_index(batch_op.f("ix_gateway_request_model"))
        batch_op.drop_index(batch_op.f("ix_gateway_request_key_id"))
        batch_op.drop_index("ix_gateway_request_created")

    op.drop_table("gateway_request")
    with op.batch_alter_table("gateway_api_key", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_api_key_key_hash"))

    op.drop_table("gateway_api_key")
