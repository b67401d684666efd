"""The only code that talks to Cortensor router nodes: ``POST {router_url}/api/v1/completions/
{session_id}`` with the router's bearer token.

One ``httpx.AsyncClient`` per router URL, with explicit limits and timeouts; tests may inject a
transport. Transport failures are translated into :class:`UpstreamError` here, once:
``connect`` means nothing reached the router (the caller may retry on another session).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from gateway.capacity.base import SessionSlot
from gateway.config import UpstreamConfig
from gateway.errors import UpstreamError

MAX_ERROR_BODY = 2048  # bytes of a router's error answer kept for the client's details
# Nothing was sent: the connection never opened, or no pooled connection was free in time.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def translate(e: httpx.HTTPError | TimeoutError, where: str) -> UpstreamError:
    if isinstance(e, NOT_SENT):
        return UpstreamError("connect", f"router {where} unreachable ({type(e).__name__})")
    if isinstance(e, httpx.TimeoutException | TimeoutError):
        return UpstreamError("timeout", f"router {where} timed out")
    return UpstreamError("protocol", f"router {where} failed ({type(e).__name__})")


class RouterClient:
    """Completions against router sessions."""

    def __init__(
        self, cfg: UpstreamConfig, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.cfg = cfg
        self._transport = transport
        self._clients: dict[str, httpx.AsyncClient] = {}

    def client(self, router_url: str) -> httpx.AsyncClient:
        c = self._clients.get(router_url)
        if c is None:
            c = httpx.AsyncClient(
                base_url=router_url,
                transport=self._transport,
                timeout=httpx.Timeout(
                    self.cfg.timeout, connect=self.cfg.connect_timeout,
                    pool=self.cfg.connect_timeout,
                ),
                limits=httpx.Limits(
                    max_connections=self.cfg.max_connections,
                    max_keepalive_connections=self.cfg.keepalive,
                ),
            )
            self._clients[router_url] = c
        return c

    def _request(self, slot: SessionSlot, token: str | None, body: dict[str, Any]
                 ) -> httpx.Request:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client(slot.router_url).build_request(
            "POST", f"/api/v1/completions/{slot.session_id}", json=body, headers=headers
        )

    async def complete(self, slot: SessionSlot, token: str | None, body: dict[str, Any]
                       ) -> dict[str, Any]:
        """A non-streaming completion: the router's JSON answer."""
        where = slot.label
        try:
            async with asyncio.timeout(self.cfg.timeout):
                resp = await self.client(slot.router_url).send(self._request(slot, token, body))
        except (httpx.HTTPError, TimeoutError) as e:
            raise translate(e, where) from None
        if resp.status_code >= 400:
            raise _status_error(where, resp.status_code, resp.content)
        try:
            data = resp.json()
        except ValueError:
            raise UpstreamError("protocol", f"router {where} answered non-JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError("protocol", f"router {where} answered a non-object")
        return data

    async def open_stream(self, slot: SessionSlot, token: str | None, body: dict[str, Any]
                          ) -> httpx.Response:
        """Send a streaming completion and wait for the router's headers (bounded by the
        upstream timeout). The caller iterates ``resp.aiter_raw()`` and closes the response."""
        where = slot.label
        client = self.client(slot.router_url)
        try:
            async with asyncio.timeout(self.cfg.timeout):
                resp = await client.send(self._request(slot, token, body), stream=True)
        except (httpx.HTTPError, TimeoutError) as e:
            raise translate(e, where) from None
        if resp.status_code >= 400:
            try:
                content = await _read_bounded(resp)
            except httpx.HTTPError:
                content = b""
            finally:
                await resp.aclose()
            raise _status_error(where, resp.status_code, content)
        return resp

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.aclose()


async def _read_bounded(resp: httpx.Response) -> bytes:
    out = b""
    async for chunk in resp.aiter_raw():
        out += chunk
        if len(out) >= MAX_ERROR_BODY:
            break
    return out[:MAX_ERROR_BODY]


def _status_error(where: str, status: int, content: bytes) -> UpstreamError:
    detail = ""
    try:
        data = json.loads(content[:MAX_ERROR_BODY])
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
