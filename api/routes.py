"""Verification API routes under /api/v1: chains, sessions, tasks, network tasks, nodes, tx.

Thin: each route validates input, calls one query function and returns a response schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import lifecycle
from api import queries as q
from api.errors import ERRORS_422_404, bad_field, not_found
from api.lean_route import digits, lean_route, text
from api.lifecycle import TaskRows
from api.links import Links, explorer_kind_used
from api.pagination import DEFAULT_LIMIT, MAX_LIMIT, BadToken, decode_token, encode_token
from api.schemas import (
    ChainOut,
    ChainsOut,
    NetworkTaskDetail,
    NetworkTaskOut,
    NetworkTaskPage,
    RoundStepOut,
    RouterOut,
    SessionDetail,
    SessionOut,
    SessionPage,
    TaskDetail,
    TaskPage,
    TaskSummary,
    session_state_name,
)
from api.state import CHAIN_NAME_MAX, AppState, ChainDep, ChainName, ConnDep, StateDep
from indexer.config import MAX_ID
from indexer.finality import finality_of
from indexer.project import TASK_STATUSES

router = APIRouter(prefix="/api/v1", responses=ERRORS_422_404)

SessionId = Annotated[int, Path(ge=0, le=MAX_ID, description="SessionV2 session id")]
TaskId = Annotated[int, Path(ge=0, le=MAX_ID, description="Task id within the session")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, at most {MAX_LIMIT}")]
Next = Annotated[str | None, Query(max_length=512, description="Token from the previous page")]
Address = Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{40}$", description="20-byte hex address")]
TaskStatus = Literal[
    "submitted", "queued", "assigned", "acked", "precommitted", "committed", "ended", "paid"
]
assert set(TaskStatus.__args__) == set(TASK_STATUSES)  # type: ignore[attr-defined]


def after_key(token: str | None) -> int | None:
    if token is None:
        return None
    try:
        (key,) = decode_token(token, 1)
    except BadToken:
        raise bad_field("next", "not a token this API issued") from None
    if not isinstance(key, int) or isinstance(key, bool) or not -1 <= key <= MAX_ID:
        raise bad_field("next", "not a token this API issued")
    return key


def fin(state: dict[str, Any] | None, block: int) -> Any:
    if state is None:
        return "latest"
    return finality_of(block, int(state["safe_block"]), int(state["finalized_block"]))


@router.get("/chains", response_model=ChainsOut, summary="Indexed chains and their lag")
def chains(state: StateDep, conn: ConnDep) -> ChainsOut:
    import time

    out = []
    for c in state.chains.values():
        st = q.chain_state(conn, int(c.chain_id or 0)) or {}
        cursor, head = int(st.get("cursor_block", -1)), int(st.get("head_block", -1))
        t = q.block_time(conn, int(c.chain_id or 0), cursor) if cursor >= 0 else None
        out.append(
            ChainOut(
                name=c.name,
                chain_id=int(c.chain_id or 0),
                parent_chain_id=c.parent_chain_id,
                head_block=head,
                cursor_block=cursor,
                lag_blocks=q.lag_blocks(head, cursor),
                lag_seconds=max(0.0, time.time() - t) if t else None,
                safe_block=int(st.get("safe_block", -1)),
                finalized_block=int(st.get("finalized_block", -1)),
                events_indexed=int(st.get("events_indexed", 0)),
                malformed_logs=int(st.get("malformed_logs", 0)),
                unknown_logs=int(st.get("unknown_logs", 0)),
                reorgs=int(st.get("reorgs", 0)),
                explorer_url=c.explorer_url,
                explorer_kind=explorer_kind_used(c),
                dashboard_url=c.dashboard_url,
            )
        )
    return ChainsOut(chains=out)


def _session_out(r: dict[str, Any], links: Links) -> dict[str, Any]:
    sid = int(r["session_id"])
    return {
        "session_id": sid,
        "sid": r["sid"],
        "name": r["name"],
        "owner": r["owner"],
        "model_identifier": r["model_identifier"],
        "state": r["state"],
        "state_name": session_state_name(r["state"]),
        "active": r["active"],
        "redundant": r["redundant"],
        "min_nodes": r["min_nodes"],
        "max_nodes": r["max_nodes"],
        "created_block": r["created_block"],
        "created_tx": r["created_tx"],
        "created_tx_url": links.tx(r["created_tx"]) if r["created_tx"] else None,
        "deactivated_tx": r["deactivated_tx"],
        "deactivated_tx_url": links.tx(r["deactivated_tx"]) if r["deactivated_tx"] else None,
        "dashboard_url": links.session_dashboard(sid),
        "url": f"{links.api}/sessions/{sid}",
    }


@router.get("/chains/{chain}/sessions", response_model=SessionPage, summary="Sessions")
def sessions(
    state: StateDep,
    conn: ConnDep,
    chain: ChainDep,
    request: Request,
    owner: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$")] = None,
    session_state: Annotated[
        Literal["active", "deactivated"] | None,
        Query(
            alias="state",
            description="active: the sessions with `active: true`; deactivated: those with "
            "`active: false` (SessionDeactivated indexed). The same words as each session's "
            "`state_name`, the name of its numeric `state` (1 active, 2 deactivated)",
        ),
    ] = None,
    model_identifier: Annotated[str | None, Query(pattern=r"^[0-9]{1,78}$")] = None,
    limit: Limit = DEFAULT_LIMIT,
    next: Next = None,
) -> SessionPage:
    links = state.links(chain, request)
    rows, more = q.list_sessions(
        conn,
        int(chain.chain_id or 0),
        owner=owner.lower() if owner else None,
        active=None if session_state is None else session_state == "active",
        model_identifier=model_identifier,
        after=after_key(next),
        limit=limit,
    )
    items = [SessionOut(**_session_out(r, links)) for r in rows]
    token = encode_token([items[-1].session_id]) if more and items else None
    return SessionPage(sessions=items, next=token)


@router.get(
    "/chains/{chain}/sessions/{session_id}",
    response_model=SessionDetail,
    summary="One session with its nodes, routers and task counts",
)
def session(
    state: StateDep, conn: ConnDep, chain: ChainDep, request: Request, session_id: SessionId
) -> SessionDetail:
    cid = int(chain.chain_id or 0)
    r = q.get_session(conn, cid, session_id)
    if r is None:
        raise not_found("session", chain=chain.name, session_id=session_id)
    links = state.links(chain, request)
    return SessionDetail(
        **_session_out(r, links),
        dedicated_nodes=r["dedicated_nodes"],
        ephemeral_nodes=r["ephemeral_nodes"],
        miners=r["miners"],
        routers=[
            RouterOut(
                address=x["address"], info=x["info"], explorer_url=links.address(x["address"])
            )
            for x in r["routers"]
        ],
        task_counts=q.task_counts(conn, cid, session_id),
    )


def _summary(r: dict[str, Any], links: Links) -> TaskSummary:
    return TaskSummary(
        session_id=r["session_id"],
        task_id=r["task_id"],
        global_id=r["global_id"],
        client_reference=r["client_reference"],
        status=r["status"],
        force_ended=r["force_ended"],
        submitted_at=r.get("submitted_at"),
        updated_block=r["updated_block"],
        url=links.task(r["session_id"], r["task_id"]),
    )


@router.get(
    "/chains/{chain}/sessions/{session_id}/tasks",
    response_model=TaskPage,
    summary="Tasks of a session",
    description="A session that is not indexed is a 404, as for the session itself.",
)
def tasks(
    state: StateDep,
    conn: ConnDep,
    chain: ChainDep,
    request: Request,
    session_id: SessionId,
    status: TaskStatus | None = None,
    since: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="Submitted at or after (unix seconds)")
    ] = None,
    until: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="Submitted at or before (unix seconds)")
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
    next: Next = None,
) -> TaskPage:
    links = state.links(chain, request)
    cid = int(chain.chain_id or 0)
    rows, more = q.list_tasks(
        conn,
        cid,
        session_id,
        status=status,
        since=since,
        until=until,
        after=after_key(next),
        limit=limit,
    )
    if not rows and q.get_session(conn, cid, session_id) is None:
        raise not_found("session", chain=chain.name, session_id=session_id)
    items = [_summary(r, links) for r in rows]
    return TaskPage(tasks=items, next=encode_token([items[-1].task_id]) if more and items else None)


def _read(state: AppState, key: tuple[int, int, int]) -> TaskRows | None:
    with state.engine.connect() as conn:
        return lifecycle.fetch(conn, key)


async def task(
    request: Request, chain: ChainName, session_id: SessionId, task_id: TaskId
) -> Response:
    # The hot path (bench/api.py): one statement, awaited on the loop on PostgreSQL (shared by
    # the requests that arrive together), one threadpool hand-off elsewhere; the body is built
    # as TaskDetail-shaped dicts and encoded once (tests check it against the model). No
    # dependencies: FastAPI's per-request solving of StateDep/ChainDep cost a third of the
    # route's CPU (bench/api.py --profile).
    state: AppState = request.app.state.corlens
    c = state.chain(chain)
    key = (int(c.chain_id or 0), session_id, task_id)
    if state.lifecycles is not None:
        rows = await state.lifecycles.get(key)
    else:
        rows = await run_in_threadpool(_read, state, key)
    if rows is None:
        raise not_found("task", chain=c.name, session_id=session_id, task_id=task_id)
    doc = lifecycle.document(c, state.links(c, request), session_id, task_id, rows)
    return Response(lifecycle.encode(doc), media_type="application/json")


# Well-formed ids skip FastAPI's dependency solver (api/lean_route.py); anything else gets
# FastAPI's own validation and 422.
router.add_api_route(
    "/chains/{chain}/sessions/{session_id}/tasks/{task_id}",
    task,
    methods=["GET"],
    response_model=TaskDetail,
    summary="A task's lifecycle with explorer links",
    route_class_override=lean_route(
        {"chain": text(CHAIN_NAME_MAX), "session_id": digits(MAX_ID), "task_id": digits(MAX_ID)}
    ),
)


def _round_out(r: dict[str, Any], links: Links) -> dict[str, Any]:
    return {
        "round_id": r["round_id"],
        "status": r["status"],
        "creator": r["creator"],
        "preparer": r["preparer"],
        "miners": r["miners"],
        "force_end": r["force_end"],
        "first_block": r["first_block"],
        "updated_block": r["updated_block"],
        "url": f"{links.api}/network-tasks/{r['round_id']}",
    }


@router.get(
    "/chains/{chain}/network-tasks",
    response_model=NetworkTaskPage,
    summary="CognitiveV1 network-task rounds",
)
def network_tasks(
    state: StateDep,
    conn: ConnDep,
    chain: ChainDep,
    request: Request,
    status: Literal[
        "requested", "created", "prepared", "started", "precommitted", "committed", "ended"
    ]
    | None = None,
    limit: Limit = DEFAULT_LIMIT,
    next: Next = None,
) -> NetworkTaskPage:
    links = state.links(chain, request)
    rows, more = q.list_rounds(
        conn, int(chain.chain_id or 0), status=status, after=after_key(next), limit=limit
    )
    items = [NetworkTaskOut(**_round_out(r, links)) for r in rows]
    return NetworkTaskPage(
        network_tasks=items, next=encode_token([items[-1].round_id]) if more and items else None
    )


@router.get(
    "/chains/{chain}/network-tasks/{round_id}",
    response_model=NetworkTaskDetail,
    summary="One network-task round with its steps and participants",
)
def network_task(
    state: StateDep,
    conn: ConnDep,
    chain: ChainDep,
    request: Request,
    round_id: Annotated[int, Path(ge=0, le=MAX_ID)],
) -> NetworkTaskDetail:
    cid = int(chain.chain_id or 0)
    got = q.get_round(conn, cid, round_id)
    if got is None:
        raise not_found("network task", chain=chain.name, round_id=round_id)
    r, steps = got
    links = state.links(chain, request)
    st = q.chain_state(conn, cid)
    outs = [
        RoundStepOut(
            step=s["step"],
            actor=s["actor"] or None,
            event=s["event"],
            tx_hash=s["tx_hash"],
            block_number=s["block_number"],
            block_time=s["block_time"],
            log_index=s["log_index"],
            finality=fin(st, s["block_number"]),
            explorer_url=links.tx(s["tx_hash"]),
        )
        for s in steps
    ]
    parts: dict[str, list[RoundStepOut]] = {}
    for s in outs:
        if s.actor:
            parts.setdefault(s.actor, []).append(s)
    return NetworkTaskDetail(
        **_round_out(r, links), steps=[s for s in outs if not s.actor], participants=parts
    )
