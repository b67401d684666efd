"""Options every ``corlens`` command spells the same way (typer annotations, no imports of the
commands themselves, so command modules can share them without importing :mod:`api.cli`)."""

from __future__ import annotations

from typing import Annotated

import typer

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="YAML config file (default: $CORLENS_CONFIG, then ./corlens.yaml)"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def host_problem(host: str) -> str | None:
    """Why ``--host`` cannot be listened on (a name that does not resolve), or None. Checked
    before a server starts, which would otherwise end with its own message and status 3."""
    import socket

    if host == "":  # every interface, as uvicorn reads it
        return None
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        return f"--host: cannot listen on {host!r}: {getattr(e, 'strerror', None) or e}"
    return None
