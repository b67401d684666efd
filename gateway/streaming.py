"""Streaming responses whose cleanup no client disconnect can skip.

:class:`LeasedStream` sends the body while listening for the client's disconnect; whichever ends
first, ``on_close(disconnected)`` runs afterwards under a shielded cancel scope: it closes the
router's response and releases the lease. The relay turns the router's SSE events into the
client's (completion chunks renamed after the client's model, chat chunks reshaped), the final
one (with its ``finish_reason``) carrying the ``cortensor`` object.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

DONE = b"data: [DONE]\n\n"


class LeasedStream(StreamingResponse):
    def __init__(
        self,
        content: AsyncIterator[bytes],
        on_close: Callable[[bool], Awaitable[None]],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        del scope  # HTTP only
        disconnected = False
        try:
            async with anyio.create_task_group() as tg:

                async def stream() -> None:
                    nonlocal disconnected
                    try:
                        await self.stream_response(send)
                    except OSError:
                        disconnected = True
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                await self.listen_for_disconnect(receive)
                disconnected = True
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._on_close(disconnected)


def chat_chunk(data: dict[str, Any], *, chunk_id: str, model: str, first: bool
               ) -> dict[str, Any]:
    """One router text-completion chunk as an OpenAI chat.completion.chunk."""
    choices = []
    for c in data.get("choices") or [{}]:
        delta: dict[str, Any] = {"content": c.get("text", "")}
        if first:
            delta["role"] = "assistant"
        choices.append({"index": c.get("index", 0), "delta": delta,
                        "finish_reason": c.get("finish_reason")})
    out: dict[str, Any] = {
        "id": chunk_id, "object": "chat.completion.chunk",
        "created": data.get("created", int(time.time())), "model": model, "choices": choices,
    }
    if data.get("usage"):
        out["usage"] = data["usage"]
    return out


def finished(chunk: dict[str, Any]) -> bool:
    """Whether a completion or chat chunk is a final one: a choice with a finish_reason.

    >>> finished({"choices": [{"finish_reason": "stop"}]}), finished({"choices": "x"})
    (True, False)
    """
    choices = chunk.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") for c in choices)


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
