"""Drive one session, one user task or one payment through its real on-chain lifecycle.

Every function takes a :class:`Net` (chain + deployment + ledger), sends its transactions from
the accounts that play each role, and records what happened in the ledger. Simulated routers
use :func:`submit_task` and :func:`drive_task` to serve one request with a client reference.

A Net is not thread-safe: one thread drives it at a time.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from eth_utils.crypto import keccak

from devnet.abi import load_abi
from devnet.chain import Chain, Receipt
from devnet.deploy import Deployment, event_names, tx_record
from devnet.ledger import Ledger, MinerSteps, PaymentRecord, SessionRecord, TaskRecord

ZERO_ADDRESS = "0x" + "00" * 20
# Stages drive_task can stop after (or force-end after), in lifecycle order.
STAGES = ("assigned", "acked", "precommitted", "committed", "ended")


class Net:
    """A chain, its deployment, and the ledger that records every transaction sent through it."""

    def __init__(self, chain: Chain, deployment: Deployment, ledger: Ledger) -> None:
        self.chain = chain
        self.deployment = deployment
        self.ledger = ledger
        self._names = event_names(deployment.addresses)

    def send(self, sender: str, contract: str, fn: str, *args: Any) -> Receipt:
        to = self.deployment.addresses[contract]
        receipt = self.chain.transact(sender, to, contract, fn, *args)
        self.ledger.txs.append(tx_record(receipt, f"{contract}.{fn}", self._names))
        return receipt

    def call(self, contract: str, fn: str, *args: Any) -> Any:
        return self.chain.call(self.deployment.addresses[contract], contract, fn, *args)

    def logs(self, receipt: Receipt, contract: str, event: str) -> list[tuple[int, dict[str, Any]]]:
        """(log index, decoded args) of the ``contract.event`` logs of one receipt, in order."""
        address = self.deployment.addresses[contract]
        pairs = receipt.events(address, load_abi(contract).events[event])
        return [(log.log_index, args) for log, args in pairs]

    def events(self, receipt: Receipt, contract: str, event: str) -> list[dict[str, Any]]:
        """Decoded ``contract.event`` logs of one receipt, in log order."""
        return [args for _, args in self.logs(receipt, contract, event)]


# ---- sessions -------------------------------------------------------------------------------


def open_session(
    net: Net,
    *,
    owner: str,
    name: str,
    model_identifier: int,
    redundant: int,
    routers: Mapping[str, str],
    dedicated: Sequence[str] = (),
    ephemeral: Sequence[str] | None = None,
    min_nodes: int = 3,
    max_nodes: int = 8,
) -> SessionRecord:
    """Create a session and give it nodes and routers.

    ``ephemeral=None`` lets SessionV2.create reserve the first ``min_nodes`` unreserved pool
    nodes (they appear in SessionCreated.miners); a list has the network owner assign those.
    """
    receipt = net.send(
        owner, "SessionV2", "create", name, f'{{"model":{model_identifier}}}', ZERO_ADDRESS,
        min_nodes, max_nodes, redundant, 0, 1 if dedicated else 0, ephemeral is None, 1,
        model_identifier, 3600, 1000,
    )
    created = net.events(receipt, "SessionV2", "SessionCreated")[0]
    session = SessionRecord(
        session_id=created["sessionId"], sid="0x" + created["sid"].hex(), owner=owner, name=name,
        model_identifier=model_identifier, redundant=redundant, state="active",
        ephemeral=list(created["miners"]),
    )
    net.ledger.sessions[session.session_id] = session
    if ephemeral:
        network = net.deployment.accounts.owner
        net.send(network, "SessionV2", "assignEphemeralNodes", session.session_id, list(ephemeral))
        session.ephemeral.extend(ephemeral)
    for node in dedicated:
        net.send(owner, "SessionV2", "addDedicatedNode", session.session_id, node)
        session.dedicated.append(node)
    for router, info in routers.items():
        add_router(net, session, router, info)
    return session


def add_router(net: Net, session: SessionRecord, router: str, info: str) -> None:
    net.send(session.owner, "SessionV2", "addRouter", session.session_id, router, info)
    session.routers[router] = info


def update_router(net: Net, session: SessionRecord, router: str, info: str) -> None:
    net.send(session.owner, "SessionV2", "updateRouter", session.session_id, router, info)
    session.routers[router] = info


def remove_router(net: Net, session: SessionRecord, router: str) -> None:
    net.send(session.owner, "SessionV2", "removeRouter", session.session_id, router)
    del session.routers[router]


def remove_dedicated_node(net: Net, session: SessionRecord, node: str) -> None:
    net.send(session.owner, "SessionV2", "removeDedicatedNode", session.session_id, node)
    session.dedicated.remove(node)


def deactivate_session(net: Net, session: SessionRecord) -> None:
    """Deactivate; SessionV2 releases every node of the session."""
    net.send(session.owner, "SessionV2", "deactivateSession", session.session_id)
    session.state = "deactivated"
    session.dedicated.clear()
    session.ephemeral.clear()


# ---- user tasks -----------------------------------------------------------------------------


def submit_task(
    net: Net,
    *,
    session_id: int,
    sender: str,
    task_data: str,
    client_reference: str,
    prompt_type: int = 1,
    prompt_template: str = "",
    llm_params: Sequence[int] = (),
    request_params: Sequence[int] = (),
) -> TaskRecord:
    """SessionV2.submit from the session owner or one of its routers; the task is queued."""
    receipt = net.send(
        sender, "SessionV2", "submit", session_id, 0, task_data, prompt_type, prompt_template,
        list(llm_params), list(request_params), client_reference,
    )
    queued = net.events(receipt, "SessionQueueV2", "TaskQueued")[0]
    task = TaskRecord(
        session_id=session_id, task_id=queued["taskId"], global_id=queued["globalId"],
        client_reference=client_reference, task_data=task_data, status="submitted",
    )
    task.reach("submitted", receipt.tx_hash)
    task.reach("queued", receipt.tx_hash)
    net.ledger.tasks[(task.session_id, task.task_id)] = task
    return task


def drive_task(
    net: Net,
    task: TaskRecord,
    *,
    router: str,
    miners: Sequence[str],
    results: str | Mapping[str, str] | None = None,
    skip_precommit: Collection[str] = (),
    skip_commit: Collection[str] = (),
    stop_after: str | None = None,
    force_end_after: str | None = None,
    payment: int = 0,
) -> TaskRecord:
    """Assign ``miners``, then ack -> precommit -> endPrecommit -> commit -> endCommit -> end,
    then (``payment`` > 0) pay the network and allocate it to the miners that committed.

    ``results`` is each miner's completion (one string for all; default derived from the
    client reference). Miners in ``skip_precommit``/``skip_commit`` ack but go silent at that
    step. ``stop_after`` (one of STAGES) leaves the task in flight there; ``force_end_after``
    force-ends it there, unpaid.
    """
    sid, tid = task.session_id, task.task_id
    s = (stop_after, force_end_after)
    known = net.ledger.sessions.get(sid)
    model = known.model_identifier if known else net.call("SessionV2", "getModelIdentifier", sid)
    receipt = net.send(router, "SessionQueueV2", "assignTask", sid, tid, list(miners), model)
    task.miners = {m: MinerSteps() for m in miners}
    task.reach("assigned", receipt.tx_hash)
    if _halt(net, task, router, "assigned", *s):
        return task
    for miner in miners:
        task.miners[miner].ack = net.send(miner, "SessionQueueV2", "ack", sid, tid).tx_hash
        task.reach("acked")
    if _halt(net, task, router, "acked", *s):
        return task
    texts = {m: _result(results, m, task) for m in miners}
    for miner in miners:
        if miner not in skip_precommit:
            digest = keccak(text=texts[miner])
            receipt = net.send(miner, "SessionQueueV2", "precommit", sid, tid, digest, "0x")
            task.miners[miner].precommit = receipt.tx_hash
    receipt = net.send(router, "SessionQueueV2", "endPrecommit", sid, tid, True)
    task.reach("precommitted", receipt.tx_hash)
    if _halt(net, task, router, "precommitted", *s):
        return task
    for miner, steps in task.miners.items():
        if steps.precommit and miner not in skip_commit:
            receipt = net.send(miner, "SessionQueueV2", "commit", sid, tid, texts[miner])
            steps.commit = receipt.tx_hash
    receipt = net.send(router, "SessionQueueV2", "endCommit", sid, tid, True)
    task.reach("committed", receipt.tx_hash)
    if _halt(net, task, router, "committed", *s):
        return task
    receipt = net.send(router, "SessionQueueV2", "end", sid, tid, False)
    task.reach("ended", receipt.tx_hash)
    if payment > 0 and stop_after != "ended":
        pay_task(net, task, payer=router, amount=payment)
    return task


def _halt(
    net: Net, task: TaskRecord, router: str, stage: str, stop: str | None, force: str | None
) -> bool:
    if force == stage:
        receipt = net.send(router, "SessionQueueV2", "end", task.session_id, task.task_id, True)
        task.reach("ended", receipt.tx_hash)
        task.force_ended = True
        return True
    return stop == stage


def _result(results: str | Mapping[str, str] | None, miner: str, task: TaskRecord) -> str:
    if isinstance(results, str):
        return results
    if results is not None and miner in results:
        return results[miner]
    return f"completion for {task.client_reference}: {task.task_data[:40]}"


# ---- payments -------------------------------------------------------------------------------


def deposit(net: Net, *, session_id: int, depositor: str, amount: int) -> PaymentRecord:
    """COR from ``depositor`` (who approved SessionPayment) into the session's balance."""
    receipt = net.send(depositor, "SessionPayment", "depositToSession", session_id, amount)
    (index, args), = net.logs(receipt, "SessionPayment", "SessionDeposited")
    return _record(net, "deposit", receipt, index, session_id, None, None, amount, args["amount"])


def pay_task(net: Net, task: TaskRecord, *, payer: str, amount: int) -> list[PaymentRecord]:
    """Network payment for an ended task, split equally among the miners that committed
    (integer division; the remainder stays in the task's network balance)."""
    sid, tid = task.session_id, task.task_id
    receipt = net.send(payer, "SessionPayment", "payFromSessionToNetwork", sid, tid, amount)
    (index, args), = net.logs(receipt, "SessionPayment", "NetworkPaid")
    records = [_record(net, "network", receipt, index, sid, tid, None, amount, args["amount"])]
    committers = [m for m, steps in task.miners.items() if steps.commit]
    if not committers:
        return records
    share = amount // len(committers)
    shares = [share] * len(committers)
    allocate = "allocateNodePayments"
    receipt = net.send(payer, "SessionPayment", allocate, sid, tid, committers, shares)
    for index, args in net.logs(receipt, "SessionPayment", "NodePaymentAllocated"):
        node, logged = args["node"], args["amount"]
        records.append(_record(net, "allocation", receipt, index, sid, tid, node, share, logged))
    task.reach("paid", receipt.tx_hash)
    return records


def withdraw(net: Net, *, node: str, amount: int) -> PaymentRecord:
    """A node withdraws part of its pending payment in COR."""
    receipt = net.send(node, "SessionPayment", "withdrawNodePayment", amount)
    (index, args), = net.logs(receipt, "SessionPayment", "NodePaymentWithdrawn")
    return _record(net, "withdrawal", receipt, index, None, None, node, amount, args["amount"])


def _record(
    net: Net, kind: str, receipt: Receipt, log_index: int, session_id: int | None,
    task_id: int | None, node: str | None, amount: int, logged: int,
) -> PaymentRecord:
    record = PaymentRecord(
        kind, receipt.tx_hash, log_index, session_id, task_id, node, amount, logged
    )
    net.ledger.payments.append(record)
    return record
