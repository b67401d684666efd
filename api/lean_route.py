"""A FastAPI route whose well-formed requests skip FastAPI's dependency solver.

For a hot route whose only inputs are path parameters, FastAPI's per-request work (building
the dependency graph's values, validating each parameter through pydantic, the exit stack) was
a tenth of the task lifecycle route's CPU under load (bench/api.py --profile). A
:class:`LeanPathRoute` keeps everything FastAPI knows about the route (OpenAPI schema,
docs, response model) and its full handler, but first tries the route's own ``parsers``: one
per path parameter, returning the value or None. When every parameter parses, the endpoint is
called directly with them (and ``request``); when any does not, the request goes to FastAPI's
own handler, so a bad value gets exactly the 422 it always got. A parser must therefore accept
only values FastAPI would accept and give the value FastAPI would give.

>>> digits(2**63 - 1)("007"), digits(10)("11"), digits(10)("-1"), digits(10)(" 1")
(7, None, None, None)
>>> text(3)("abc"), text(3)("abcd")
('abc', None)
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

Parser = Callable[[str], Any]


def digits(le: int) -> Parser:
    """A non-negative integer of ASCII digits, at most ``le`` (``Path(ge=0, le=le)``)."""
    width = len(str(le))

    def parse(s: str) -> int | None:
        if not (0 < len(s) <= width and s.isascii() and s.isdigit()):
            return None
        n = int(s)
        return n if n <= le else None

    return parse


def text(max_length: int) -> Parser:
    """Any string of at most ``max_length`` characters (``Path(max_length=...)``)."""
    return lambda s: s if len(s) <= max_length else None


def lean_route(parsers: dict[str, Parser]) -> type[APIRoute]:
    """An :class:`APIRoute` class for ``router.add_api_route(..., route_class_override=...)``
    or ``@router.get(..., route_class_override=...)``-style use through ``APIRouter``."""

    class LeanPathRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            full = super().get_route_handler()
            names = {p.name for p in self.dependant.path_params}
            if names != set(parsers) or self.dependant.query_params or self.dependant.dependencies:
                raise TypeError(f"{self.path}: lean parsers {sorted(parsers)} != {sorted(names)}")
            endpoint = self.endpoint
            items = tuple(parsers.items())

            async def handler(request: Request) -> Response:
                raw = request.path_params
                kw: dict[str, Any] = {}
                for name, parse in items:
                    value = parse(raw[name])
                    if value is None:
                        return await full(request)
                    kw[name] = value
                response: Response = await endpoint(request, **kw)
                return response

            return handler

    return LeanPathRoute
