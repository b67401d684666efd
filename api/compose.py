"""Put the pieces together for a command: the verification API plus the gateway, when one is
configured. Kept apart from :mod:`api.app` so the factory stays testable without a gateway."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from indexer.config import Settings


def build_app(settings: Settings, *, run_indexer: bool) -> FastAPI:
    return create_app(settings, run_indexer=run_indexer)
