"""One client request from admission to its record: acquire a lease, call the router, shape the
answer (OpenAI JSON or SSE), release, record.

Statuses recorded: ``ok``, ``error`` (router failure or timeout), ``rejected`` (no capacity,
rate limit), ``client_closed`` (the client went away mid-stream).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import JSONResponse, Response

from gateway.accounting import Recorder
from gateway.capacity.base import Lease
from gateway.errors import ApiError, UpstreamError
from gateway.http1 import Response as UpstreamResponse
from gateway.leases import LeaseKeeper
from gateway.limits import BIGINT_MAX, INT_MAX
from gateway.metrics import Metrics
from gateway.pools import Pool
from gateway.streaming import DONE, LeasedStream, chat_chunk, finished, sse
from gateway.upstream import RouterClient, event_data, sse_events


@dataclass
class Call:
    """What the gateway knows about one request while serving it."""

    request_id: str
    model: str
    endpoint: str  # "completions" | "chat.completions"
    stream: bool = False
    key_id: int | None = None
    t0: float = field(default_factory=time.perf_counter)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    lease: Lease | None = None
    attempts: int = 0
    ttfb: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    task_id: int | None = None
    base_url: str | None = None  # the request's own, for links when none is configured

    def attempt(self, lease: Lease) -> None:
        self.lease = lease
        self.attempts += 1


class Forwarder:
    def __init__(
        self, upstream: RouterClient, leases: LeaseKeeper, recorder: Recorder, metrics: Metrics,
        *, replica_id: str, verify_base_url: str | None, links_from_request: bool = False,
    ) -> None:
        self.upstream = upstream
        self.leases = leases
        self.recorder = recorder
        self.metrics = metrics
        self.replica_id = replica_id
        self.verify_base_url = verify_base_url.rstrip("/") if verify_base_url else None
        # Mounted beside the verification API (corlens serve): with no base URL configured,
        # links point at the host the client reached, as the API's own links do.
        self.links_from_request = links_from_request and self.verify_base_url is None

    # ---- non-streaming -----------------------------------------------------------------------

    async def complete(self, call: Call, pool: Pool, body: dict[str, Any]) -> Response:
        self.metrics.inflight += 1
        try:
            lease, data = await self.leases.hold(
                call.model, len(pool.slots),
                lambda slot: self.upstream.complete(slot, pool.tokens.get(slot.key), body),
                call.attempt,
            )
            try:
                call.ttfb = time.perf_counter() - call.t0
                self._usage(call, data)
                out = self._shape(call, lease, data)
            finally:
                self.leases.release_soon(lease)
        finally:
            self.metrics.inflight -= 1
        self.finish(call, "ok", 200)
        return Json(out, headers=self.headers(call, lease))

    def _shape(self, call: Call, lease: Lease, data: dict[str, Any]) -> dict[str, Any]:
        if call.endpoint == "completions":
            out = self._completion(call, data)
        else:
            choices = [
                {"index": c.get("index", 0),
                 "message": {"role": "assistant", "content": c.get("text", "")},
                 "finish_reason": c.get("finish_reason")}
                for c in data.get("choices") or []
            ]
            out = {"id": "chatcmpl-" + call.request_id, "object": "chat.completion",
                   "created": data.get("created", int(time.time())), "model": call.model,
                   "choices": choices}
            if data.get("usage"):
                out["usage"] = data["usage"]
        out["cortensor"] = self.cortensor(call, lease)
        return out

    @staticmethod
    def _completion(call: Call, data: dict[str, Any]) -> dict[str, Any]:
        """A router text completion (or one streamed chunk of it) as the client's: named after
        the model the client asked for."""
        out = {**data, "model": call.model}
        out.setdefault("id", call.request_id)
        out.setdefault("object", "text_completion")
        return out

    def cortensor(self, call: Call, lease: Lease) -> dict[str, Any]:
        s = lease.session
        url = None
        base = self.verify_base_url or call.base_url
        if base and call.task_id is not None:
            url = f"{base}/api/v1/chains/{s.chain}/sessions/{s.session_id}/tasks/{call.task_id}"
        return {"request_id": call.request_id, "chain": s.chain, "session_id": s.session_id,
                "task_id": call.task_id, "router": s.label, "verification_url": url}

    def headers(self, call: Call, lease: Lease | None = None) -> dict[str, str]:
        h = {"x-request-id": call.request_id}
        if lease is not None:
            h["x-cortensor-chain"] = lease.session.chain
            h["x-cortensor-session-id"] = str(lease.session.session_id)
            h["x-cortensor-router"] = lease.session.label
        return h

    @staticmethod
    def _usage(call: Call, data: dict[str, Any]) -> None:
        """Take the task id and token counts from a router answer, each only if its column
        can hold it (the answer may hold anything; a value the database refuses would cost the
        request its record)."""
        call.task_id = _count(data.get("task_id"), BIGINT_MAX, call.task_id)
        usage = data.get("usage")
        if isinstance(usage, dict):
            call.prompt_tokens = _count(usage.get("prompt_tokens"), INT_MAX, call.prompt_tokens)
            call.completion_tokens = _count(usage.get("completion_tokens"), INT_MAX,
                                            call.completion_tokens)

    # ---- streaming ---------------------------------------------------------------------------

    async def stream(self, call: Call, pool: Pool, body: dict[str, Any]) -> Response:
        self.metrics.inflight += 1
        try:
            lease, resp = await self.leases.hold(
                call.model, len(pool.slots),
                lambda slot: self.upstream.open_stream(slot, pool.tokens.get(slot.key), body),
                call.attempt,
            )
        except BaseException:
            self.metrics.inflight -= 1
            raise
        state: dict[str, Any] = {"done": False, "error": None}
        relay = self._relay(call, resp, state)

        async def on_close(disconnected: bool) -> None:
            try:
                await relay.aclose()
                await resp.aclose()
            finally:
                await self.leases.release(lease)
                self.metrics.inflight -= 1
            err: UpstreamError | None = state["error"]
            if err is not None:
                if err.unhealthy:
                    await self.leases.report(lease.session.key, False)
                self.finish(call, "error", 200, err.to_api().code)
            elif disconnected and not state["done"]:
                self.finish(call, "client_closed", 200, "client_closed")
            else:
                self.finish(call, "ok", 200)

        return LeasedStream(relay, on_close, headers=self.headers(call, lease))

    async def _relay(self, call: Call, resp: UpstreamResponse, state: dict[str, Any]
                     ) -> AsyncGenerator[bytes, None]:
        chat = call.endpoint == "chat.completions"
        chunks = 0
        try:
            where = call.lease.session.label if call.lease else "?"
            async for event in sse_events(self.upstream.stream_chunks(resp, where)):
                if call.ttfb is None:
                    call.ttfb = time.perf_counter() - call.t0
                data = event_data(event)
                if data is None:
                    yield event
                    continue
                if data.strip() == b"[DONE]":
                    state["done"] = True
                    break
                try:
                    parsed = orjson.loads(data)
                except ValueError:
                    yield event
                    continue
                if isinstance(parsed, dict):
                    self._usage(call, parsed)
                    chunks += 1
                    out = (chat_chunk(parsed, chunk_id="chatcmpl-" + call.request_id,
                                      model=call.model, first=chunks == 1)
                           if chat else self._completion(call, parsed))
                    if call.lease is not None and finished(out):
                        out["cortensor"] = self.cortensor(call, call.lease)
                    event = sse(out)
                yield event
        except UpstreamError as err:
            state["error"] = err
            yield sse(err.to_api().body())
        if call.completion_tokens is None:
            call.completion_tokens = chunks
        yield DONE
        state["done"] = True

    # ---- records -----------------------------------------------------------------------------

    def finish(self, call: Call, status: str, http_status: int, error_code: str | None = None
               ) -> None:
        """Record the request (batched) and count it in the metrics."""
        seconds = time.perf_counter() - call.t0
        s = call.lease.session if call.lease else None
        self.metrics.request(call.model, s.label if s else "", status, seconds)
        self.recorder.record({
            "request_id": call.request_id, "key_id": call.key_id, "model": call.model,
            "endpoint": call.endpoint, "stream": call.stream,
            "chain": s.chain if s else None, "session_id": s.session_id if s else None,
            "session_key": s.shown_key if s else None, "router_label": s.label if s else None,
            "router_url": s.shown_url if s else None, "status": status,
            "http_status": http_status, "error_code": error_code,
            "latency_ms": round(seconds * 1000, 3),
            "ttfb_ms": round(call.ttfb * 1000, 3) if call.ttfb is not None else None,
            "waited_ms": round(call.lease.waited * 1000, 3) if call.lease else None,
            "attempts": call.attempts, "prompt_tokens": call.prompt_tokens,
            "completion_tokens": call.completion_tokens, "task_id": call.task_id,
            "replica_id": self.replica_id, "created_at": call.created_at,
        })

    def fail(self, call: Call, e: ApiError) -> Response:
        status = "rejected" if e.status in (429, 503) else "error"
        if e.status in (429, 503):
            self.metrics.inc("corlens_gateway_rejections_total", "Requests rejected (429/503).",
                             model=call.model, code=e.code)
        self.finish(call, status, e.status, e.code)
        return error_response(e, {"x-request-id": call.request_id})


def _count(value: Any, limit: int, default: int | None) -> int | None:
    """``value`` as an int in [0, ``limit``] (a decimal string counts), else ``default``.

    >>> _count("12", 99, None), _count(True, 99, None), _count(100, 99, 7)
    (12, None, 7)
    """
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit:
        return value
    return default


class Json(JSONResponse):
    """A JSON answer rendered by orjson (compact UTF-8, as Starlette's, several times faster)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(e: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return Json(e.body(), status_code=e.status, headers={**(headers or {}), **e.headers()})
