"""Node, transaction and gateway-request routes under /api/v1."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Request

from api import queries as q
from api.errors import ERRORS_422_404, not_found
from api.routes import Address, _summary
from api.schemas import (
    Earnings,
    GatewayRecordOut,
    LoggedEvent,
    NodeOut,
    Participation,
    ReceiptOut,
    RequestOut,
    TaskSummary,
    TxOut,
)
from api.state import ChainDep, ConnDep, StateDep
from gateway.capacity.base import shown_key, shown_url
from gateway.store import REQUESTS as GATEWAY_REQUEST
from indexer.errors import IndexerError
from indexer.finality import finality_of

router = APIRouter(prefix="/api/v1", responses=ERRORS_422_404)

TxHash = Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$", description="32-byte tx hash")]
RequestId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="The gateway's request id (x-request-id)",
    ),
]


@router.get(
    "/chains/{chain}/nodes/{address}",
    response_model=NodeOut,
    summary="A node: pool state, sessions, task participation and earnings",
)
def node(
    state: StateDep, conn: ConnDep, chain: ChainDep, request: Request, address: Address
) -> NodeOut:
    addr = address.lower()
    got = q.node(conn, int(chain.chain_id or 0), addr)
    if got is None:
        raise not_found("node", chain=chain.name, address=addr)
    n = got["node"] or {}
    return NodeOut(
        address=addr,
        node_id=n.get("node_id"),
        pool_state=n.get("pool_state"),
        in_pool=n.get("in_pool"),
        kind=n.get("kind"),
        last_execution=n.get("last_execution"),
        sessions=got["sessions"],
        participation=Participation(
            assigned=got["assigned"],
            acks=got["acks"],
            precommits=got["precommits"],
            commits=got["commits"],
            misses=got["misses"],
        ),
        earnings=Earnings(
            allocated=str(got["allocated"]),
            withdrawn=str(got["withdrawn"]),
            pending=str(got["pending"]),
            unreadable=got["unreadable"],
        ),
        explorer_url=state.links(chain, request).address(addr),
    )


@router.get(
    "/chains/{chain}/tx/{tx_hash}",
    response_model=TxOut,
    summary="corlens's own transaction view: stored events and the live receipt",
)
async def tx(
    state: StateDep, conn: ConnDep, chain: ChainDep, request: Request, tx_hash: TxHash
) -> TxOut:
    h = tx_hash.lower()
    cid = int(chain.chain_id or 0)
    events = q.tx_events(conn, cid, h)
    receipt: dict[str, Any] | None = None
    err: str | None = None
    rpc = state.rpcs.get(chain.name)
    if rpc is not None:
        try:
            receipt = await rpc.get_receipt(h)
        except IndexerError as e:
            err = str(e)
    if not events and receipt is None:
        raise not_found(
            "transaction", chain=chain.name, tx_hash=h, **({"rpc_error": err} if err else {})
        )
    st = q.chain_state(conn, cid)
    block = (
        events[0]["block_number"]
        if events
        else (int(receipt["blockNumber"], 16) if receipt else None)
    )
    return TxOut(
        chain=chain.name,
        tx_hash=h,
        block_number=block,
        block_hash=events[0]["block_hash"] if events else (receipt or {}).get("blockHash"),
        finality=finality_of(block, int(st["safe_block"]), int(st["finalized_block"]))
        if st and block is not None
        else None,
        events=[
            LoggedEvent(
                log_index=e["log_index"],
                contract=e["contract"],
                event=e["event"],
                address=e["address"],
                args=e["args"],
            )
            for e in events
        ],
        receipt=ReceiptOut(
            status=int(receipt["status"], 16) if receipt.get("status") else None,
            sender=receipt.get("from"),
            to=receipt.get("to"),
            gas_used=int(receipt["gasUsed"], 16) if receipt.get("gasUsed") else None,
            logs=len(receipt.get("logs", [])),
        )
        if receipt
        else None,
        receipt_error=err,
        explorer_url=state.links(chain, request).tx(h),
    )


@router.get(
    "/requests/{request_id}",
    response_model=RequestOut,
    summary="A gateway request joined to its on-chain task (by clientReference)",
)
def gateway_request(
    state: StateDep, conn: ConnDep, request: Request, request_id: RequestId
) -> RequestOut:
    record: GatewayRecordOut | None = None
    if q.has_table(conn, "gateway_request"):
        t = GATEWAY_REQUEST
        r = conn.execute(sa.select(t).where(t.c.request_id == request_id)).mappings().first()
        if r is not None:
            created: datetime = r["created_at"]
            created = created if created.tzinfo else created.replace(tzinfo=UTC)  # stored UTC
            record = GatewayRecordOut.model_validate(
                {
                    **r,
                    # router URLs may carry credentials (older records hold them in full)
                    "router_url": shown_url(r["router_url"]) if r["router_url"] else None,
                    "session_key": shown_key(r["session_key"]) if r["session_key"] else None,
                    "created_at": created.timestamp(),
                }
            )
    task = q.task_by_reference(conn, request_id)
    if record is None and task is None:
        raise not_found("request", request_id=request_id)
    chain_name = None
    summary: TaskSummary | None = None
    if task is not None:
        chain = next((c for c in state.chains.values() if c.chain_id == task["chain_id"]), None)
        if chain is not None:
            chain_name = chain.name
            summary = _summary(task, state.links(chain, request))
    return RequestOut(request_id=request_id, gateway=record, chain=chain_name, task=summary)
