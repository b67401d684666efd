"""Simulated Cortensor router nodes: real HTTP servers with the Router Node API shape.

``POST /api/v1/completions/{session_id}`` with ``Authorization: Bearer <token>`` and a body of
``prompt``, ``stream``, ``max_tokens``, ..., ``client_reference``; the answer is an OpenAI
text completion plus ``task_id``, or (``stream: true``) SSE chunks with the text in
``choices[0].text``, ending ``data: [DONE]``. Each router serves one or more sessions, with a
configurable latency (before the first byte), token count and gap between stream chunks, and
keeps its own record of the highest concurrency it saw per session (``GET /stats``;
``POST /stats/reset``; ``POST /control`` changes latency or makes a session fail).

Chain mode (:class:`ChainMode`): each completion submits a real task on the devnet chain with
the request's client reference, drives its lifecycle and payment, and answers with the real
task id. Without it the task id is synthetic (a per-session counter).

A raw ASGI app (no framework) served by uvicorn in a thread (:class:`RouterServer`) or as a
process: ``python -m devnet.routers --port P --sessions 1,2 --latency 0.02``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from devnet.anvil import free_port
from devnet.lifecycle import Net, drive_task, submit_task

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
START_TIMEOUT_S = 15.0


@dataclass
class Behaviour:
    latency: float = 0.02  # seconds before the first byte
    tokens: int = 8  # completion tokens (stream chunks)
    gap: float = 0.0  # seconds between stream chunks
    fail_status: int | None = None  # answer this status instead of a completion


@dataclass
class SessionStats:
    inflight: int = 0
    max_inflight: int = 0
    requests: int = 0
    completed: int = 0
    disconnected: int = 0
    references: list[str] = field(default_factory=list)


class ChainMode:
    """Serve each completion as a real task on the devnet chain (one at a time: a Net is not
    thread-safe). ``miners`` per session id: the nodes that answer its tasks."""

    def __init__(self, net: Net, router: str, miners: dict[int, list[str]], payment: int = 0):
        self.net = net
        self.router = router
        self.miners = miners
        self.payment = payment
        self._lock = threading.Lock()

    def run_task(self, session_id: int, prompt: str, reference: str, text: str) -> int:
        with self._lock:
            task = submit_task(self.net, session_id=session_id, sender=self.router,
                               task_data=prompt[:200], client_reference=reference)
            drive_task(self.net, task, router=self.router, miners=self.miners[session_id],
                       results=text, payment=self.payment)
            return task.task_id


class RouterApp:
    """The ASGI app of one router node."""

    def __init__(self, sessions: Sequence[int], *, token: str | None = None,
                 behaviour: Behaviour | None = None, chain: ChainMode | None = None,
                 model: str = "devnet-model") -> None:
        base = behaviour or Behaviour()
        self.token = token
        self.model = model
        self.chain = chain
        self.behaviour = {s: Behaviour(**vars(base)) for s in sessions}
        self.stats = {s: SessionStats() for s in sessions}
        self._task_ids = dict.fromkeys(sessions, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path, method = scope["path"], scope["method"]
        body = await _read_body(receive)
        if method == "GET" and path == "/stats":
            await _json(send, 200, self.stats_json())
        elif method == "POST" and path == "/stats/reset":
            self.stats = {s: SessionStats() for s in self.stats}
            await _json(send, 200, {"ok": True})
        elif method == "POST" and path == "/control":
            await self._control(send, body)
        elif method == "POST" and path.startswith("/api/v1/completions/"):
            await self._completion(scope, receive, send, path.rsplit("/", 1)[-1], body)
        else:
            await _json(send, 404, {"error": {"message": f"no route {method} {path}"}})

    def stats_json(self) -> dict[str, Any]:
        return {"sessions": {str(s): {k: v for k, v in vars(st).items() if k != "references"}
                             | {"references": len(st.references)}
                             for s, st in self.stats.items()}}

    async def _control(self, send: Send, body: bytes) -> None:
        data = json.loads(body or b"{}")
        targets = [int(data["session"])] if "session" in data else list(self.behaviour)
        for s in targets:
            b = self.behaviour[s]
            for k in ("latency", "tokens", "gap", "fail_status"):
                if k in data:
                    setattr(b, k, data[k])
        await _json(send, 200, {"ok": True})

    async def _completion(self, scope: Scope, receive: Receive, send: Send, sid: str,
                          body: bytes) -> None:
        headers = dict(scope["headers"])
        if self.token is not None and headers.get(b"authorization") != (
                b"Bearer " + self.token.encode()):
            await _json(send, 401, {"error": {"message": "bad router token"}})
            return
        if not sid.isdigit() or int(sid) not in self.behaviour:
            await _json(send, 404, {"error": {"message": f"no session {sid}"}})
            return
        session = int(sid)
        req = json.loads(body or b"{}")
        b, st = self.behaviour[session], self.stats[session]
        st.requests += 1
        st.inflight += 1
        st.max_inflight = max(st.max_inflight, st.inflight)
        st.references.append(str(req.get("client_reference", "")))
        try:
            if b.fail_status:
                await _json(send, b.fail_status, {"error": {"message": "simulated failure"}})
                return
            if await _sleep_or_disconnect(b.latency, receive):
                st.disconnected += 1
                return
            tokens = min(int(req.get("max_tokens") or b.tokens), b.tokens)
            words = [f"tok{i} " for i in range(tokens)]
            task_id = await self._task_id(session, req, "".join(words))
            prompt_tokens = len(str(req.get("prompt", "")).split())
            if req.get("stream"):
                await self._stream(send, receive, words, task_id, prompt_tokens, b.gap, st)
            else:
                await _json(send, 200, self._answer(task_id, "".join(words), prompt_tokens,
                                                    tokens))
            st.completed += 1
        finally:
            st.inflight -= 1

    async def _task_id(self, session: int, req: dict[str, Any], text: str) -> int:
        if self.chain is None:
            self._task_ids[session] += 1
            return self._task_ids[session]
        ref = str(req.get("client_reference", ""))
        return await asyncio.to_thread(self.chain.run_task, session, str(req.get("prompt", "")),
                                       ref, text)

    def _answer(self, task_id: int, text: str, prompt_tokens: int, tokens: int,
                finish: str | None = "stop") -> dict[str, Any]:
        return {
            "id": f"cmpl-{task_id}", "object": "text_completion", "created": int(time.time()),
            "model": self.model, "task_id": task_id,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                      "total_tokens": prompt_tokens + tokens},
        }

    async def _stream(self, send: Send, receive: Receive, words: list[str], task_id: int,
                      prompt_tokens: int, gap: float, st: SessionStats) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"),
                                (b"cache-control", b"no-cache")]})
        for i, word in enumerate(words):
            last = i == len(words) - 1
            chunk = self._answer(task_id, word, prompt_tokens, len(words),
                                 "stop" if last else None)
            if not last:
                del chunk["usage"]
            event = b"data: " + json.dumps(chunk).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if gap and not last and await _sleep_or_disconnect(gap, receive):
                st.disconnected += 1
                return
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n",
                    "more_body": False})


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += bytes(msg.get("body", b""))
        if not msg.get("more_body"):
            return body


async def _sleep_or_disconnect(seconds: float, receive: Receive) -> bool:
    """Sleep, or return True early when the client goes away (so the record of in-flight
    requests follows what the caller holds)."""
    listener = asyncio.ensure_future(receive())
    try:
        done, _ = await asyncio.wait({listener}, timeout=seconds)
        return bool(done) and listener.result().get("type") == "http.disconnect"
    finally:
        listener.cancel()


async def _json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RouterServer:
    """A :class:`RouterApp` served by uvicorn in a daemon thread on a free loopback port.

    >>> with RouterServer([1, 2], token="t") as r:       # doctest: +SKIP
    ...     r.url
    'http://127.0.0.1:...'
    """

    def __init__(self, sessions: Sequence[int], *, port: int | None = None, **kw: Any) -> None:
        self.app = RouterApp(sessions, **kw)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error",
                                lifespan="off", timeout_keep_alive=30, backlog=4096)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True,
                                        name=f"router-{self.port}")

    def start(self) -> RouterServer:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"router on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> RouterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="A simulated Cortensor router node (no chain).")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sessions", default="1", help="comma-separated session ids")
    p.add_argument("--token", default=None)
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--gap", type=float, default=0.0)
    a = p.parse_args(argv)
    app = RouterApp([int(s) for s in a.sessions.split(",")], token=a.token,
                    behaviour=Behaviour(latency=a.latency, tokens=a.tokens, gap=a.gap))
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="error", lifespan="off",
                backlog=4096)


if __name__ == "__main__":
    main()
