"""Operations routes: /health, /ready, /status, /metrics (Prometheus text)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from api import queries as q
from api.state import StateDep

router = APIRouter(tags=["ops"])


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    ready: Literal[True]
    chains: list[str] = Field(description="The chains checked")


class NotReadyOut(BaseModel):
    ready: Literal[False]
    reason: str
    chains: list[str] = Field(
        [], description="The chains lagging or with an unknown head (absent: database down)"
    )


class ChainStatusOut(BaseModel):
    chain: str
    chain_id: int
    cursor: int = Field(description="Last indexed block (-1: none yet)")
    head: int = Field(description="The chain's head as last read (-1: unknown)")
    lag_blocks: int | None = Field(description="null while the head is unknown")
    safe: int | None
    finalized: int | None
    events_indexed: int
    reorgs: int
    events_per_s: float | None
    rpc_requests: dict[str, int]
    rpc_errors: dict[str, int]
    indexer_message: str | None


class StatusOut(BaseModel):
    chains: list[ChainStatusOut]
    time: float = Field(description="Server time, unix seconds")


READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ReadyOut, "description": "Ready"},
    503: {
        "model": NotReadyOut,
        "description": "Not ready: the database is unreachable, or a chain's lag is above "
        "ready_max_lag_blocks or unknown (with Retry-After)",
    },
}


@router.get("/health", response_model=HealthOut, summary="The process is alive")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def _chains(state: Any) -> list[dict[str, Any]]:
    out = []
    with state.engine.connect() as conn:
        for c in state.chains.values():
            st = q.chain_state(conn, int(c.chain_id or 0)) or {}
            cursor, head = int(st.get("cursor_block", -1)), int(st.get("head_block", -1))
            prog = state.extra.get("progress", {}).get(c.name)
            rpc = state.rpcs.get(c.name)
            stats = rpc.stats() if rpc else None
            out.append(
                {
                    "chain": c.name,
                    "chain_id": int(c.chain_id or 0),
                    "cursor": cursor,
                    "head": head,
                    "lag_blocks": q.lag_blocks(head, cursor),
                    "safe": st.get("safe_block"),
                    "finalized": st.get("finalized_block"),
                    "events_indexed": st.get("events_indexed", 0),
                    "reorgs": st.get("reorgs", 0),
                    "events_per_s": round(prog.events_per_s, 1) if prog else None,
                    "rpc_requests": dict(stats.requests) if stats else {},
                    "rpc_errors": dict(stats.errors) if stats else {},
                    "indexer_message": state.extra.get("indexer_errors", {}).get(c.name),
                }
            )
    return out


@router.get(
    "/ready",
    responses=READY_RESPONSES,
    summary="Database reachable and every chain's lag under the bound",
)
def ready(state: StateDep) -> JSONResponse:
    bound = state.settings.ready_max_lag_blocks
    try:
        chains = _chains(state)
    except sa.exc.SQLAlchemyError as e:
        return JSONResponse(
            {"ready": False, "reason": f"database unreachable: {type(e).__name__}"},
            503,
            headers={"Retry-After": "5"},
        )
    unknown = [c["chain"] for c in chains if c["lag_blocks"] is None]
    lagging = [
        c["chain"] for c in chains if c["lag_blocks"] is not None and c["lag_blocks"] > bound
    ]
    if unknown or lagging:
        reasons = []
        if unknown:
            reasons.append("head unknown: the chain's RPC has not answered (see /status)")
        if lagging:
            reasons.append(f"lag above {bound} blocks")
        return JSONResponse(
            {"ready": False, "reason": "; ".join(reasons), "chains": unknown + lagging},
            503,
            headers={"Retry-After": "5"},
        )
    return JSONResponse({"ready": True, "chains": [c["chain"] for c in chains]})


@router.get(
    "/status", response_model=StatusOut, summary="Cursors, heads, lags, RPC errors, events/s"
)
def status(state: StateDep) -> dict[str, Any]:
    return {"chains": _chains(state), "time": time.time()}


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
async def metrics(state: StateDep) -> str:
    text = await asyncio.to_thread(_indexer_metrics, state)
    gw = state.extra.get("gateway")
    if gw is not None:  # the mounted gateway's own series (requests, capacity, Redis)
        text += await gw.metrics_text()
    return text


def _indexer_metrics(state: Any) -> str:
    lines = [
        "# HELP corlens_indexer_lag_blocks Blocks between the chain head and the cursor "
        "(no sample while the head is unknown).",
        "# TYPE corlens_indexer_lag_blocks gauge",
    ]
    chains = _chains(state)
    lines += [
        f'corlens_indexer_lag_blocks{{chain="{c["chain"]}"}} {c["lag_blocks"]}'
        for c in chains
        if c["lag_blocks"] is not None
    ]
    lines += [
        # A gauge: a reorg deletes the events of the blocks it drops (a counter never falls).
        "# HELP corlens_indexer_events Events stored (falls when a reorg rolls blocks back).",
        "# TYPE corlens_indexer_events gauge",
    ]
    lines += [
        f'corlens_indexer_events{{chain="{c["chain"]}"}} {c["events_indexed"]}' for c in chains
    ]
    lines += [
        "# HELP corlens_indexer_reorgs_total Reorgs rolled back.",
        "# TYPE corlens_indexer_reorgs_total counter",
    ]
    lines += [f'corlens_indexer_reorgs_total{{chain="{c["chain"]}"}} {c["reorgs"]}' for c in chains]
    lines += [
        "# HELP corlens_rpc_requests_total JSON-RPC requests by method.",
        "# TYPE corlens_rpc_requests_total counter",
    ]
    for c in chains:
        for m, n in sorted(c["rpc_requests"].items()):
            lines.append(
                f'corlens_rpc_requests_total{{chain="{c["chain"]}",method="{_esc(m)}"}} {n}'
            )
    lines += [
        "# HELP corlens_rpc_errors_total JSON-RPC errors by method.",
        "# TYPE corlens_rpc_errors_total counter",
    ]
    for c in chains:
        for m, n in sorted(c["rpc_errors"].items()):
            lines.append(f'corlens_rpc_errors_total{{chain="{c["chain"]}",method="{_esc(m)}"}} {n}')
    lines += [
        "# HELP corlens_api_request_seconds API request latency by route.",
        "# TYPE corlens_api_request_seconds summary",
    ]
    for route, samples in sorted(state.metrics.latency.items()):
        if not samples:
            continue
        s = sorted(samples)
        for qn in (0.5, 0.99):
            v = s[min(len(s) - 1, int(qn * len(s)))]
            lines.append(
                f'corlens_api_request_seconds{{route="{_esc(route)}",quantile="{qn}"}} {v:.6f}'
            )
        lines.append(
            f'corlens_api_request_seconds_count{{route="{_esc(route)}"}} '
            f"{state.metrics.counts.get(route, 0)}"
        )
    return "\n".join(lines) + "\n"
