"""SQL tables the gateway writes (only :mod:`gateway.store` writes them). Alembic owns the schema.

``gateway_request.request_id`` is the clientReference the router puts on chain, so the
verification API joins it to ``task.client_reference``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer
from sqlmodel import Field, SQLModel

# BIGINT ids on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements.
BigId = BigInteger().with_variant(Integer, "sqlite")


def _big(**kw: Any) -> Any:
    return Field(sa_type=BigInteger, **kw)


class GatewayRequest(SQLModel, table=True):
    """One client request, as the gateway answered it."""

    __tablename__ = "gateway_request"
    __table_args__ = (
        Index("ix_gateway_request_created", "created_at"),
        Index("ix_gateway_request_session_created", "session_key", "created_at"),
    )
    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    request_id: str = Field(unique=True, index=True)
    key_id: int | None = _big(default=None, index=True)
    model: str = Field(index=True)
    endpoint: str  # "completions" | "chat.completions"
    stream: bool = False
    chain: str | None = None
    session_id: int | None = _big(default=None)
    session_key: str | None = None
    router_label: str | None = None
    router_url: str | None = None
    status: str = Field(index=True)  # ok | error | rejected | client_closed
    http_status: int
    error_code: str | None = None
    latency_ms: float
    ttfb_ms: float | None = None
    waited_ms: float | None = None
    attempts: int = 1
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    task_id: int | None = _big(default=None)
    replica_id: str
    created_at: datetime


class ApiKey(SQLModel, table=True):
    """A client API key: only its sha256 is stored; ``prefix`` is for display."""

    __tablename__ = "gateway_api_key"
    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    name: str
    key_hash: str = Field(unique=True, index=True)
    prefix: str
    enabled: bool = True
    rpm_limit: int | None = None
    created_at: datetime
    last_used_at: datetime | None = None
