"""What the devnet driver did on chain, recorded as it happened: the ground truth an index is
compared against.

Plain dataclasses; :meth:`Ledger.to_dict` gives a JSON-serialisable view (tasks keyed
``"<session_id>:<task_id>"``, sessions and network tasks keyed by their id as a string).
Addresses are lowercase 0x-hex, amounts integers in the token's base unit (wei of COR).

Task status is the furthest lifecycle step reached, one of :data:`TASK_STATUSES`:
``queued`` after submit (TaskSubmitted and TaskQueued share the submit transaction),
``assigned``, ``acked`` (at least one miner acked), ``precommitted`` (TaskPrecommitEnded),
``committed`` (TaskCommitEnded), ``ended`` (TaskEnded), ``paid`` (ended and at least one
NodePaymentAllocated). Task ``steps`` map each step reached to the transaction that reached it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TASK_STATUSES = (
    "submitted", "queued", "assigned", "acked", "precommitted", "committed", "ended", "paid",
)
TASK_STEPS = ("submitted", "queued", "assigned", "precommitted", "committed", "ended", "paid")
NETWORK_STEPS = ("request", "created", "prepared", "started", "precommitted", "committed", "ended")
PAYMENT_KINDS = ("deposit", "network", "allocation", "withdrawal")
# NodePool status ids (abis/src/NodePool.sol) by name; "removed" for nodes no longer in the pool.
NODE_STATUSES = ("removed", "available", "ephemeral", "reserved", "released")


@dataclass
class LogRecord:
    address: str
    topic0: str
    log_index: int
    block_number: int
    event: str  # "<Contract>.<Event>" for the deployment's contracts, "" otherwise


@dataclass
class TxRecord:
    tx_hash: str
    block_number: int
    sender: str
    to: str | None
    function: str  # "<Contract>.<function>" or "deploy <Contract>"
    logs: list[LogRecord] = field(default_factory=list)


@dataclass
class SessionRecord:
    session_id: int
    sid: str
    owner: str
    name: str
    model_identifier: int
    redundant: int
    state: str  # "active" (SessionV2 state id 1) or "deactivated" (state id 2)
    routers: dict[str, str] = field(default_factory=dict)  # router address -> routerInfo
    dedicated: list[str] = field(default_factory=list)
    ephemeral: list[str] = field(default_factory=list)


@dataclass
class MinerSteps:
    ack: str | None = None
    precommit: str | None = None
    commit: str | None = None


@dataclass
class TaskRecord:
    session_id: int
    task_id: int
    global_id: int
    client_reference: str
    task_data: str
    status: str
    steps: dict[str, str] = field(default_factory=dict)
    force_ended: bool = False
    miners: dict[str, MinerSteps] = field(default_factory=dict)

    def reach(self, status: str, tx_hash: str | None = None) -> None:
        """Advance the status (never backwards) and record the step's transaction."""
        if TASK_STATUSES.index(status) > TASK_STATUSES.index(self.status):
            self.status = status
        if tx_hash is not None and status in TASK_STEPS:
            self.steps.setdefault(status, tx_hash)


@dataclass
class NetworkMinerSteps:
    precommit: str | None = None
    commit: str | None = None


@dataclass
class NetworkTaskRecord:
    network_task_id: int
    creator: str
    preparer: str | None = None
    state: str = "request"  # the furthest of NETWORK_STEPS reached
    steps: dict[str, str] = field(default_factory=dict)
    force_ended: bool = False
    participants: dict[str, NetworkMinerSteps] = field(default_factory=dict)

    def reach(self, step: str, tx_hash: str) -> None:
        self.steps.setdefault(step, tx_hash)
        if NETWORK_STEPS.index(step) > NETWORK_STEPS.index(self.state):
            self.state = step


@dataclass
class PaymentRecord:
    kind: str  # one of PAYMENT_KINDS
    tx_hash: str
    log_index: int
    session_id: int | None
    task_id: int | None
    node: str | None  # allocations and withdrawals
    amount: int  # what the transaction moved
    logged_amount: int  # what the event says (differs only under SessionPayment.setFaults)


@dataclass
class Ledger:
    chain_id: int
    seed: int | None = None
    txs: list[TxRecord] = field(default_factory=list)
    sessions: dict[int, SessionRecord] = field(default_factory=dict)
    tasks: dict[tuple[int, int], TaskRecord] = field(default_factory=dict)
    network_tasks: dict[int, NetworkTaskRecord] = field(default_factory=dict)
    payments: list[PaymentRecord] = field(default_factory=list)
    nodes: dict[str, str] = field(default_factory=dict)  # node -> NODE_STATUSES name at the end

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "seed": self.seed,
            "txs": [asdict(t) for t in self.txs],
            "sessions": {str(k): asdict(v) for k, v in sorted(self.sessions.items())},
            "tasks": {f"{s}:{t}": asdict(v) for (s, t), v in sorted(self.tasks.items())},
            "network_tasks": {str(k): asdict(v) for k, v in sorted(self.network_tasks.items())},
            "payments": [asdict(p) for p in self.payments],
            "nodes": dict(sorted(self.nodes.items())),
        }

    def pending(self) -> dict[str, int]:
        """Node pending balances implied by the recorded allocations and withdrawals."""
        out: dict[str, int] = {}
        for p in self.payments:
            if p.node is not None and p.kind in ("allocation", "withdrawal"):
                sign = 1 if p.kind == "allocation" else -1
                out[p.node] = out.get(p.node, 0) + sign * p.amount
        return out
