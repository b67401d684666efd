"""Read side of the accounting table for the admin routes: recent requests and per-session
figures over the last minute and 15 minutes. Aggregation is pure; queries are bounded."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from gateway.capacity.base import shown_key
from gateway.limits import BIGINT_MAX
from gateway.store import REQUESTS

WINDOW = timedelta(minutes=15)
SHORT = timedelta(minutes=1)
MAX_ROWS = 200_000  # bound on one stats query: 15 min at ~220 req/s
RECENT_LIMIT_MAX = 1000

RECENT_COLUMNS = (
    "request_id", "key_id", "model", "endpoint", "stream", "chain", "session_id", "session_key",
    "router_label", "status", "http_status", "error_code", "latency_ms", "ttfb_ms", "waited_ms",
    "attempts", "prompt_tokens", "completion_tokens", "task_id", "replica_id", "created_at",
)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.0
    >>> percentile([], 0.95) is None
    True
    """
    if not sorted_values:
        return None
    rank = max(1, int(-(-q * len(sorted_values) // 1)))  # ceil(q * n), at least 1
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class SessionFigures:
    session_key: str
    requests_1m: int = 0
    requests_15m: int = 0
    ok_15m: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    replicas: dict[str, float] | None = None  # replica id -> share of this session's requests

    def public(self) -> dict[str, Any]:
        rate = self.ok_15m / self.requests_15m if self.requests_15m else None
        return {
            "requests_1m": self.requests_1m, "requests_15m": self.requests_15m,
            "success_rate": rate, "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "replica_share": self.replicas or {},
        }


def aggregate(rows: Sequence[Sequence[Any]], now: datetime) -> dict[str, SessionFigures]:
    """Rows of (session_key, status, latency_ms, prompt, completion, replica, created_at) from
    the last 15 minutes -> figures per session key."""
    figs: dict[str, SessionFigures] = {}
    latencies: dict[str, list[float]] = defaultdict(list)
    replicas: dict[str, Counter[str]] = defaultdict(Counter)
    short = now - SHORT
    for key, status, latency, prompt, completion, replica, created in rows:
        f = figs.setdefault(key, SessionFigures(key))
        f.requests_15m += 1
        if _aware(created) >= short:
            f.requests_1m += 1
        if status == "ok":
            f.ok_15m += 1
            latencies[key].append(float(latency))
        f.prompt_tokens += prompt or 0
        f.completion_tokens += completion or 0
        replicas[key][replica] += 1
    for key, f in figs.items():
        lat = sorted(latencies[key])
        f.latency_p50_ms = percentile(lat, 0.50)
        f.latency_p95_ms = percentile(lat, 0.95)
        total = sum(replicas[key].values())
        f.replicas = {r: round(n / total, 4) for r, n in sorted(replicas[key].items())}
    return figs


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def session_figures(engine: sa.Engine, now: datetime | None = None) -> dict[str, SessionFigures]:
    now = now or datetime.now(UTC)
    c = REQUESTS.c
    q = (
        sa.select(c.session_key, c.status, c.latency_ms, c.prompt_tokens, c.completion_tokens,
                  c.replica_id, c.created_at)
        .where(c.created_at >= now - WINDOW, c.session_key.is_not(None))
        .order_by(c.created_at.desc())
        .limit(MAX_ROWS)
    )
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return aggregate(rows, now)


def session_id(text: str) -> int | None:
    """``text`` as a session id a BIGINT column can hold, else None.

    >>> session_id("007"), session_id("²"), session_id("9" * 30)
    (7, None, None)
    """
    digits = text.lstrip("0") or "0"
    if text.isascii() and text.isdigit() and len(digits) <= 19 and int(digits) <= BIGINT_MAX:
        return int(digits)
    return None


def recent_requests(
    engine: sa.Engine,
    *,
    model: str | None = None,
    status: str | None = None,
    key_id: int | None = None,
    session: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first. ``session`` matches a session key (as stored, redacted, or in full), a
    label or a session id."""
    c = REQUESTS.c
    q = sa.select(*(c[n] for n in RECENT_COLUMNS)).order_by(c.id.desc())
    q = q.limit(max(1, min(limit, RECENT_LIMIT_MAX)))
    if model:
        q = q.where(c.model == model)
    if status:
        q = q.where(c.status == status)
    if key_id is not None:
        q = q.where(c.key_id == key_id)
    if session:
        conds = [c.session_key.in_({session, shown_key(session)}), c.router_label == session]
        sid = session_id(session)
        if sid is not None:
            conds.append(c.session_id == sid)
        q = q.where(sa.or_(*conds))
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    out = []
    for r in rows:
        d = dict(r)
        d["created_at"] = _aware(d["created_at"]).isoformat()
        out.append(d)
    return out
