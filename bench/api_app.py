"""The server bench/api.py measures: ``create_app(settings)`` plus a constant-JSON route.

    python -m bench.api_app --db postgresql+psycopg://postgres@127.0.0.1:5432/DB --port PORT

One uvicorn worker, ``--log-level warning`` (no access log). ``GET /bench/constant`` is the
floor: the same server, middleware and router as the task lifecycle route, but no dependencies,
no database and a body encoded once at import (a TaskDetail-shaped document of about the same
size as a real one), so what it costs is the stack's fixed cost per request.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from api import lifecycle
from api.app import create_app
from indexer.config import Settings, load_settings

CHAIN = "bench"
CLOSED_RPC = "http://127.0.0.1:9"  # the discard port: nothing listens; the route never calls RPC


def _h(i: int) -> str:
    return "0x" + format(i * 0x9E3779B97F4A7C15, "064x")[-64:]


def _constant() -> dict[str, Any]:
    api = f"http://127.0.0.1:8000/api/v1/chains/{CHAIN}"
    miner = "0x" + _h(7)[-40:]
    steps = [
        {
            "step": s,
            "event": e,
            "tx_hash": _h(i),
            "block_number": 123_456 + i,
            "block_time": 1_750_246_912 + 2 * i,
            "log_index": 83 + i,
            "actor": miner if s in ("acked", "paid") else None,
            "actor_role": "router",
            "finality": "finalized",
            "explorer_url": f"{api}/tx/{_h(i)}",
        }
        for i, (s, e) in enumerate(
            [
                ("submitted", "TaskSubmitted"),
                ("queued", "TaskQueued"),
                ("assigned", "TaskAssigned"),
                ("acked", "TaskAcked"),
                ("precommitted", "TaskPrecommitEnded"),
                ("committed", "TaskCommitEnded"),
                ("ended", "TaskEnded"),
                ("paid", "NodePaymentAllocated"),
            ]
        )
    ]
    action = {
        "tx_hash": _h(3),
        "block_number": 123_459,
        "log_index": 86,
        "finality": "finalized",
        "explorer_url": f"{api}/tx/{_h(3)}",
    }
    return {
        "chain": CHAIN,
        "session_id": 417,
        "task_id": 123,
        "global_id": 123_417,
        "client_reference": "req-5f0c1f4e9a7b4c2d8e6f1a3b5c7d9e0f",
        "task_data": '{"prompt":"Summarise document 0123417 in three sentences.","max_tokens":256}',
        "status": "paid",
        "force_ended": False,
        "steps": steps,
        "miners": [
            {
                "address": miner,
                "explorer_url": f"{api}/nodes/{miner}",
                "ack": action,
                "precommit": action,
                "commit": action,
            }
        ],
        "payments": [
            {
                "kind": "allocation",
                "tx_hash": _h(8),
                "log_index": 91,
                "session_id": 417,
                "task_id": 123,
                "node": miner,
                "counterparty": None,
                "amount": "112300000000000000",
                "block_number": 123_464,
                "block_time": 1_750_246_928,
                "finality": "finalized",
                "explorer_url": f"{api}/tx/{_h(8)}",
            }
        ],
        "dashboard_url": None,
        "verify_url": f"{api}/sessions/417/tasks/123/verify",
    }


CONSTANT = json.dumps(_constant(), separators=(",", ":")).encode()
router = APIRouter()


@router.get("/bench/constant", include_in_schema=False)
async def constant() -> Response:
    return Response(CONSTANT, media_type="application/json")


# A what-if for the profile, not a target: the route's own statement and document, but read
# synchronously through SQLAlchemy in the threadpool (the route's path on SQLite) instead of
# on the asyncpg pool it uses on PostgreSQL.
@router.get("/bench/threadpool/{session_id}/{task_id}", include_in_schema=False)
async def threadpool(request: Request, session_id: int, task_id: int) -> Response:
    state = request.app.state.corlens
    chain = state.chains[CHAIN]
    key = (int(chain.chain_id or 0), session_id, task_id)

    def read() -> lifecycle.TaskRows | None:
        with state.engine.connect() as conn:
            return lifecycle.fetch(conn, key)

    rows = await run_in_threadpool(read)
    assert rows is not None
    doc = lifecycle.document(chain, state.links(chain, request), session_id, task_id, rows)
    return Response(lifecycle.encode(doc), media_type="application/json")


def settings_for(database_url: str) -> Settings:
    return load_settings(
        None,
        env={},
        overrides={
            "database_url": database_url,
            "chains": [{"name": CHAIN, "preset": "local", "rpc_urls": [CLOSED_RPC]}],
        },
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True, help="the database URL")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    app = create_app(settings_for(a.db), extra_routers=[router])
    uvicorn.run(app, host="127.0.0.1", port=a.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
