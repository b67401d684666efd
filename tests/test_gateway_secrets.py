"""A router URL may carry credentials (``http://user:password@host``): they reach the router
and nothing else. Request records, the verification API, the admin routes and the logs show the
URL redacted (``http://***@host``), through ``corlens serve`` with a real router, over both
capacity backends and on a real database."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from api.compose import serve_app
from devnet.routers import Behaviour, RouterServer
from gateway.store import GatewayStore
from indexer.config import Settings
from tests.gateway_helpers import (
    ADMIN,
    ADMIN_H,
    add_key,
    backend_fixture,  # noqa: F401
    bearer,
    gateway_section,
    migrated_sqlite,
    sessions_of,
)

SECRET = "pa55w0rd"


def _record(c: TestClient, request_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 5
    while True:
        r = c.get(f"/api/v1/requests/{request_id}")
        if r.status_code == 200 and r.json()["gateway"] is not None:
            return dict(r.json()["gateway"])
        assert time.monotonic() < deadline, r.text
        time.sleep(0.02)


def test_router_credentials_are_never_shown_or_stored(
    backend: str | None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    db = migrated_sqlite(tmp_path)
    _, key = add_key(db)
    with RouterServer([1], behaviour=Behaviour(latency=0.0, tokens=2)) as router:
        shown_url = f"http://***@127.0.0.1:{router.port}"
        shown = f"local:1@{shown_url}"
        (session,) = sessions_of(router, [1], 2)
        session["router_url"] = f"http://user:{SECRET}@127.0.0.1:{router.port}"
        settings = Settings(
            database_url=db,
            redis_url=backend,
            admin_token=ADMIN,
            gateway=gateway_section({"m": [session]}),
        )
        with TestClient(serve_app(settings, run_indexer=False), headers=bearer(key)) as c:
            r = c.post("/v1/completions", json={"model": "m", "prompt": "x"})
            assert r.status_code == 200, r.text
            record = _record(c, r.headers["x-request-id"])  # unauthenticated
            assert (record["router_url"], record["session_key"]) == (shown_url, shown)

            answers = [
                c.get(path, headers=ADMIN_H)
                for path in ("/admin/sessions", "/admin/capacity", "/admin/requests")
            ]
            assert all(a.status_code == 200 and SECRET not in a.text for a in answers)
            (sess,) = answers[0].json()["sessions"]
            assert (sess["key"], sess["router_url"], sess["requests_15m"]) == (shown, shown_url, 1)
            assert [s["key"] for s in answers[1].json()["sessions"]] == [shown]
            rows = c.get("/admin/requests", headers=ADMIN_H, params={"session": shown})
            assert [x["session_key"] for x in rows.json()["requests"]] == [shown]

            # the key as shown drains the session
            r = c.post("/admin/sessions/drain", json={"session": shown}, headers=ADMIN_H)
            assert r.status_code == 200 and r.json()["sessions"] == [shown], r.text
            assert c.get("/admin/capacity", headers=ADMIN_H).json()["sessions"][0]["drained"]
            c.post("/admin/sessions/undrain", json={"session": shown}, headers=ADMIN_H)

    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT * FROM gateway_request")).all()
    finally:
        engine.dispose()
    assert stored and SECRET not in repr(stored)
    assert SECRET not in caplog.text


def test_the_request_route_redacts_records_stored_in_full(store_url: str) -> None:
    """Records written before router URLs were stored redacted are shown redacted."""
    store = GatewayStore(store_url)
    try:
        url = f"http://user:{SECRET}@10.0.0.5:5010"
        store.write_batch(
            [
                {
                    "request_id": "gw-old",
                    "key_id": None,
                    "model": "m",
                    "endpoint": "completions",
                    "stream": False,
                    "chain": "local",
                    "session_id": 1,
                    "session_key": f"local:1@{url}",
                    "router_label": "r1",
                    "router_url": url,
                    "status": "ok",
                    "http_status": 200,
                    "error_code": None,
                    "latency_ms": 1.0,
                    "ttfb_ms": None,
                    "waited_ms": 0.1,
                    "attempts": 1,
                    "prompt_tokens": 3,
                    "completion_tokens": 5,
                    "task_id": 9,
                    "replica_id": "r",
                    "created_at": datetime.now(UTC),
                }
            ],
            {},
        )
    finally:
        store.dispose()
    with TestClient(serve_app(Settings(database_url=store_url), run_indexer=False)) as c:
        record = _record(c, "gw-old")
    assert record["router_url"] == "http://***@10.0.0.5:5010"
    assert record["session_key"] == "local:1@http://***@10.0.0.5:5010"


def test_router_url_credentials_go_as_basic_auth_never_in_the_host_header() -> None:
    """The upstream client against a real HTTP server that records what it receives: a
    router URL's credentials become Basic authorization (a router's own token takes their
    place), and the Host header names the host alone."""
    import asyncio
    import base64

    from gateway.http1 import Pool

    async def scenario() -> list[dict[str, str]]:
        seen: list[dict[str, str]] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[1:]
            fields = dict(line.split(": ", 1) for line in head if line)
            await reader.readexactly(int(fields["Content-Length"]))
            seen.append(fields)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = Pool(f"http://us%40er:{SECRET}@127.0.0.1:{port}", 2, 5.0)
        for headers in ({}, {"Authorization": "Bearer router-token"}):
            resp = await pool.post("/api/v1/completions/1", b"{}", headers, 5.0)
            assert (resp.status, await resp.read(None)) == (200, b"{}")
            await resp.aclose()
        pool.close()
        server.close()
        await server.wait_closed()
        return seen

    basic, bearer_auth = asyncio.run(scenario())
    pair = base64.b64encode(f"us@er:{SECRET}".encode()).decode()
    assert basic["Authorization"] == f"Basic {pair}"
    assert bearer_auth["Authorization"] == "Bearer router-token"
    for fields in (basic, bearer_auth):
        assert fields["Host"].startswith("127.0.0.1:") and SECRET not in fields["Host"]
