"""Response schemas of the verification API. Routes return these, never table rows."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Finality = Literal["latest", "safe", "finalized"]


class Page(BaseModel):
    next: str | None = Field(None, description="Pass as `next` to get the following page.")


class ChainOut(BaseModel):
    name: str
    chain_id: int
    parent_chain_id: int | None
    head_block: int
    cursor_block: int
    lag_blocks: int | None = Field(
        description="Head minus cursor; null while the chain's head was never read (RPC down)."
    )
    lag_seconds: float | None
    safe_block: int
    finalized_block: int
    events_indexed: int
    malformed_logs: int
    unknown_logs: int
    reorgs: int
    explorer_url: str | None
    explorer_kind: Literal["etherscan", "blockscout", "corlens"] = Field(
        description="The kind of the links corlens builds for this chain: corlens (its own tx "
        "and node views) whenever no explorer_url is set"
    )
    dashboard_url: str | None


class ChainsOut(BaseModel):
    chains: list[ChainOut]


class RouterOut(BaseModel):
    address: str
    info: str = Field(description="routerInfo as registered on SessionV2 (the router endpoint)")
    explorer_url: str


# SessionV2's SessionState enum (abis/src/SessionV2.sol: None, Active, Deactivated) by value;
# "active" and "deactivated" are the words the sessions list's `state` filter takes.
SESSION_STATE_NAMES: dict[int, Literal["none", "active", "deactivated"]] = {
    0: "none",
    1: "active",
    2: "deactivated",
}


def session_state_name(state: int | None) -> Literal["none", "active", "deactivated"] | None:
    """The name of a SessionV2 ``state`` value; None for a value the enum does not have.

    >>> [session_state_name(v) for v in (0, 1, 2, 3, None)]
    ['none', 'active', 'deactivated', None, None]
    """
    return SESSION_STATE_NAMES.get(state) if state is not None else None


class SessionOut(BaseModel):
    session_id: int
    sid: str | None
    name: str | None
    owner: str | None
    model_identifier: str | None
    state: int | None = Field(
        description="SessionV2's SessionState as read by getSession: 0 none, 1 active, "
        "2 deactivated (named in `state_name`); null before the session's snapshot is read"
    )
    state_name: Literal["none", "active", "deactivated"] | None = Field(
        description="The name of `state`: active (1) or deactivated (2), the words the "
        "sessions list's `state` filter takes, or none (0); null when `state` is null or a "
        "value SessionV2 does not define"
    )
    active: bool = Field(
        description="False once the session's SessionDeactivated event is indexed: the "
        "sessions list's `state` filter matches this (active: true, deactivated: false)"
    )
    redundant: int | None
    min_nodes: int | None
    max_nodes: int | None
    created_block: int | None
    created_tx: str | None
    created_tx_url: str | None
    deactivated_tx: str | None
    deactivated_tx_url: str | None = Field(
        description="Explorer link to `deactivated_tx` (as `created_tx_url`); null while it is"
    )
    dashboard_url: str | None
    url: str


class SessionPage(Page):
    sessions: list[SessionOut]


class SessionDetail(SessionOut):
    dedicated_nodes: list[str]
    ephemeral_nodes: list[str]
    miners: list[str] = Field(
        description="The miners named by the session's SessionCreated event (the nodes it was "
        "created with), as indexed then; not updated afterwards, so not the nodes that served "
        "its tasks: those are each task's `miners` (GET .../sessions/{session_id}/tasks/"
        "{task_id}), and GET .../nodes/{address} lists every session a node served in "
        "`sessions`"
    )
    routers: list[RouterOut]
    task_counts: dict[str, int]


class TaskSummary(BaseModel):
    session_id: int
    task_id: int
    global_id: int | None
    client_reference: str | None
    status: str
    force_ended: bool
    submitted_at: int | None = Field(None, description="Block time (unix seconds) of submission")
    updated_block: int
    url: str


class TaskPage(Page):
    tasks: list[TaskSummary]


class StepOut(BaseModel):
    step: str
    event: str
    tx_hash: str
    block_number: int
    block_time: int | None
    log_index: int
    actor: str | None
    actor_role: Literal["client", "router", "miner", "oracle", "network"]
    finality: Finality
    explorer_url: str


class ActionOut(BaseModel):
    tx_hash: str
    block_number: int
    log_index: int
    finality: Finality
    explorer_url: str


class TaskMinerOut(BaseModel):
    address: str
    explorer_url: str
    ack: ActionOut | None
    precommit: ActionOut | None
    commit: ActionOut | None


class PaymentOut(BaseModel):
    kind: Literal["deposit", "network", "allocation", "withdrawal"]
    tx_hash: str
    log_index: int
    session_id: int | None
    task_id: int | None
    node: str | None
    counterparty: str | None
    amount: str = Field(description="Token base units (wei of COR), as a decimal string")
    block_number: int
    block_time: int | None
    finality: Finality
    explorer_url: str


class TaskDetail(BaseModel):
    chain: str
    session_id: int
    task_id: int
    global_id: int | None
    client_reference: str | None
    task_data: str | None
    status: str
    force_ended: bool
    submitted_at: int | None = Field(
        description="Block time (unix seconds) of submission, as in the session's task list"
    )
    updated_block: int = Field(
        description="Block of the task's last indexed change, as in the session's task list"
    )
    steps: list[StepOut]
    miners: list[TaskMinerOut]
    payments: list[PaymentOut]
    dashboard_url: str | None
    verify_url: str


class RoundStepOut(BaseModel):
    step: str
    actor: str | None
    event: str
    tx_hash: str
    block_number: int
    block_time: int | None
    log_index: int
    finality: Finality
    explorer_url: str


class NetworkTaskOut(BaseModel):
    round_id: int
    status: str
    creator: str | None
    preparer: str | None
    miners: list[str]
    force_end: bool
    first_block: int
    updated_block: int
    url: str


class NetworkTaskPage(Page):
    network_tasks: list[NetworkTaskOut]


class NetworkTaskDetail(NetworkTaskOut):
    steps: list[RoundStepOut]
    participants: dict[str, list[RoundStepOut]]


class Participation(BaseModel):
    assigned: int
    acks: int
    precommits: int
    commits: int
    misses: int = Field(description="Ended tasks this node was assigned to but never committed")


class Earnings(BaseModel):
    allocated: str = Field(description="Sum of the node's allocations: COR wei (uint256), decimal")
    withdrawn: str = Field(description="Sum of the node's withdrawals: COR wei (uint256), decimal")
    pending: str = Field(
        description="What the node can still withdraw: COR wei (uint256), as a decimal string. "
        "Allocations add and withdrawals subtract in chain order; a withdrawal above the "
        "pending balance leaves it at 0, as the contract does (never negative; the audit's "
        "over_withdrawal rule reports the overdraft)"
    )
    unreadable: int = Field(
        0,
        description="Payment rows left out of these sums because their stored amount is not "
        "a decimal uint256 (the audit reports each as invalid_amount)",
    )


class NodeOut(BaseModel):
    address: str
    node_id: str | None
    pool_state: str | None
    in_pool: bool | None
    kind: str | None
    last_execution: int | None
    sessions: list[int]
    participation: Participation
    earnings: Earnings
    explorer_url: str


class LoggedEvent(BaseModel):
    log_index: int
    contract: str
    event: str
    address: str
    args: dict[str, object]


class ReceiptOut(BaseModel):
    status: int | None
    sender: str | None
    to: str | None
    gas_used: int | None
    logs: int


class TxOut(BaseModel):
    chain: str
    tx_hash: str
    block_number: int | None
    block_hash: str | None
    finality: Finality | None
    events: list[LoggedEvent]
    receipt: ReceiptOut | None
    receipt_error: str | None
    explorer_url: str


class GatewayRecordOut(BaseModel):
    """The gateway's record of one request, typed alike on SQLite and PostgreSQL."""

    request_id: str
    key_id: int | None
    model: str
    endpoint: str = Field(description="completions | chat.completions")
    stream: bool
    chain: str | None
    session_id: int | None
    session_key: str | None = Field(description="chain:session@router, credentials hidden")
    router_label: str | None
    router_url: str | None = Field(description="Credentials and query string hidden")
    status: str = Field(description="ok | error | rejected | client_closed")
    http_status: int
    error_code: str | None
    latency_ms: float
    ttfb_ms: float | None
    waited_ms: float | None
    attempts: int
    prompt_tokens: int | None
    completion_tokens: int | None
    task_id: int | None
    replica_id: str
    created_at: float = Field(
        description="When the gateway received the request: unix seconds (UTC), fractional"
    )


class RequestOut(BaseModel):
    request_id: str
    gateway: GatewayRecordOut | None = Field(
        None, description="The gateway's record of the request, when the gateway served it"
    )
    chain: str | None
    task: TaskSummary | None
