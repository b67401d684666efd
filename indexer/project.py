"""Projections: fold decoded events into task, network-task, node and payment rows.

Pure: a :class:`Projector` holds plain-dict rows (column name -> value) for the keys a batch
touches, loaded by the store beforehand; :meth:`Projector.apply` folds one event in. Replaying a
key's events in (block, log index) order from nothing rebuilds its rows exactly, which is how a
reorg rollback restores the rows of the keys it touched.

Invariant: a step row records the *first* log that reached the step, so applying an event twice
or re-folding history gives the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from indexer.decode import DecodedEvent

Row = dict[str, Any]
TaskKey = tuple[int, int]  # (session_id, task_id)

TASK_STATUSES = (
    "submitted",
    "queued",
    "assigned",
    "acked",
    "precommitted",
    "committed",
    "ended",
    "paid",
)
TASK_RANK = {s: i for i, s in enumerate(TASK_STATUSES)}
ROUND_STATUSES = (
    "requested",
    "created",
    "prepared",
    "started",
    "precommitted",
    "committed",
    "ended",
)
ROUND_RANK = {s: i for i, s in enumerate(ROUND_STATUSES)}

# (contract, event) -> the user-task step it marks.
TASK_STEP_OF = {
    ("SessionV2", "TaskSubmitted"): "submitted",
    ("SessionQueueV2", "TaskQueued"): "queued",
    ("SessionQueueV2", "TaskAssigned"): "assigned",
    ("SessionQueueV2", "TaskAcked"): "acked",
    ("SessionQueueV2", "TaskAllPrecommitted"): "precommitted",
    ("SessionQueueV2", "TaskPrecommitEnded"): "precommitted",
    ("SessionQueueV2", "TaskAllCommitted"): "committed",
    ("SessionQueueV2", "TaskCommitEnded"): "committed",
    ("SessionQueueV2", "TaskEnded"): "ended",
    ("SessionPayment", "NodePaymentAllocated"): "paid",
}
PHASE_PROVISIONAL = frozenset({"TaskAllPrecommitted", "TaskAllCommitted"})
PHASE_CLOSING = frozenset({"TaskPrecommitEnded", "TaskCommitEnded"})
MINER_ACTION = {"TaskAcked": "ack", "TaskPrecommitted": "precommit", "TaskCommitted": "commit"}

# CognitiveV1 event -> (round step, status it implies or None, per-participant arg or None)
ROUND_STEP_OF: dict[str, tuple[str, str | None, str | None]] = {
    "NewSessionRequest": ("request", "requested", None),
    "NewSessionRequestAssigned": ("request_assigned", None, None),
    "SessionCreated": ("created", "created", None),
    "SessionPrepareAssigned": ("prepare_assigned", None, None),
    "SessionPrepared": ("prepared", "prepared", None),
    "SessionStarted": ("started", "started", None),
    "SessionPrecommitted": ("precommit", None, "addr"),
    "SessionAllPrecommitted": ("precommitted", "precommitted", None),
    "SessionCommitted": ("commit", None, "addr"),
    "SessionAllCommitted": ("committed", "committed", None),
    "SessionEnded": ("ended", "ended", None),
}

NODE_STATE_OF = {
    "NodeAdded": "added",
    "NodeReserved": "reserved",
    "NodeEphemeral": "ephemeral",
    "NodeReleased": "released",
    "NodeRemoved": "removed",
}

PAYMENT_KIND = {
    "SessionDeposited": "deposit",
    "NetworkPaid": "network",
    "NodePaymentAllocated": "allocation",
    "NodePaymentWithdrawn": "withdrawal",
}

# Step events whose log does not say who acted: the sync loop reads the tx sender for these.
SENDER_STEPS = frozenset(k for k, step in TASK_STEP_OF.items() if step not in ("acked", "paid"))

# SessionV2 events after which the session's on-chain snapshot is re-read.
SESSION_EVENTS = frozenset(
    {
        "SessionCreated",
        "SessionUpdated",
        "SessionDeactivated",
        "NewNodeAssignedToSession",
        "AllRoutersRemoved",
        "NodeReleased",
        "RouterAdded",
        "RouterUpdated",
        "RouterRemoved",
        "DedicatedNodeAdded",
        "DedicatedNodeRemoved",
    }
)


class Keys(NamedTuple):
    """What an event is about, for indexing the raw event row and for per-key replay. (A named
    tuple: built once per indexed event, at a third of a frozen dataclass's cost.)"""

    session_id: int | None = None
    task_id: int | None = None
    subject: str | None = None


def keys_of(ev: DecodedEvent) -> Keys:
    """The projection keys of one event.

    >>> keys_of(DecodedEvent(1, "0x", None, "0x", 0, 0, "0x", "CognitiveV1", "SessionEnded",
    ...         "0x", {"id": 7, "endTimestamp": 1}, [], "0x"))
    Keys(session_id=None, task_id=None, subject='7')
    """
    a = ev.args
    if ev.contract == "CognitiveV1":
        return Keys(subject=str(a["id"])) if "id" in a else Keys()
    if ev.contract == "NodePool":
        node = a.get("nodeAddress")
        return Keys(subject=str(node) if node else None)
    if ev.contract == "SessionPayment" and ev.event == "NodePaymentWithdrawn":
        return Keys(subject=str(a.get("node")))
    sid = a.get("sessionId", ev.session_hint)
    tid = a.get("taskId")
    subject = str(a["node"]) if ev.contract == "SessionPayment" and "node" in a else None
    return Keys(
        session_id=int(sid) if sid is not None else None,
        task_id=int(tid) if tid is not None else None,
        subject=subject,
    )


def _step_row(ev: DecodedEvent, actor: str | None) -> Row:
    return {
        "event": ev.event,
        "tx_hash": ev.tx_hash,
        "block_number": ev.block_number,
        "log_index": ev.log_index,
        "block_time": ev.block_time,
        "actor": actor,
    }


@dataclass
class Projector:
    """In-memory rows for the keys of one batch. The store loads, applies, then writes back."""

    chain_id: int
    tasks: dict[TaskKey, Row] = field(default_factory=dict)
    steps: dict[tuple[int, int, str], Row] = field(default_factory=dict)
    miners: dict[tuple[int, int, str], Row] = field(default_factory=dict)
    rounds: dict[int, Row] = field(default_factory=dict)
    round_steps: dict[tuple[int, str, str], Row] = field(default_factory=dict)
    nodes: dict[str, Row] = field(default_factory=dict)
    payments: list[Row] = field(default_factory=list)
    sessions: dict[int, Row] = field(default_factory=dict)  # event-derived session facts
    dirty_tasks: set[TaskKey] = field(default_factory=set)
    stored_tasks: set[TaskKey] = field(default_factory=set)  # tasks load_for found stored
    dirty_rounds: set[int] = field(default_factory=set)
    dirty_nodes: set[str] = field(default_factory=set)

    def apply_all(self, events: Iterable[DecodedEvent]) -> None:
        for ev in events:
            self.apply(ev)

    def apply(self, ev: DecodedEvent) -> None:
        if ev.contract in ("SessionV2", "SessionQueueV2"):
            self._task_or_session(ev)
        elif ev.contract == "SessionPayment":
            self._payment(ev)
        elif ev.contract == "CognitiveV1":
            self._round(ev)
        elif ev.contract == "NodePool":
            self._node(ev)

    # -- user tasks -----------------------------------------------------------------------
    def _task(self, ev: DecodedEvent, sid: int, tid: int) -> Row:
        key = (sid, tid)
        row = self.tasks.get(key)
        if row is None:
            row = {
                "chain_id": self.chain_id,
                "session_id": sid,
                "task_id": tid,
                "global_id": None,
                "client_reference": None,
                "task_data": None,
                "status": "submitted",
                "force_ended": False,
                "miners": [],
                "node_ids": [],
                "first_block": ev.block_number,
                "updated_block": ev.block_number,
            }
            self.tasks[key] = row
        row["updated_block"] = max(row["updated_block"], ev.block_number)
        self.dirty_tasks.add(key)
        return row

    def _set_step(self, sid: int, tid: int, step: str, ev: DecodedEvent, actor: str | None) -> None:
        k = (sid, tid, step)
        prev = self.steps.get(k)
        # The router's closing event (TaskPrecommitEnded, TaskCommitEnded) marks the step; the
        # All* event stands in only until it arrives.
        if prev is None or (prev["event"] in PHASE_PROVISIONAL and ev.event in PHASE_CLOSING):
            self.steps[k] = {
                "chain_id": self.chain_id,
                "session_id": sid,
                "task_id": tid,
                "step": step,
                **_step_row(ev, actor),
            }
        row = self.tasks[(sid, tid)]
        if TASK_RANK[step] > TASK_RANK[row["status"]]:
            row["status"] = step
        if step == "ended":
            row["force_ended"] = (sid, tid, "committed") not in self.steps

    def _task_or_session(self, ev: DecodedEvent) -> None:
        a = ev.args
        if ev.contract == "SessionV2" and ev.event in SESSION_EVENTS:
            self._session_fact(ev)
            return
        if "taskId" not in a or "sessionId" not in a:
            return
        sid, tid = int(a["sessionId"]), int(a["taskId"])
        row = self._task(ev, sid, tid)
        if ev.event == "TaskSubmitted":
            row["client_reference"] = a.get("clientReference")
            row["task_data"] = row["task_data"] or a.get("taskData")
        elif ev.event == "TaskQueued":
            row["global_id"] = a.get("globalId")
            row["task_data"] = a.get("taskData")
        elif ev.event == "TaskAssigned" and ev.contract == "SessionV2":
            row["node_ids"] = list(a.get("nodeIds", []))
            return
        elif ev.event == "TaskAssigned":
            row["miners"] = list(a.get("miners", []))
            for m in row["miners"]:
                self.miners.setdefault(
                    (sid, tid, m),
                    {
                        "chain_id": self.chain_id,
                        "session_id": sid,
                        "task_id": tid,
                        "miner": m,
                        "assigned_block": ev.block_number,
                        **{
                            f"{act}_{c}": None
                            for act in ("ack", "precommit", "commit")
                            for c in ("tx", "block", "log_index")
                        },
                    },
                )
        action = MINER_ACTION.get(ev.event)
        miner = a.get("miner")
        if action and miner:
            mrow = self.miners.get((sid, tid, miner))
            if mrow is not None and mrow[f"{action}_tx"] is None:
                mrow[f"{action}_tx"] = ev.tx_hash
                mrow[f"{action}_block"] = ev.block_number
                mrow[f"{action}_log_index"] = ev.log_index
        step = TASK_STEP_OF.get((ev.contract, ev.event))
        if step:
            self._set_step(sid, tid, step, ev, miner if action else ev.sender)

    def _session_fact(self, ev: DecodedEvent) -> None:
        sid = ev.args.get("sessionId", ev.session_hint)
        if sid is None:
            return
        facts = self.sessions.setdefault(int(sid), {})
        facts["updated_block"] = ev.block_number
        if ev.event == "SessionCreated":
            facts.update(
                created_block=ev.block_number,
                created_tx=ev.tx_hash,
                sid=ev.args.get("sid"),
                owner=ev.args.get("owner"),
                miners=list(ev.args.get("miners", [])),
            )
        elif ev.event == "SessionDeactivated":
            facts.update(deactivated_tx=ev.tx_hash, active=False)

    # -- payments --------------------------------------------------------------------------
    def _payment(self, ev: DecodedEvent) -> None:
        kind = PAYMENT_KIND.get(ev.event)
        if kind is None:
            return
        a = ev.args
        sid, tid = a.get("sessionId"), a.get("taskId")
        self.payments.append(
            {
                "chain_id": self.chain_id,
                "tx_hash": ev.tx_hash,
                "log_index": ev.log_index,
                "kind": kind,
                "session_id": sid,
                "task_id": tid,
                "node": a.get("node"),
                "counterparty": a.get("depositor") or a.get("to"),
                "amount": str(a.get("amount", 0)),
                "block_number": ev.block_number,
                "block_time": ev.block_time,
            }
        )
        if kind == "allocation" and sid is not None and tid is not None:
            self._task(ev, int(sid), int(tid))
            self._set_step(int(sid), int(tid), "paid", ev, a.get("node"))

    # -- network tasks ---------------------------------------------------------------------
    def _round(self, ev: DecodedEvent) -> None:
        spec = ROUND_STEP_OF.get(ev.event)
        if spec is None or "id" not in ev.args:
            return
        step, status, per = spec
        rid = int(ev.args["id"])
        row = self.rounds.get(rid)
        if row is None:
            row = {
                "chain_id": self.chain_id,
                "round_id": rid,
                "status": "requested",
                "creator": None,
                "preparer": None,
                "miners": [],
                "force_end": False,
                "start_time": None,
                "end_time": None,
                "first_block": ev.block_number,
                "updated_block": ev.block_number,
            }
            self.rounds[rid] = row
        row["updated_block"] = max(row["updated_block"], ev.block_number)
        self.dirty_rounds.add(rid)
        a = ev.args
        actor = str(a[per]) if per else ""
        k = (rid, step, actor)
        if k not in self.round_steps:
            self.round_steps[k] = {
                "chain_id": self.chain_id,
                "round_id": rid,
                "step": step,
                "actor": actor,
                "event": ev.event,
                "tx_hash": ev.tx_hash,
                "block_number": ev.block_number,
                "log_index": ev.log_index,
                "block_time": ev.block_time,
            }
        if status and ROUND_RANK[status] > ROUND_RANK[row["status"]]:
            row["status"] = status
        if ev.event == "SessionCreated":
            row["creator"] = a.get("addr")
        elif ev.event == "SessionPrepared":
            row["preparer"] = a.get("addr")
        elif ev.event == "SessionStarted":
            row["miners"] = list(a.get("addrs", []))
            row["start_time"] = a.get("startTimestamp")
        elif ev.event == "SessionAllPrecommitted":
            row["force_end"] = bool(a.get("forceEnd"))
        elif ev.event == "SessionEnded":
            row["end_time"] = a.get("endTimestamp")

    # -- nodes -----------------------------------------------------------------------------
    def _node(self, ev: DecodedEvent) -> None:
        addr = ev.args.get("nodeAddress")
        if not addr:
            return
        row = self.nodes.get(addr)
        if row is None:
            row = {
                "chain_id": self.chain_id,
                "address": addr,
                "node_id": None,
                "pool_state": "added",
                "in_pool": True,
                "kind": None,
                "last_execution": None,
                "first_block": ev.block_number,
                "updated_block": ev.block_number,
            }
            self.nodes[addr] = row
        row["updated_block"] = max(row["updated_block"], ev.block_number)
        row["node_id"] = ev.args.get("nodeId", row["node_id"])
        self.dirty_nodes.add(addr)
        state = NODE_STATE_OF.get(ev.event)
        if state:
            row["pool_state"] = state
            row["in_pool"] = state != "removed"
            if state == "reserved":
                row["kind"] = "dedicated"
            elif state == "ephemeral":
                row["kind"] = "ephemeral"
            elif state in ("released", "removed"):
                row["kind"] = None
        elif ev.event == "NodePoolModeReset":
            row["kind"] = None
        elif ev.event == "LastExecutionTimestampSet":
            row["last_execution"] = ev.args.get("timestamp")
