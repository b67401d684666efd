"""The verification route and its edges: load a task's stored rows (:mod:`api.verify_load`),
verify them against the chain (:mod:`api.verify`, :mod:`api.verify_chain`), and report them in
the response schema with explorer links.

``GET /api/v1/chains/{chain}/sessions/{session_id}/tasks/{task_id}/verify``; the CLI's
``corlens verify task`` runs the same :func:`verify_task`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from api.errors import ERRORS_422_404, ApiError, ErrorResponse, not_found
from api.links import Links
from api.routes import SessionId, TaskId
from api.schemas import Finality
from api.state import ChainDep, ConnDep, StateDep
from api.verify import (
    Difference,
    Verdict,
    Verification,
    VerifyCache,
    least_final,
    overall,
    verify_steps,
)
from api.verify_chain import TASK_CONTRACTS, Span, decoders, gap_check, missing, task_events
from api.verify_load import NotIndexed, load_task, order
from indexer.config import ChainConfig
from indexer.errors import RpcError, RpcUnavailable
from indexer.rpc import RpcClient
from indexer.runner import config_dir

# The RPC client has already retried with backoff; a few seconds lets a node restart or a
# provider's rate limit clear before the client asks again.
RETRY_AFTER_S = 5


class StepVerification(BaseModel):
    step: str = Field(
        description="Lifecycle step (submitted ... paid), a miner's action (ack, precommit, "
        "commit; assigned for a miner the store lacks), or a payment's kind (allocation, ...)"
    )
    kind: Literal["step", "miner_action", "payment"]
    event: str = Field(description="The event the step is recorded from")
    actor: str | None
    tx_hash: str
    explorer_url: str
    block_number: int = Field(description="As stored")
    block_time: int | None = Field(description="Unix seconds (the chain's header when it has it)")
    log_index: int = Field(description="As stored")
    verdict: Verdict
    finality: Finality | None = Field(
        description="Of the block the chain holds the transaction in; null when reorged"
    )
    reason: str
    differences: list[Difference] = Field(
        description="For mismatch (and a reorged block hash): field, stored value, chain value"
    )
    cached: bool = Field(description="A finalized result served from the cache")


_TX = "0x569b7443673b94ae8e8611669f48103ca9919064b3b212184b00434e6b7aca7b"
EXAMPLE: dict[str, Any] = {
    "chain": "testnet0",
    "chain_id": 421614,
    "session_id": 3,
    "task_id": 7,
    "verdict": "mismatch",
    "finality": "safe",
    "head_block": 1200,
    "safe_block": 1180,
    "finalized_block": 1100,
    "checked_at": 1764327600,
    "task_url": "http://127.0.0.1:8000/api/v1/chains/testnet0/sessions/3/tasks/7",
    "steps": [
        {
            "step": "submitted",
            "kind": "step",
            "event": "TaskSubmitted",
            "actor": None,
            "tx_hash": _TX,
            "explorer_url": f"https://sepolia.arbiscan.io/tx/{_TX}",
            "block_number": 1150,
            "block_time": 1764327000,
            "log_index": 0,
            "verdict": "mismatch",
            "finality": "safe",
            "reason": "stored values differ from the chain: data",
            "differences": [{"field": "data", "stored": "0x00ff", "chain": "0x0001"}],
            "cached": False,
        }
    ],
}


class TaskVerification(BaseModel):
    """Each step checked against the chain; ``verdict`` is the worst of the steps'
    (reorged > mismatch > pending > verified) and ``finality`` the least final."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})
    chain: str
    chain_id: int
    session_id: int
    task_id: int
    verdict: Verdict
    finality: Finality | None
    head_block: int = Field(description="The chain's head, read live")
    safe_block: int = Field(description="The chain's `safe` block, read live")
    finalized_block: int = Field(description="The chain's `finalized` block, read live")
    checked_at: int = Field(description="Unix seconds")
    task_url: str
    steps: list[StepVerification] = Field(
        description="Steps, miner actions and payments in chain order, with the rows the store "
        "lacks (field `row`)"
    )


def report(
    chain: ChainConfig, links: Links, session_id: int, task_id: int, v: Verification
) -> TaskVerification:
    """The response for :func:`~api.verify.verify_steps`'s result."""
    steps = [
        StepVerification(
            step=s.step,
            kind="payment"
            if s.kind == "payment"
            else "miner_action"
            if s.kind == "miner_action"
            else "step",  # fmt: skip
            event=s.event,
            actor=s.actor,
            tx_hash=s.tx_hash,
            explorer_url=links.tx(s.tx_hash),
            block_number=s.block_number,
            log_index=s.log_index,
            block_time=c.block_time if c.block_time is not None else s.block_time,
            verdict=c.verdict,
            finality=c.finality,
            reason=c.reason,
            differences=list(c.differences),
            cached=cached,
        )
        for s, c, cached in v.results
    ]
    return TaskVerification(
        chain=chain.name,
        chain_id=int(chain.chain_id or 0),
        session_id=session_id,
        task_id=task_id,
        verdict=overall(x.verdict for x in steps),
        finality=least_final(x.finality for x in steps),
        head_block=v.tags.head,
        safe_block=v.tags.safe,
        finalized_block=v.tags.finalized,
        checked_at=int(time.time()),
        task_url=links.task(session_id, task_id),
        steps=steps,
    )


async def verify_task(
    conn: sa.Connection,
    rpc: RpcClient,
    chain: ChainConfig,
    links: Links,
    session_id: int,
    task_id: int,
    cache: VerifyCache | None = None,
    config_dir: Path | None = None,
) -> TaskVerification:
    """Load, verify against the chain, report. Raises :class:`NotIndexed`, and
    :class:`~indexer.errors.RpcUnavailable` / :class:`~indexer.errors.RpcError` from the RPC.

    Checked: every stored step, miner action and payment row of the task against its receipt,
    log, canonical block and block time, its actor and (payments) node and amount; and that
    the chain holds no event of the task over its stored block span ``[first_block,
    updated_block]`` (one ``eth_getLogs`` batch) whose row the store lacks (a ``mismatch``
    naming field ``row``). Not checked: events outside that span (the task row's own blocks are
    trusted), the task row's other columns and JSON copies, network tasks and sessions.
    """
    cid = int(chain.chain_id or 0)
    st = load_task(conn, cid, session_id, task_id, chain.resolve_actors)
    dec = decoders(chain, config_dir)
    configured = {n: c.address for n, c in chain.contracts.items() if c.address}
    span = Span(
        st.first_block,
        st.last_block,
        {n: a for n, a in {**st.addresses, **configured}.items() if n in TASK_CONTRACTS},
    )
    v, events = await asyncio.gather(
        verify_steps(rpc, chain, st.steps, cache, dec),
        task_events(rpc, chain, dec, span, (session_id, task_id)),
    )
    gaps = missing(cid, (session_id, task_id), events, st.steps, st.miners)
    results = v.results + [(g, gap_check(g, v.tags), False) for g in gaps]
    results.sort(key=lambda r: order(r[0]))
    return report(chain, links, session_id, task_id, Verification(v.tags, results))


router = APIRouter(prefix="/api/v1")

_URL = "https://arb-sepolia.example/***"
_RPC_DOWN = {
    "error": {
        "code": "rpc_unavailable",
        "message": f"testnet0: RPC unreachable while verifying: no RPC URL answered after "
        f"retries: {_URL}; last error: batch of 23 at {_URL}: connection failed. ...",
        "details": {
            "chain": "testnet0",
            "session_id": 3,
            "task_id": 7,
            "failed": f"batch of 23 at {_URL}: connection failed",
            "urls": [_URL],
            "retry_after": RETRY_AFTER_S,
        },
    }
}


@router.get(
    "/chains/{chain}/sessions/{session_id}/tasks/{task_id}/verify",
    response_model=TaskVerification,
    summary="Verify a task's lifecycle against the chain, not the database",
    description=(
        "For each step, miner action and payment of the task: fetch the receipt and the block "
        "by number, check the log is at its log index with the same address, topics and data, "
        "that its block hash is canonical, the block time, the actor (the tx's sender, or the "
        "log's miner/node) and a payment's node and amount; and look for events of the task "
        "over its block span that have no stored row (field `row`). A stored tx hash that is "
        "no hash is a `mismatch` on field `tx_hash`. `verified` (final), `pending` (matches, "
        "not final), `mismatch` (what differs) or `reorged`. Finalized results are cached."
    ),
    responses={
        **ERRORS_422_404,
        502: {"model": ErrorResponse, "description": "The chain's RPC answered with an error"},
        503: {
            "model": ErrorResponse,
            "description": "The chain's RPC is unreachable; retry after `Retry-After` seconds",
            "headers": {"Retry-After": {"description": "Seconds", "schema": {"type": "integer"}}},
            "content": {"application/json": {"example": _RPC_DOWN}},
        },
    },
)
async def verify(
    state: StateDep,
    conn: ConnDep,
    chain: ChainDep,
    request: Request,
    session_id: SessionId,
    task_id: TaskId,
) -> TaskVerification:
    ids = {"chain": chain.name, "session_id": session_id, "task_id": task_id}
    rpc = state.rpcs.get(chain.name)
    cache: VerifyCache = state.extra.setdefault("verify_cache", VerifyCache())
    try:
        if rpc is None:
            raise RpcUnavailable(chain.rpc_urls, "no RPC client (the app has not started)")
        return await verify_task(
            conn,
            rpc,
            chain,
            state.links(chain, request),
            session_id,
            task_id,
            cache,
            config_dir(state.settings),
        )
    except NotIndexed as e:
        raise not_found(e.what, **ids) from None
    except RpcUnavailable as e:
        raise ApiError(
            503,
            "rpc_unavailable",
            f"{chain.name}: RPC unreachable while verifying: {e}",
            {**ids, "failed": e.last_error, "urls": e.urls, "retry_after": RETRY_AFTER_S},
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    except RpcError as e:
        raise ApiError(
            502, "rpc_error", f"{chain.name}: {e}", {**ids, "method": e.method, "rpc_code": e.code}
        ) from None
