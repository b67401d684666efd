"""Put the pieces together for a command: the verification API, its verify/payout routes, and
the gateway when ``gateway.models`` is configured. Kept apart from :mod:`api.app` so the factory
stays testable piece by piece."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from api.app import create_app
from indexer.config import Settings
from indexer.errors import ConfigError


def extra_routers() -> list[Any]:
    """The API's routers beyond the core ones (verification and payouts)."""
    from api.routes_payouts import router as payouts_router
    from api.routes_verify import router as verify_router

    return [verify_router, payouts_router]


def build_gateway(settings: Settings) -> Any:
    """The gateway configured in ``settings``, or None when no model is configured."""
    if not settings.gateway.get("models"):
        return None
    from gateway.app import Gateway
    from gateway.config import load_gateway_config
    from gateway.errors import GatewayConfigError

    try:
        cfg = load_gateway_config(settings.gateway)
    except GatewayConfigError as e:
        raise ConfigError(f"gateway.{e.key}", e.problem) from None
    return Gateway(
        cfg,
        database_url=settings.database_url,
        redis_url=settings.redis_url,
        admin_token=settings.admin_token,
        verify_base_url=settings.public_url,
        links_from_request=True,  # served beside the verification API
    )


def build_app(settings: Settings, *, run_indexer: bool) -> FastAPI:
    """The app, its gateway (if configured) mounted."""
    routers = extra_routers()
    gw = build_gateway(settings)
    startup: list[Callable[[], Awaitable[None]]] = []
    shutdown: list[Callable[[], Awaitable[None]]] = []
    if gw is not None:
        routers.append(gw.router)
        startup.append(gw.startup)
        shutdown.insert(0, gw.shutdown)
    app = create_app(
        settings,
        run_indexer=run_indexer,
        extra_routers=routers,
        on_startup=startup,
        on_shutdown=shutdown,
    )
    if gw is not None:
        app.state.corlens.extra["gateway"] = gw
    return app


def serve_app(settings: Settings, *, run_indexer: bool) -> ASGIApp:
    """What ``corlens serve`` (and the demo) hand to uvicorn: :func:`build_app`, and with a
    gateway its two completion routes on the gateway's bare ASGI fast path (as the standalone
    ``corlens gateway`` serves them). The app's lifespan freezes the collector after start-up
    (:func:`api.app.create_app`)."""
    app = build_app(settings, run_indexer=run_indexer)
    gw = app.state.corlens.extra.get("gateway")
    if gw is None:
        return app
    from gateway.routes import fast_path

    return fast_path(app, gw.api)
