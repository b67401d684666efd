"""The gateway's error hierarchy: one place, translated to HTTP once, at the edge.

    GatewayError                 (gateway.capacity.base)
    ├── CapacityExceeded         no slot within the wait window and the queue -> 503 + Retry-After
    ├── GatewayConfigError       a ``gateway.*`` setting is missing or invalid
    ├── UpstreamError            the router failed: ``sent`` says whether anything reached it
    └── ApiError                 what a client gets: status, code, message, details

Messages never carry API keys, router tokens or prompts.
"""

from __future__ import annotations

from typing import Any, Literal

from gateway.capacity.base import CapacityExceeded, GatewayError

__all__ = [
    "ApiError", "CapacityExceeded", "GatewayConfigError", "GatewayError", "UpstreamError",
]

UpstreamKind = Literal["connect", "timeout", "status", "protocol"]


class GatewayConfigError(GatewayError):
    """``str(e)`` is ``gateway.<key>: <problem>``."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"gateway.{key}: {problem}")


class UpstreamError(GatewayError):
    """A router call failed.

    ``kind``: ``connect`` (nothing was sent: safe to retry on another session), ``timeout``
    (504), ``status`` (the router answered ``status`` >= 400: 502), ``protocol`` (unreadable
    answer: 502).
    """

    def __init__(self, kind: UpstreamKind, message: str, *, status: int | None = None) -> None:
        self.kind = kind
        self.status = status
        super().__init__(message)

    @property
    def sent(self) -> bool:
        return self.kind != "connect"

    @property
    def unhealthy(self) -> bool:
        """Counts against the session's health (connect errors, 5xx, timeouts)."""
        return self.kind in ("connect", "timeout") or (self.status or 0) >= 500

    def to_api(self) -> ApiError:
        if self.kind == "timeout":
            return ApiError(504, "upstream_timeout", str(self))
        details = {"upstream_status": self.status} if self.status else None
        return ApiError(502, "upstream_error", str(self), details)


class ApiError(GatewayError):
    """An error answered as ``{"error": {"code", "message", "details"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, int(self.retry_after + 0.999)))}

    @classmethod
    def from_capacity(cls, e: CapacityExceeded) -> ApiError:
        return cls(
            503, "no_capacity", f"no router capacity for model {e.model!r} ({e.reason})",
            {"model": e.model, "reason": e.reason}, retry_after=e.retry_after,
        )
