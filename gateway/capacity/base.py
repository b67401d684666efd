"""The capacity contract between the gateway's HTTP layer and its trackers.

A tracker owns every decision about router-session occupancy: which session of a model's pool
takes the next request (round-robin, skipping sessions that are full, in cooldown or drained),
waiting for a slot (woken when one frees, never by tight polling), the bounded FIFO queue per
model, leases with a TTL that the HTTP layer renews while a request or stream is alive, session
health (cooldown after consecutive failures) and drain state.

Backends: ``memory`` (exact in-process accounting, one replica) and ``redis`` (leases in Redis,
acquired by one atomic Lua script, shared by every replica), with a circuit breaker that falls
back to local limits or rejects, per ``on_redis_failure``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, Protocol
from urllib.parse import urlsplit, urlunsplit


class GatewayError(Exception):
    """Base of the gateway's own errors."""


class CapacityExceeded(GatewayError):
    """No slot within the wait window and the queue: answer 503 with ``Retry-After``."""

    def __init__(self, model: str, retry_after: float, reason: str) -> None:
        self.model = model
        self.retry_after = retry_after
        self.reason = reason  # "queue_full" | "queue_timeout" | "no_sessions" | "redis_unavailable"
        super().__init__(f"no capacity for {model}: {reason}; retry after {retry_after:.1f}s")


def shown_url(url: str) -> str:
    """A router URL as it may be shown, logged or stored: credentials and query string hidden,
    scheme, host and path kept (two routers on one host stay apart).

    >>> shown_url("http://user:pw@10.0.0.5:5010/v1?token=x"), shown_url("http://r:5010")
    ('http://***@10.0.0.5:5010/v1?***', 'http://r:5010')
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    _userinfo, at, host = parts.netloc.rpartition("@")
    netloc = f"***@{host}" if at else host
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


def shown_key(key: str) -> str:
    """A session key as it may be shown, logged or stored: its router URL as :func:`shown_url`
    shows it. The key itself, which capacity tracking uses, keeps the credentials.

    >>> shown_key("local:3@http://user:pw@10.0.0.5:5010"), shown_key("t:1@http://r:5010")
    ('local:3@http://***@10.0.0.5:5010', 't:1@http://r:5010')
    """
    head, at, url = key.partition("@http")
    return f"{head}@{shown_url('http' + url)}" if at else key


@dataclass(frozen=True)
class SessionSlot:
    """One Cortensor router session in a model's pool."""

    key: str  # unique and stable across replicas, e.g. "local:3@http://127.0.0.1:18100"
    model: str
    router_url: str
    session_id: int
    chain: str
    max_inflight: int
    label: str

    @cached_property
    def shown_key(self) -> str:
        """:attr:`key` with its router URL redacted: what records, logs and answers carry."""
        return shown_key(self.key)

    @cached_property
    def shown_url(self) -> str:
        """:attr:`router_url` as :func:`shown_url` shows it."""
        return shown_url(self.router_url)


@dataclass(frozen=True)
class Lease:
    """One admitted request's hold on one session slot."""

    lease_id: str
    session: SessionSlot
    acquired_at: float  # time.time()
    waited: float  # seconds spent waiting or queued before admission


@dataclass
class SessionState:
    key: str
    model: str
    label: str
    inflight: int
    limit: int
    cooldown_until: float | None  # epoch seconds, None when healthy
    consecutive_failures: int
    drained: bool


@dataclass
class CapacitySnapshot:
    mode: Literal["memory", "redis", "degraded-local", "degraded-reject"]
    redis_reachable: bool | None  # None in memory mode
    redis_ping_ms: float | None
    breaker: Literal["closed", "open", "half-open"] | None
    lease_ttl: float
    wait_timeout: float
    queue_bound: int
    queue_depth: dict[str, int]  # model -> waiting requests (all replicas in Redis mode)
    sessions: list[SessionState] = field(default_factory=list)
    # waits, rejections, renewals, expiries, redis_errors
    counters: dict[str, int] = field(default_factory=dict)
    # model -> requests inside their wait window, not yet queued (all replicas in Redis mode)
    waiting: dict[str, int] = field(default_factory=dict)


class CapacityTracker(Protocol):
    """What the HTTP layer calls. All methods are safe to call concurrently."""

    async def acquire(self, model: str, *, exclude: frozenset[str] = frozenset()) -> Lease:
        """A lease on a session of ``model``'s pool, skipping ``exclude`` (session keys already
        tried for this request). Waits up to ``wait_timeout``, then queues (bounded FIFO, fair
        across replicas in Redis mode); raises :class:`CapacityExceeded` beyond that."""
        ...

    async def renew(self, lease: Lease) -> None:
        """Extend the lease's TTL (called periodically while the request or stream is alive)."""
        ...

    async def release(self, lease: Lease) -> None:
        """Free the slot; idempotent. Must complete even when the client disconnected."""
        ...

    async def report(self, session_key: str, ok: bool) -> None:
        """Health: N consecutive failures put a session in cooldown (shared in Redis mode)."""
        ...

    async def set_drained(self, session_key: str, drained: bool) -> None: ...

    async def snapshot(self) -> CapacitySnapshot: ...

    async def aclose(self) -> None: ...


class PoolTracker(CapacityTracker, Protocol):
    """A tracker whose pools can change at run time (what ``make_tracker`` returns)."""

    def update_pools(self, pools: dict[str, list[SessionSlot]]) -> None:
        """Replace every model's pool; leases already granted stay valid until released."""
        ...
