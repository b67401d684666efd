"""Payout rows and the payout audit under /api/v1.

``GET /chains/{chain}/payouts`` lists SessionPayment rows (JSON pages, or every matching row as
streamed CSV); ``GET /chains/{chain}/audit/payouts`` runs :mod:`api.audit` over the indexed
rows and the chain. :func:`build_report` is shared with ``corlens audit payouts``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from api import audit
from api import queries as q
from api.audit_csv import CSV_HEADER, csv_text
from api.errors import ERRORS_422_404, bad_field
from api.links import Links
from api.pagination import DEFAULT_LIMIT, BadToken, decode_token, encode_token
from api.payouts_view import payment_out
from api.routes import Limit, Next
from api.schemas import Finality, Page, PaymentOut
from api.state import ChainDep, ConnDep, StateDep
from indexer.config import MAX_ID, Settings
from indexer.errors import ConfigError, IndexerError
from indexer.finality import finality_of
from indexer.rpc import RpcClient

router = APIRouter(prefix="/api/v1", responses=ERRORS_422_404, tags=["payouts"])

CSV_CHUNK = 1000  # rows per keyset query while streaming CSV: memory stays flat
AMOUNTS_TIMEOUT_S = 60.0  # rule 6 gives up (and says so) rather than hang the report
CSV_COLUMNS = list(PaymentOut.model_fields)
Kind = Literal["deposit", "network", "allocation", "withdrawal"]
# A transaction hash: all a page token's third part can be.
TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
BlockNo = Annotated[int | None, Query(ge=0, le=MAX_ID)]
Seconds = Annotated[int | None, Query(ge=0, le=MAX_ID, description="Block time, unix seconds")]
PAYMENT = q.PAYMENT
KEY = (PAYMENT.c.block_number, PAYMENT.c.log_index, PAYMENT.c.tx_hash)


class PayoutPage(Page):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "next": None,
                    "payouts": [
                        {
                            "kind": "allocation",
                            "tx_hash": "0x" + "ab" * 32,
                            "log_index": 3,
                            "session_id": 0,
                            "task_id": 7,
                            "node": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
                            "counterparty": None,
                            "amount": "2000000000000000000",
                            "block_number": 120,
                            "block_time": 1717000000,
                            "finality": "finalized",
                            "explorer_url": "https://sepolia.arbiscan.io/tx/0x" + "ab" * 32,
                        }
                    ],
                }
            ]
        }
    )
    payouts: list[PaymentOut]


class AuditRowOut(BaseModel):
    kind: Literal["deposit", "network", "allocation", "withdrawal", "task_ended"]
    tx_hash: str
    log_index: int
    block_number: int
    session_id: int | None
    task_id: int | None
    node: str | None
    amount: str | None = Field(
        description="Token base units; null for a task_ended row and an invalid_amount row"
    )
    finality: Finality
    explorer_url: str


class FindingOut(BaseModel):
    id: str = Field(description="Stable across reports of the same chain: diff reports by it")
    rule: str
    scope: str | None = Field(
        description="over_allocation: task|session; amount_mismatch: "
        "erc20|native (how the moved value was read)"
    )
    message: str
    session_id: int | None
    task_id: int | None
    node: str | None
    amounts: dict[str, str] = Field(description="The amounts compared, in token base units")
    task_url: str | None
    node_url: str | None
    rows: list[AuditRowOut]


class RuleOut(BaseModel):
    rule: str
    description: str
    status: Literal["ran", "skipped"]
    findings: int
    checked: int = Field(description="Rows (rule 6: transaction groups) the rule looked at")
    reason: str | None = Field(description="Why it was skipped, or what it could not check")


TX_URL = "https://sepolia.arbiscan.io/tx/0x" + "ab" * 32
EXAMPLE_FINDING: dict[str, Any] = {
    "id": "over_withdrawal-de9f866354b64bc7",
    "rule": "over_withdrawal",
    "scope": None,
    "message": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8 withdrew 5 with 3 pending",
    "session_id": None,
    "task_id": None,
    "node": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
    "amounts": {"withdrawn": "5", "pending": "3"},
    "task_url": None,
    "node_url": "https://sepolia.arbiscan.io/address/0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
    "rows": [
        {
            "kind": "withdrawal",
            "tx_hash": "0x" + "ab" * 32,
            "log_index": 1,
            "block_number": 120,
            "session_id": None,
            "task_id": None,
            "node": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
            "amount": "5",
            "finality": "finalized",
            "explorer_url": TX_URL,
        }
    ],
}


EXAMPLE_REPORT: dict[str, Any] = {
    "chain": "testnet0",
    "chain_id": 421614,
    "indexed_to_block": 180,
    "unpaid_after_blocks": 50,
    "clean": False,
    "notes": [],
    "summary": {r: int(r == "over_withdrawal") for r in audit.RULES},
    "rules": [
        {
            "rule": r,
            "description": d,
            "status": "ran",
            "findings": int(r == "over_withdrawal"),
            "checked": 4,
            "reason": None,
        }
        for r, d in audit.RULES.items()
    ],
    "findings": [EXAMPLE_FINDING],
}


class AuditReportOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_REPORT]})
    chain: str
    chain_id: int
    indexed_to_block: int = Field(description="The index's cursor: the report covers up to here")
    unpaid_after_blocks: int
    clean: bool = Field(description="No findings and every rule ran")
    notes: list[str] = Field(description="Rules skipped or partly run, and why")
    summary: dict[str, int] = Field(description="Findings per rule")
    rules: list[RuleOut]
    findings: list[FindingOut]


@dataclass(frozen=True)
class PayoutFilter:
    node: str | None = None
    session_id: int | None = None
    task_id: int | None = None
    kind: str | None = None
    from_block: int | None = None
    to_block: int | None = None
    since: int | None = None
    until: int | None = None


def payouts_select(
    chain_id: int, f: PayoutFilter, after: list[Any] | None, limit: int
) -> sa.Select[Any]:
    """Matching rows in chain order, strictly after the keyset ``after`` (stable under inserts)."""
    c = PAYMENT.c
    conds = [c.chain_id == chain_id]
    for col, val in (
        (c.node, f.node),
        (c.session_id, f.session_id),
        (c.task_id, f.task_id),
        (c.kind, f.kind),
    ):
        if val is not None:
            conds.append(col == val)
    for col, lo, hi in (
        (c.block_number, f.from_block, f.to_block),
        (c.block_time, f.since, f.until),
    ):
        conds += [col >= lo] if lo is not None else []
        conds += [col <= hi] if hi is not None else []
    if after is not None:
        conds.append(sa.tuple_(*KEY) > sa.tuple_(*(sa.literal(v) for v in after)))
    return sa.select(PAYMENT).where(*conds).order_by(*KEY).limit(limit)


def iter_payouts(engine: sa.Engine, chain_id: int, f: PayoutFilter) -> Iterator[dict[str, Any]]:
    """Every matching row, one keyset query (and connection) per chunk of CSV_CHUNK."""
    after: list[Any] | None = None
    while True:
        with engine.connect() as conn:
            rows = conn.execute(payouts_select(chain_id, f, after, CSV_CHUNK)).mappings().all()
        yield from (dict(r) for r in rows)
        if len(rows) < CSV_CHUNK:
            return
        after = [rows[-1]["block_number"], rows[-1]["log_index"], rows[-1]["tx_hash"]]


def _csv_lines(rows: Iterator[PaymentOut]) -> Iterator[str]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for n, p in enumerate(rows, 1):
        w.writerow(["" if v is None else v for v in p.model_dump().values()])
        if n % CSV_CHUNK == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def _after(token: str | None) -> list[Any] | None:
    if token is None:
        return None
    try:
        key = decode_token(token, 3)
    except BadToken:
        raise bad_field("next", "not a token this API issued") from None
    block, log_index, tx = key
    if not (
        isinstance(block, int)
        and isinstance(log_index, int)
        and isinstance(tx, str)
        and 0 <= block <= MAX_ID
        and 0 <= log_index <= MAX_ID
        and TX_HASH.fullmatch(tx) is not None
    ):
        raise bad_field("next", "not a token this API issued")
    return key


CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/csv": {
                "schema": {"type": "string"},
                "example": ",".join(CSV_COLUMNS)
                + "\nallocation,0xab...,3,0,7,0x7099...,,2000000000000000000,"
                "120,1717000000,finalized,https://sepolia.arbiscan.io/tx/0xab...\n",
            }
        },
        "description": "JSON page, or with format=csv every matching row (no pagination)",
    }
}


@router.get(
    "/chains/{chain}/payouts",
    response_model=PayoutPage,
    responses=CSV_RESPONSE,
    summary="Payment rows: deposits, network payments, allocations, withdrawals",
)
def payouts(
    state: StateDep,
    conn: ConnDep,
    chain: ChainDep,
    request: Request,
    node: Annotated[
        str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$", description="Allocated/withdrawing node")
    ] = None,
    session: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    task: Annotated[int | None, Query(ge=0, le=MAX_ID, description="Task id in a session")] = None,
    kind: Kind | None = None,
    from_block: BlockNo = None,
    to_block: BlockNo = None,
    since: Seconds = None,
    until: Seconds = None,
    format: Annotated[
        Literal["json", "csv"],
        Query(description="csv: every matching row streamed as CSV; limit and next do not apply"),
    ] = "json",
    limit: Limit = DEFAULT_LIMIT,
    next: Next = None,
) -> PayoutPage | StreamingResponse:
    """Payment rows in chain order (block, log index, tx hash) with finality and explorer link."""
    if from_block is not None and to_block is not None and from_block > to_block:
        raise bad_field("from_block", "must not exceed to_block")
    if since is not None and until is not None and since > until:
        raise bad_field("since", "must not exceed until")
    f = PayoutFilter(
        node.lower() if node else None, session, task, kind, from_block, to_block, since, until
    )
    cid, links = int(chain.chain_id or 0), state.links(chain, request)
    st = q.chain_state(conn, cid)
    if format == "csv":
        rows = (payment_out(r, st, links) for r in iter_payouts(state.engine, cid, f))
        return StreamingResponse(
            _csv_lines(rows),
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="{chain.name}-payouts.csv"'},
        )
    got = conn.execute(payouts_select(cid, f, _after(next), limit + 1)).mappings().all()
    items = [payment_out(dict(r), st, links) for r in got[:limit]]
    last = items[-1] if items else None
    token = (
        encode_token([last.block_number, last.log_index, last.tx_hash])
        if last and len(got) > limit
        else None
    )
    return PayoutPage(payouts=items, next=token)


def configured_unpaid_after(settings: Settings) -> int:
    """``audit.unpaid_after_blocks`` from the config when present, else the default."""
    section = getattr(settings, "audit", None) or (settings.model_extra or {}).get("audit")
    raw = (
        section.get("unpaid_after_blocks")
        if isinstance(section, dict)
        else getattr(section, "unpaid_after_blocks", None)
    )
    if raw is None:
        return audit.DEFAULT_UNPAID_AFTER_BLOCKS
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise ConfigError("audit.unpaid_after_blocks", f"must be an integer >= 0, got {raw!r}")
    return raw


@dataclass(frozen=True)
class AuditInput:
    pays: list[audit.Pay]
    tasks: dict[audit.TaskKey, audit.TaskFacts]
    cursor: int
    invalid: list[tuple[audit.Pay, str]]  # rows whose stored amount is unreadable, raw amount


def load_audit_input(conn: sa.Connection, chain_id: int) -> AuditInput:
    """Payments, tasks that ended or were allocated to, and the indexed cursor of one chain;
    a row whose amount is not a uint256 goes to ``invalid`` (amount 0) instead of ``pays``."""
    p, ev, t, s, m = PAYMENT, q.EVENT, q.TASK, q.STEP, q.MINER
    pays: list[audit.Pay] = []
    invalid: list[tuple[audit.Pay, str]] = []
    for r in conn.execute(
            sa.select(p, ev.c.address)
            .select_from(
                p.outerjoin(
                    ev,
                    (ev.c.chain_id == p.c.chain_id)
                    & (ev.c.tx_hash == p.c.tx_hash)
                    & (ev.c.log_index == p.c.log_index),
                )
            )
            .where(p.c.chain_id == chain_id)
    ):
        amount = audit.parse_amount(r.amount)
        pay = audit.Pay(
            r.kind,
            r.tx_hash,
            r.log_index,
            r.block_number,
            amount or 0,
            r.session_id,
            r.task_id,
            r.node,
            r.counterparty,
            r.address,
        )
        if amount is None:
            invalid.append((pay, str(r.amount)))
        else:
            pays.append(pay)
    ended = {
        (r.session_id, r.task_id): r
        for r in conn.execute(
            sa.select(s, t.c.force_ended)
            .join(
                t,
                (t.c.chain_id == s.c.chain_id)
                & (t.c.session_id == s.c.session_id)
                & (t.c.task_id == s.c.task_id),
            )
            .where(s.c.chain_id == chain_id, s.c.step == "ended")
        )
    }
    keys = set(ended) | {
        (int(x.session_id), int(x.task_id))
        for x in pays
        if x.kind == "allocation" and x.session_id is not None and x.task_id is not None
    }
    miners: dict[audit.TaskKey, dict[str, bool]] = {k: {} for k in keys}
    for r in conn.execute(
        sa.select(m.c.session_id, m.c.task_id, m.c.miner, m.c.commit_tx)
        .where(m.c.chain_id == chain_id)
        .execution_options(yield_per=CSV_CHUNK)
    ):
        if (r.session_id, r.task_id) in miners:
            miners[(r.session_id, r.task_id)][r.miner] = r.commit_tx is not None
    tasks: dict[audit.TaskKey, audit.TaskFacts] = {}
    for (sid, tid), ms in miners.items():
        e = ended.get((sid, tid))
        row = (
            audit.Pay("task_ended", e.tx_hash, e.log_index, e.block_number, 0, sid, tid)
            if e
            else None
        )
        tasks[(sid, tid)] = audit.TaskFacts(sid, tid, bool(e and e.force_ended), row, ms)
    st = q.chain_state(conn, chain_id)
    return AuditInput(pays, tasks, int(st["cursor_block"]) if st else -1, invalid)


async def build_report(
    conn: sa.Connection,
    chain_id: int,
    rpc: RpcClient | None,
    *,
    unpaid_after_blocks: int,
    amounts: bool = True,
) -> tuple[audit.Report, int]:
    """The audit of one chain and the cursor it covers. The database answers for rules 1-5 (read
    in a worker thread: the event loop keeps serving); rule 6 reads the chain, and reports
    ``skipped`` with the reason when it cannot."""
    got = await asyncio.to_thread(load_audit_input, conn, chain_id)
    pays = got.pays
    moved: dict[audit.GroupKey, audit.Moved | None] | str
    if not amounts:
        moved = "not requested (amounts=false)"
    elif rpc is None:
        moved = "no RPC client for this chain"
    else:
        try:
            moved = await asyncio.wait_for(audit.read_moved(rpc, pays), AMOUNTS_TIMEOUT_S)
        except IndexerError as e:
            moved = f"RPC unavailable: {e}"
        except TimeoutError:
            moved = f"RPC did not answer within {AMOUNTS_TIMEOUT_S:.0f}s"
        except (KeyError, ValueError, TypeError) as e:  # a receipt or balance we cannot parse
            moved = f"malformed RPC answer: {type(e).__name__}: {e}"
    return audit.run_rules(
        chain_id,
        pays,
        got.tasks,
        cursor_block=got.cursor,
        unpaid_after_blocks=unpaid_after_blocks,
        moved=moved,
        invalid=got.invalid,
    ), got.cursor


def report_out(
    report: audit.Report,
    name: str,
    chain_id: int,
    cursor: int,
    unpaid: int,
    st: dict[str, Any] | None,
    links: Links,
) -> AuditReportOut:
    """The response schema of a report: rows with finality and explorer links."""
    safe, final = (int(st["safe_block"]), int(st["finalized_block"])) if st else (-1, -1)

    def row(p: audit.Pay, rule: str) -> AuditRowOut:
        return AuditRowOut(
            kind=p.kind,
            tx_hash=p.tx_hash,
            log_index=p.log_index,
            block_number=p.block_number,
            session_id=p.session_id,
            task_id=p.task_id,
            node=p.node,
            amount=None if p.kind == "task_ended" or rule == "invalid_amount" else str(p.amount),
            finality=finality_of(p.block_number, safe, final),
            explorer_url=links.tx(p.tx_hash),
        )

    findings = [
        FindingOut(
            id=f.id,
            rule=f.rule,
            scope=f.scope,
            message=f.message,
            session_id=f.session_id,
            task_id=f.task_id,
            node=f.node,
            amounts={k: str(v) for k, v in f.amounts.items()},
            task_url=links.task(f.session_id, f.task_id)
            if f.task_id is not None and f.session_id is not None
            else None,
            node_url=links.address(f.node) if f.node else None,
            rows=[row(p, f.rule) for p in f.rows],
        )
        for f in report.findings
    ]
    rules = [
        RuleOut(
            rule=r.rule,
            description=audit.RULES[r.rule],
            status=r.status,
            findings=r.findings,
            checked=r.checked,
            reason=r.reason,
        )
        for r in report.rules
    ]
    notes = [
        f"{r.rule} {'skipped' if r.status == 'skipped' else 'partly run'}: {r.reason}"
        for r in report.rules
        if r.reason
    ]
    return AuditReportOut(
        chain=name,
        chain_id=chain_id,
        indexed_to_block=cursor,
        unpaid_after_blocks=unpaid,
        clean=report.clean,
        notes=notes,
        summary=report.summary,
        rules=rules,
        findings=findings,
    )


AUDIT_CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/csv": {
                "schema": {"type": "string"},
                "example": ",".join(CSV_HEADER) + "\n",
            }
        },
        "description": "The report as JSON, or with format=csv its findings (one line per "
        "finding and row)",
    }
}


@router.get(
    "/chains/{chain}/audit/payouts",
    response_model=AuditReportOut,
    responses=AUDIT_CSV_RESPONSE,
    summary="The auditor's report: payout rules over the index and the chain",
)
async def audit_payouts(
    state: StateDep,
    conn: ConnDep,
    chain: ChainDep,
    request: Request,
    unpaid_after_blocks: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_ID,
            description="Grace period for ended_without_allocation (default: "
            f"config audit.unpaid_after_blocks, else {audit.DEFAULT_UNPAID_AFTER_BLOCKS})",
        ),
    ] = None,
    amounts: Annotated[bool, Query(description="Run amount_mismatch (reads the chain)")] = True,
    format: Annotated[
        Literal["json", "csv"],
        Query(description="csv: the findings, one line per finding and row (as the CLI's --csv)"),
    ] = "json",
) -> AuditReportOut | Response:
    """Findings (each naming its rule, rows and explorer links), a summary per rule and the
    rules that ran. When the RPC is unreachable, amount_mismatch is reported as ``skipped``
    with the reason and the other rules still run."""
    try:
        unpaid = (
            configured_unpaid_after(state.settings)
            if unpaid_after_blocks is None
            else unpaid_after_blocks
        )
    except ConfigError as e:
        raise bad_field("unpaid_after_blocks", f"no value given and config {e}") from None
    cid = int(chain.chain_id or 0)
    report, cursor = await build_report(
        conn, cid, state.rpcs.get(chain.name), unpaid_after_blocks=unpaid, amounts=amounts
    )
    out = report_out(
        report,
        chain.name,
        cid,
        cursor,
        unpaid,
        q.chain_state(conn, cid),
        state.links(chain, request),
    )
    if format == "csv":
        return Response(
            csv_text(out),
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="{chain.name}-audit.csv"'},
        )
    return out
