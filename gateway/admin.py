"""Admin routes under /admin, behind ``Authorization: Bearer <admin token>`` (constant-time
compare): capacity, sessions, recent requests, API keys, drain / undrain."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from gateway.capacity.base import shown_key
from gateway.errors import ApiError
from gateway.forward import error_response
from gateway.keys import bearer
from gateway.limits import BIGINT_MAX, INT_MAX, KEY_NAME_MAX
from gateway.routes import ClientGone, read_body
from gateway.stats import RECENT_LIMIT_MAX, recent_requests, session_figures

if TYPE_CHECKING:
    from gateway.app import Gateway

Handler = Callable[[Request], Awaitable[dict[str, Any]]]
ECHO_CHARS = 100  # of a client's value quoted back in an error (the body may hold 4 MiB)


def check_admin(gw: Gateway, header: str | None) -> None:
    token = bearer(header)
    if token is None:
        raise ApiError(401, "missing_admin_token", "send Authorization: Bearer <admin token>")
    expected = gw.admin_token
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(403, "invalid_admin_token", "the admin token is not valid"
                       if expected else "admin routes are disabled: set admin_token")


def _int(value: str | None, name: str, default: int | None = None,
         lo: int | None = None, hi: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise ApiError(422, "invalid_query", f"{name}: must be an integer", {"field": name}
                       ) from None
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise ApiError(422, "invalid_query", f"{name}: must be between {lo} and {hi}",
                       {"field": name})
    return n


def _text(value: Any, name: str, where: str = "invalid_query") -> Any:
    """``value``, refused if it is text holding NUL (no database text column can store one);
    anything else is the caller's to check."""
    if isinstance(value, str) and "\x00" in value:
        raise ApiError(422, where, f"{name}: must not contain NUL characters", {"field": name})
    return value


def _clip(text: str) -> str:
    """``text`` as quoted in an error: at most :data:`ECHO_CHARS` characters.

    >>> _clip("x" * 1000)[-7:], len(_clip("x" * 1000)), _clip("a1")
    ('xxxx...', 103, 'a1')
    """
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "..."


async def _json(request: Request) -> dict[str, Any]:
    """The body as a JSON object; 413 beyond the client routes' limit, as theirs."""
    raw = await read_body(request.receive)
    if not raw:
        return {}
    try:  # orjson, as for client bodies: bounded nesting, no lone surrogates
        data = orjson.loads(raw)
    except ValueError as e:
        raise ApiError(422, "invalid_body", f"body is not valid JSON: {e}", {"field": "body"}
                       ) from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "body must be a JSON object", {"field": "body"})
    return data


def admin_router(gw: Gateway) -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["gateway admin"])

    def route(method: str, path: str, summary: str) -> Callable[[Handler], Handler]:
        def wrap(fn: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                try:
                    check_admin(gw, request.headers.get("authorization"))
                    return JSONResponse(await fn(request))
                except ApiError as e:
                    return error_response(e)
                except ClientGone:
                    return Response(status_code=499)  # nobody reads it

            endpoint.__name__ = fn.__name__
            router.add_api_route(path, endpoint, methods=[method], summary=summary)
            return fn

        return wrap

    @route("GET", "/capacity", "Capacity mode, Redis state and every tracked session")
    async def capacity(_: Request) -> dict[str, Any]:
        snap = asdict(await gw.tracker.snapshot())
        for s in snap["sessions"]:
            s["key"] = shown_key(s["key"])
        return {"replica_id": gw.replica_id, **snap}

    @route("GET", "/sessions", "Per session: live occupancy and the last 15 minutes")
    async def sessions(_: Request) -> dict[str, Any]:
        snap = await gw.tracker.snapshot()
        figs = await asyncio.to_thread(session_figures, gw.store.engine)
        out = []
        for s in snap.sessions:
            f = figs.get(shown_key(s.key))  # records hold the shown key
            slot = next((x for p in gw.pools.values() for x in p.slots if x.key == s.key), None)
            out.append({
                "key": shown_key(s.key), "model": s.model, "label": s.label,
                "router_url": slot.shown_url if slot else None,
                "session_id": slot.session_id if slot else None,
                "chain": slot.chain if slot else None,
                "inflight": s.inflight, "limit": s.limit, "drained": s.drained,
                "cooldown_until": s.cooldown_until,
                "consecutive_failures": s.consecutive_failures,
                **(f.public() if f else {"requests_1m": 0, "requests_15m": 0}),
            })
        return {"replica_id": gw.replica_id, "mode": snap.mode, "sessions": out}

    @route("GET", "/requests", "Recent requests, newest first (model, status, key_id, session)")
    async def requests(request: Request) -> dict[str, Any]:
        qp = request.query_params
        rows = await asyncio.to_thread(
            recent_requests, gw.store.engine, model=_text(qp.get("model"), "model"),
            status=_text(qp.get("status"), "status"),
            key_id=_int(qp.get("key_id"), "key_id", lo=0, hi=BIGINT_MAX),
            session=_text(qp.get("session"), "session"),
            limit=_int(qp.get("limit"), "limit", 100, lo=1, hi=RECENT_LIMIT_MAX) or 100,
        )
        for r in rows:  # records written before keys were stored redacted
            r["session_key"] = r["session_key"] and shown_key(r["session_key"])
        return {"requests": rows}

    @route("GET", "/keys", "API keys (never the key itself)")
    async def list_keys(_: Request) -> dict[str, Any]:
        keys = await asyncio.to_thread(gw.store.list_keys)
        return {"keys": [k.public() for k in keys]}

    @route("POST", "/keys", "Create an API key: the answer holds it, once")
    async def create_key(request: Request) -> dict[str, Any]:
        body = await _json(request)
        name = _text(body.get("name"), "name", "invalid_body")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(422, "invalid_body", "name: a non-empty string is required",
                           {"field": "name"})
        if len(name.strip()) > KEY_NAME_MAX:
            raise ApiError(422, "invalid_body", f"name: at most {KEY_NAME_MAX} characters",
                           {"field": "name"})
        rpm = body.get("rpm_limit")
        if rpm is not None and (not isinstance(rpm, int) or isinstance(rpm, bool)
                                or not 1 <= rpm <= INT_MAX):
            raise ApiError(422, "invalid_body", f"rpm_limit: an integer from 1 to {INT_MAX} "
                           "or null", {"field": "rpm_limit"})
        info, key = await asyncio.to_thread(gw.store.create_key, name.strip(), rpm)
        return {**info.public(), "key": key}

    async def set_enabled(request: Request, enabled: bool) -> dict[str, Any]:
        key_id = _int(request.path_params["key_id"], "key_id")
        assert key_id is not None
        info = None  # an id no column can hold names no key, as a negative one
        if 0 <= key_id <= BIGINT_MAX:
            info = await asyncio.to_thread(gw.store.set_key_enabled, key_id, enabled)
        if info is None:
            shown = key_id if abs(key_id) <= BIGINT_MAX else _clip(str(key_id))  # JSON: 64 bits
            raise ApiError(404, "key_not_found", f"no API key {shown}", {"key_id": shown})
        gw.auth.forget(key_id)
        return info.public()

    @route("POST", "/keys/{key_id}/disable", "Disable an API key")
    async def disable_key(request: Request) -> dict[str, Any]:
        return await set_enabled(request, False)

    @route("POST", "/keys/{key_id}/enable", "Enable an API key")
    async def enable_key(request: Request) -> dict[str, Any]:
        return await set_enabled(request, True)

    async def drain(request: Request, drained: bool) -> dict[str, Any]:
        body = await _json(request)
        wanted = body.get("session") or request.query_params.get("session")
        if not isinstance(wanted, str) or not wanted:
            raise ApiError(422, "invalid_body", "session: a session key or label is required",
                           {"field": "session"})
        slots = [s for p in gw.pools.values() for s in p.slots
                 if wanted in (s.key, s.shown_key, s.label)]
        if not slots:
            raise ApiError(404, "session_not_found", f"no session {_clip(wanted)!r}",
                           {"session": _clip(wanted)})
        for s in slots:
            await gw.tracker.set_drained(s.key, drained)
        return {"sessions": [s.shown_key for s in slots], "drained": drained}

    @route("POST", "/sessions/drain", "Stop sending new requests to a session (key, as shown, "
           "or label)")
    async def drain_session(request: Request) -> dict[str, Any]:
        return await drain(request, True)

    @route("POST", "/sessions/undrain", "Send requests to a drained session again")
    async def undrain_session(request: Request) -> dict[str, Any]:
        return await drain(request, False)

    return router
