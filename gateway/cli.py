"""Gateway commands for the ``corlens`` CLI (``gateway``, ``keys``): registered by api.cli."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the gateway's commands to the main CLI."""
    del app
