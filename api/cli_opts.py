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


def bind_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port`` right now (the port taken, an address
    not on this machine), or None: tried with a socket of our own, closed at once."""
    import socket

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            s.bind(address)
    except OSError as e:
        return (f"cannot listen on {host or '*'}:{port}: {e.strerror or e}; choose another "
                "--port, or a --host address of this machine")
    return None


def serving_line(host: str, port: int) -> tuple[str, str]:
    """(base URL, the line a serving command prints before it starts) for ``host:port``."""
    shown = host or "0.0.0.0"  # "" is every interface, as uvicorn reads it
    base = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"
    return base, f"serving the API on {base} (docs: {base}/docs)"


def listen_problem(host: str, port: int) -> tuple[int, str] | None:
    """(exit status, message) when a server could not listen on ``host:port``: 2 for a host
    name that does not resolve (bad input), 1 for an address or port unavailable now."""
    if problem := host_problem(host):
        return 2, problem
    if problem := bind_problem(host, port):
        return 1, problem
    return None
