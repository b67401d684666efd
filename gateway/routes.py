"""The client API under /v1: OpenAI-compatible completions, chat completions and models.

Routes are thin: authenticate, rate-limit, validate, resolve the pool, hand over to the
:class:`~gateway.forward.Forwarder`. Every error is answered here as
``{"error": {"code", "message", "details"}}`` (the gateway may be mounted in an app whose own
exception handlers it does not control).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

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


def new_request_id() -> str:
    """The gateway's request id; it travels on chain as the task's clientReference."""
    return "gw-" + uuid.uuid4().hex


def client_router(gw: Gateway) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["gateway"])

    async def serve(request: Request, endpoint: str) -> Response:
        call = Call(request_id=new_request_id(), model="", endpoint=endpoint)
        try:
            key = await gw.auth.authenticate(request.headers.get("authorization"))
            call.key_id = key.id
            raw = await request.body()
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

    @router.post("/completions", summary="Text completion (OpenAI-compatible)")
    async def completions(request: Request) -> Response:
        return await serve(request, "completions")

    @router.post("/chat/completions", summary="Chat completion (OpenAI-compatible)")
    async def chat_completions(request: Request) -> Response:
        return await serve(request, "chat.completions")

    @router.get("/models", summary="Model aliases this gateway serves")
    async def models(request: Request) -> Response:
        try:
            await gw.auth.authenticate(request.headers.get("authorization"))
        except ApiError as e:
            return error_response(e)
        now = int(time.time())
        data = [
            {"id": alias, "object": "model", "created": now, "owned_by": "cortensor",
             "sessions": len(pool.slots)}
            for alias, pool in sorted(gw.pools.items())
        ]
        return JSONResponse({"object": "list", "data": data})

    return router
