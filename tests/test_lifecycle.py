"""The lifecycle read path's pure parts: the coalescer (group commit), the statements and the
lean route."""

from __future__ import annotations

import asyncio
from typing import Annotated

import pytest
from fastapi import Path, Request, Response

from api import lifecycle
from api.pg_async import Coalescer, conninfo


class Lookups:
    """A lookup that records its batches and finishes when the test says so."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail = fail

    async def __call__(self, keys: list[int]) -> dict[int, str]:
        self.batches.append(keys)
        await self.release.wait()
        if self.fail:
            raise RuntimeError("database went away")
        return {k: f"v{k}" for k in keys if k != 404}


def test_coalescer_runs_at_once_below_the_limit_and_batches_what_waits() -> None:
    async def run() -> tuple[list[str | None], list[list[int]]]:
        look = Lookups()
        c: Coalescer[int, str] = Coalescer(look, limit=2)
        calls = [asyncio.ensure_future(c.get(k)) for k in (1, 2, 3, 4, 3, 404)]
        await asyncio.sleep(0)
        assert look.batches == [[1], [2]]  # two at once; the rest wait for one to finish
        look.release.set()
        return list(await asyncio.gather(*calls)), look.batches

    got, batches = asyncio.run(run())
    assert got == ["v1", "v2", "v3", "v4", "v3", None]
    assert batches == [[1], [2], [3, 4, 404]]  # duplicates share one key in the batch


def test_coalescer_hands_a_failure_to_every_caller_of_the_batch() -> None:
    async def run() -> list[object]:
        look = Lookups(fail=True)
        c: Coalescer[int, str] = Coalescer(look, limit=1)
        calls = [asyncio.ensure_future(c.get(k)) for k in (1, 2, 3)]
        await asyncio.sleep(0)
        look.release.set()
        out = await asyncio.gather(*calls, return_exceptions=True)
        assert look.batches == [[1], [2, 3]] and c._running == 0
        return out

    assert all(isinstance(e, RuntimeError) for e in asyncio.run(run()))


def test_coalescer_survives_a_caller_that_went_away() -> None:
    async def run() -> str | None:
        look = Lookups()
        c: Coalescer[int, str] = Coalescer(look, limit=1)
        first = asyncio.ensure_future(c.get(1))
        gone = asyncio.ensure_future(c.get(2))
        await asyncio.sleep(0)
        gone.cancel()
        look.release.set()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await first

    assert asyncio.run(run()) == "v1"


def test_step_objects_are_the_first_fields_of_a_step_in_order() -> None:
    """document() spreads each step object from the statement into the response."""
    from api.schemas import StepOut

    assert lifecycle.STEP_COLS == tuple(StepOut.model_fields)[: len(lifecycle.STEP_COLS)]


def test_statements_fetch_the_same_columns_on_every_backend() -> None:
    for one, many in ((lifecycle.PG_ONE, lifecycle.PG_MANY),
                      (lifecycle.PG_ONE_TABLES, lifecycle.PG_MANY_TABLES)):
        assert one.split(" FROM task t")[0] == many.split(" FROM json_to_recordset")[0]
        assert "t.task_id = $3" in one and "$2::json" in many and "t.chain_id = $1" in many
    sqlite = lifecycle._sql("sqlite", materialized=False)
    assert sqlite.count("json_group_array(json_object(") == 3 and ":task_id" in sqlite
    fast = lifecycle._sql("sqlite")
    assert "t.steps_json, t.miners_json, t.payments_json" in fast and "SELECT (" not in fast
    assert conninfo("postgresql+psycopg://u:p@h:5/db") == "postgresql://u:p@h:5/db"


def test_links_follow_each_request_origin_and_stay_bounded() -> None:
    from starlette.requests import Request

    from api import state as st
    from indexer.config import load_settings

    settings = load_settings(None, env={}, overrides={
        "database_url": "sqlite://", "chains": [{"name": "local", "preset": "local",
                                                 "rpc_urls": ["http://127.0.0.1:9"]}]})
    app = st.AppState(settings=settings, engine=None,  # type: ignore[arg-type]
                      chains={c.name: c for c in settings.chains}, rpcs={}, public_url=None)
    chain = app.chain("local")

    def req(host: str) -> Request:
        return Request({"type": "http", "scheme": "http", "server": ["s", 80], "path": "/",
                        "root_path": "", "query_string": b"",
                        "headers": [(b"host", host.encode())]})

    assert app.links(chain, req("a.example")).tx("0x1") == (
        "http://a.example/api/v1/chains/local/tx/0x1")
    assert app.links(chain, req("b.example:8080")).tx("0x1").startswith("http://b.example:8080/")
    assert app.links(chain, req("a.example")) is app.links(chain, req("a.example"))
    for i in range(3 * st.LINKS_CACHE):
        app.links(chain, req(f"h{i}.example"))
    assert len(app._links) <= st.LINKS_CACHE


_Id = Annotated[int, Path(ge=0, le=2**63 - 1)]
_Name = Annotated[str, Path(max_length=5)]
_LEAN_CALLS: list[str] = []


async def _lean_endpoint(request: Request, name: _Name, a: _Id, b: _Id) -> Response:
    _LEAN_CALLS.append(request.url.path)
    return Response(f"{name!r} {a} {b}", media_type="text/plain")


def test_lean_route_answers_exactly_as_fastapi_would() -> None:
    """The task route's lean path (api/lean_route.py) parses path ids itself; for every input
    it must answer what the same endpoint answers as a plain FastAPI route."""
    from fastapi import APIRouter, FastAPI
    from fastapi.testclient import TestClient
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from api.errors import install
    from api.lean_route import digits, lean_route, text

    endpoint, calls = _lean_endpoint, _LEAN_CALLS
    router = APIRouter()
    router.add_api_route("/plain/{name}/{a}/{b}", endpoint, methods=["GET"])
    lean = lean_route({"name": text(5), "a": digits(2**63 - 1), "b": digits(2**63 - 1)})
    router.add_api_route("/lean/{name}/{a}/{b}", endpoint, methods=["GET"],
                         route_class_override=lean)
    app = FastAPI()
    install(app)
    app.include_router(router)
    client = TestClient(app)
    assert app.openapi()["paths"]["/lean/{name}/{a}/{b}"]["get"]["parameters"] == (
        app.openapi()["paths"]["/plain/{name}/{a}/{b}"]["get"]["parameters"])

    def same(name: str, a: str, b: str) -> None:
        from urllib.parse import quote

        tail = "/".join(quote(x, safe="") for x in (name, a, b))
        p, q = client.get(f"/plain/{tail}"), client.get(f"/lean/{tail}")
        assert (p.status_code, p.text) == (q.status_code, q.text), (name, a, b)

    for a in ["0", "007", "9223372036854775807", "9223372036854775808", "-1", "+1", " 1",
              "1 ", "1.0", "1e3", "１", "٣", "x", "1_000", "0x10", "99999999999999999999"]:
        same("local", a, "1")
        same("local", "1", a)
    for name in ["abcde", "abcdef", "é", " a"]:
        same(name, "1", "2")

    @settings(max_examples=150, deadline=None)
    @given(st.text(min_size=1, max_size=7), st.text(min_size=1, max_size=21),
           st.from_regex(r"\A[0-9]{1,20}\Z"))
    def prop(name: str, a: str, b: str) -> None:
        same(name, a, b)

    prop()
    assert calls  # the lean path did call the endpoint for well-formed input
