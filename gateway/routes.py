"""The client API under /v1: OpenAI-compatible completions, chat completions and models.

Routes are thin: authenticate, rate-limit, validate, resolve the pool, hand over to the
:class:`~gateway.forward.Forwarder`. Every error is answered here as
``{"error": {"code", "message", "details"}}`` (the gateway may be mounted in an app whose own
exception handlers it does not control).

:class:`ClientApi` holds the handlers as plain functions of (endpoint, Authorization header,
raw body). They are reached two ways: FastAPI routes (:func:`client_router`, mounted in
``corlens serve`` and listed in the OpenAPI schema) and :func:`fast_path`, a bare ASGI
dispatcher the standalone gateway puts in front of FastAPI for the two POST routes, because
FastAPI's routing, middleware and dependency machinery cost more per request than the whole
rest of the gateway's own work (measured with the gateway bench).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import ApiError, CapacityExceeded, UpstreamError
from gateway.forward import Call, error_response
from gateway.schemas import (
    ChatRequest,
    CompletionRequest,
    chat_prompt,
    completion_prompt,
    parse_body,
    router_body,
)

if TYPE_CHECKING:
    from gateway.app import Gateway

MAX_BODY = 4 * 1024 * 1024  # bytes of a client request body (a prompt far beyond any context)
ENDPOINTS = {"/v1/completions": "completions", "/v1/chat/completions": "chat.completions"}


def new_request_id() -> str:
    """The gateway's request id (128 random bits, as a uuid4 hex without its object); it
    travels on chain as the task's clientReference."""
    return "gw-" + os.urandom(16).hex()


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def read_body(receive: Receive, limit: int = MAX_BODY) -> bytes:
    """The whole request body; 413 beyond ``limit`` bytes, :class:`ClientGone` on a
    disconnect."""
    parts: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"request body over {limit} bytes",
                           {"limit": limit})
        parts.append(chunk)
        if not msg.get("more_body"):
            return b"".join(parts)


class ClientApi:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def complete(self, endpoint: str, authorization: str | None, receive: Receive,
                       scope: Scope | None = None) -> Response:
        """One completion or chat completion, from its headers to the answer (JSON or SSE);
        ``scope`` gives the request's base URL, for links when the gateway has none."""
        gw = self.gw
        call = Call(request_id=new_request_id(), model="", endpoint=endpoint)
        if scope is not None and gw.forwarder.links_from_request:
            call.base_url = str(HTTPConnection(scope).base_url).rstrip("/")
        try:
            key = await gw.auth.authenticate(authorization)
            call.key_id = key.id
            raw = await read_body(receive)
            req: CompletionRequest | ChatRequest
            if endpoint == "completions":
                req = parse_body(raw, CompletionRequest)
                prompt = completion_prompt(req)
            else:
                req = parse_body(raw, ChatRequest)
                prompt = ""
            call.model, call.stream = req.model, req.stream
            pool = gw.pools.get(req.model)
            if pool is None:
                raise ApiError(404, "model_not_found",
                               f"no model {req.model!r}; see GET /v1/models",
                               {"model": req.model, "available": sorted(gw.pools)})
            await gw.limiter.check(key)
            if isinstance(req, ChatRequest):
                prompt = chat_prompt(req.messages, pool.chat_template)
            body = router_body(
                req, prompt, request_id=call.request_id, prompt_type=pool.prompt_type,
                prompt_template=pool.prompt_template, timeout=gw.config.upstream.timeout,
            )
            if req.stream:
                return await gw.forwarder.stream(call, pool, body)
            return await gw.forwarder.complete(call, pool, body)
        except CapacityExceeded as e:
            return gw.forwarder.fail(call, ApiError.from_capacity(e))
        except UpstreamError as e:
            return gw.forwarder.fail(call, e.to_api())
        except ApiError as e:
            if not call.model:  # refused before the body named a model: not a model's request
                return error_response(e, {"x-request-id": call.request_id})
            return gw.forwarder.fail(call, e)

    async def models(self, authorization: str | None) -> Response:
        gw = self.gw
        try:
            await gw.auth.authenticate(authorization)
        except ApiError as e:
            return error_response(e)
        now = int(time.time())
        data = [
            {"id": alias, "object": "model", "created": now, "owned_by": "cortensor",
             "sessions": len(pool.slots)}
            for alias, pool in sorted(gw.pools.items())
        ]
        return JSONResponse({"object": "list", "data": data})


def client_router(api: ClientApi) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["gateway"])

    async def serve(request: Request, endpoint: str) -> Response:
        try:
            return await api.complete(endpoint, request.headers.get("authorization"),
                                      request.receive, request.scope)
        except ClientGone:
            return Response(status_code=499)  # nobody reads it

    @router.post("/completions", summary="Text completion (OpenAI-compatible)")
    async def completions(request: Request) -> Response:
        return await serve(request, "completions")

    @router.post("/chat/completions", summary="Chat completion (OpenAI-compatible)")
    async def chat_completions(request: Request) -> Response:
        return await serve(request, "chat.completions")

    @router.get("/models", summary="Model aliases this gateway serves")
    async def models(request: Request) -> Response:
        return await api.models(request.headers.get("authorization"))

    return router


def fast_path(app: ASGIApp, api: ClientApi) -> ASGIApp:
    """``app`` with POST /v1/completions and /v1/chat/completions served straight from the
    ASGI scope (same handlers, same answers as the FastAPI routes); everything else goes to
    ``app``."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = ENDPOINTS.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST" or scope.get("root_path"):
            await app(scope, receive, send)
            return
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        try:
            response = await api.complete(endpoint, authorization, receive, scope)
        except ClientGone:
            return
        await response(scope, receive, send)

    return asgi
