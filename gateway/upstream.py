"""The only code that talks to Cortensor router nodes: ``POST {router_url}/api/v1/completions/
{session_id}`` with the router's bearer token.

One connection pool per upstream session (:mod:`gateway.http1`), sized to the session's
``max_inflight`` (a lease caps a replica's concurrent requests to a session at that), with
explicit connect and answer timeouts. Transport failures are translated into
:class:`UpstreamError` here, once: ``connect`` means nothing reached the router (the caller may
retry on another session).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.capacity.base import SessionSlot
from gateway.config import UpstreamConfig
from gateway.errors import UpstreamError
from gateway.http1 import HttpError, Pool, Response

MAX_ERROR_BODY = 2048  # bytes of a router's error answer kept for the client's details


def translate(e: HttpError | TimeoutError, where: str) -> UpstreamError:
    if isinstance(e, TimeoutError) or e.kind == "timeout":
        return UpstreamError("timeout", f"router {where} timed out")
    if e.kind == "connect":
        return UpstreamError("connect", f"router {where} unreachable ({e})")
    return UpstreamError("protocol", f"router {where} failed ({e})")


class RouterClient:
    """Completions against router sessions."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.cfg = cfg
        self._pools: dict[str, Pool] = {}

    def pool(self, slot: SessionSlot) -> Pool:
        p = self._pools.get(slot.key)
        if p is None:
            size = min(self.cfg.max_connections, slot.max_inflight + 2)
            p = self._pools[slot.key] = Pool(slot.router_url, size, self.cfg.connect_timeout)
        return p

    async def _send(self, slot: SessionSlot, token: str | None, body: dict[str, Any]
                    ) -> Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        raw = orjson.dumps(body)
        path = f"/api/v1/completions/{slot.session_id}"
        try:
            # unbounded here: both callers bound the whole exchange with the upstream timeout
            return await self.pool(slot).post(path, raw, headers, None)
        except HttpError as e:
            raise translate(e, slot.label) from None

    async def complete(self, slot: SessionSlot, token: str | None, body: dict[str, Any]
                       ) -> dict[str, Any]:
        """A non-streaming completion: the router's JSON answer (all within the timeout)."""
        where = slot.label
        try:
            async with asyncio.timeout(self.cfg.timeout):
                resp = await self._send(slot, token, body)
                try:
                    content = await resp.read(None)
                finally:
                    await resp.aclose()
        except TimeoutError:
            raise UpstreamError("timeout", f"router {where} timed out") from None
        except HttpError as e:
            raise translate(e, where) from None
        if resp.status >= 400:
            raise _status_error(where, resp.status, content)
        try:
            data = orjson.loads(content)
        except ValueError:
            raise UpstreamError("protocol", f"router {where} answered non-JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError("protocol", f"router {where} answered a non-object")
        return data

    async def open_stream(self, slot: SessionSlot, token: str | None, body: dict[str, Any]
                          ) -> Response:
        """Send a streaming completion and wait for the router's headers (bounded by the
        upstream timeout). The caller iterates :func:`stream_chunks` and closes the response."""
        where = slot.label
        try:
            async with asyncio.timeout(self.cfg.timeout):
                resp = await self._send(slot, token, body)
        except TimeoutError:
            raise UpstreamError("timeout", f"router {where} timed out") from None
        if resp.status >= 400:
            try:
                content = await _read_bounded(resp, self.cfg.timeout)
            except HttpError:
                content = b""
            finally:
                await resp.aclose()
            raise _status_error(where, resp.status, content)
        return resp

    async def stream_chunks(self, resp: Response, where: str) -> AsyncIterator[bytes]:
        """The body of a streaming answer; a failure raises :class:`UpstreamError`."""
        try:
            async for chunk in resp.chunks(self.cfg.timeout):
                yield chunk
        except HttpError as e:
            raise translate(e, where) from None

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for p in pools:
            p.close()


async def _read_bounded(resp: Response, timeout: float) -> bytes:
    out = b""
    async for chunk in resp.chunks(timeout):
        out += chunk
        if len(out) >= MAX_ERROR_BODY:
            break
    return out[:MAX_ERROR_BODY]


def _status_error(where: str, status: int, content: bytes) -> UpstreamError:
    detail = ""
    try:
        data = orjson.loads(content[:MAX_ERROR_BODY])
        if isinstance(data, dict):
            err = data.get("error", data.get("detail", ""))
            detail = err.get("message", "") if isinstance(err, dict) else str(err)
    except ValueError:
        pass
    suffix = f": {detail[:200]}" if detail else ""
    return UpstreamError("status", f"router {where} answered {status}{suffix}", status=status)


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Split a byte stream into complete SSE events (each ending with a blank line), as the
    router produced them; a trailing partial event is yielded as is."""
    buf = b""
    async for chunk in chunks:
        buf += chunk.replace(b"\r\n", b"\n")
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            yield buf[: end + 2]
            buf = buf[end + 2 :]
    if buf.strip():
        yield buf if buf.endswith(b"\n\n") else buf.rstrip(b"\n") + b"\n\n"


def event_data(event: bytes) -> bytes | None:
    """The ``data:`` payload of one SSE event (lines joined), or None without data."""
    lines = [ln[5:].lstrip(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines) if lines else None
