"""Put the pieces together for a command: the verification API, its verify/payout routes, and
the gateway when ``gateway.models`` is configured. Kept apart from :mod:`api.app` so the factory
stays testable piece by piece."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

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
    )


def build_app(settings: Settings, *, run_indexer: bool) -> FastAPI:
    routers = extra_routers()
    gw = build_gateway(settings)
    startup, shutdown = [], []
    if gw is not None:
        routers.append(gw.router)
        startup.append(gw.startup)
        shutdown.append(gw.shutdown)
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
