"""Devnet scenarios that break each payout-audit rule, on top of a :func:`run_scenario` history.

:func:`break_rules` injects exactly one kind of violation per rule into the first active
session of a ledger and returns the natural key of every violation (the auditor's finding
ids hash these keys), so a test can require the auditor to find exactly these and nothing
else. It uses ``SessionPayment.setFaults`` (owner only) for what the contract would refuse, and
turns the faults off again before returning:

- allocation_without_commit: a task where one miner never commits; the network allocates to
  that miner and to the outsider account (never assigned);
- duplicate_allocation: one committer allocated twice for the same task (checks disabled);
- ended_without_allocation: a task that ends normally and is never paid (plus a force-ended
  task, also unpaid, that must *not* be reported), then ``mine_blocks`` empty blocks;
- over_allocation: 1 COR paid to the network, 20 COR allocated (checks disabled): a task- and
  a session-scope finding;
- over_withdrawal: the outsider withdraws more than its pending 1 COR (checks disabled);
- amount_mismatch: a deposit and a withdrawal whose events log ``skew`` wei more than moved.

:func:`deploy_native_payment` deploys a tiny contract (hand-assembled, below) that logs
SessionPayment's ``SessionDeposited`` for native value sent to it, so the audit's native-token
path (balance change net of gas) can be exercised on anvil.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devnet.abi import load_abi
from devnet.chain import Chain, Receipt
from devnet.deploy import COR, Deployment
from devnet.ledger import Ledger, PaymentRecord, TaskRecord
from devnet.lifecycle import Net, deposit, drive_task, submit_task, withdraw
from devnet.scenario import PROMPTS

SKEW = 7  # wei added to the logged amount by the amount_mismatch scenario
RULES = ("allocation_without_commit", "duplicate_allocation", "ended_without_allocation",
         "over_allocation", "over_withdrawal", "amount_mismatch")


@dataclass
class Broken:
    """Natural keys of the injected violations, per rule (as :mod:`api.audit` keys them)."""

    keys: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: {r: [] for r in RULES})
    session_id: int = 0
    force_ended: tuple[int, int] = (0, 0)  # an unpaid force-ended task: must stay silent


def break_rules(url: str, deployment: Deployment, ledger: Ledger, *, skew: int = SKEW,
                mine_blocks: int = 60) -> Broken:
    """Inject one violation per audit rule (see the module docstring) after ``ledger``'s run
    (which needs an active session with three ephemeral nodes: run_scenario's session 0)."""
    with Chain(url) as chain:
        net = Net(chain, deployment, ledger)
        return _break(net, skew, mine_blocks)


def _break(net: Net, skew: int, mine_blocks: int) -> Broken:
    roles = net.deployment.accounts
    owner, outsider = roles.owner, roles.outsider
    session = next(s for s in net.ledger.sessions.values() if s.state == "active")
    out = Broken(session_id=session.session_id)
    keys = out.keys
    nodes = sorted(session.ephemeral)[:3]
    m0, m1, m2 = nodes

    def task(name: str, **kw: Any) -> TaskRecord:
        t = submit_task(net, session_id=session.session_id, sender=next(iter(session.routers)),
                        task_data=PROMPTS[len(net.ledger.tasks) % len(PROMPTS)],
                        client_reference=f"audit-{name}")
        return drive_task(net, t, router=next(iter(session.routers)), **kw)

    # allocation_without_commit: m2 never commits; the outsider was never assigned.
    a = task("no-commit", miners=[m0, m1, m2], skip_commit={m2})
    network_payment(net, a, owner, 4 * COR)
    recs = allocate(net, a, owner, [m0, m1, m2, outsider], [COR] * 4)
    keys["allocation_without_commit"] += [(r.tx_hash, r.log_index) for r in recs[2:]]

    faults(net, True, 0)
    # duplicate_allocation: m0 twice for one task.
    b = task("duplicate", miners=[m0, m1])
    network_payment(net, b, owner, 4 * COR)
    allocate(net, b, owner, [m0, m1], [COR, COR])
    (repeat,) = allocate(net, b, owner, [m0], [COR])
    keys["duplicate_allocation"].append((repeat.tx_hash, repeat.log_index))
    # over_allocation: 20 COR allocated against 1 COR paid to the network.
    e = task("over-allocation", miners=[m0, m1])
    network_payment(net, e, owner, COR)
    allocate(net, e, owner, [m0, m1], [10 * COR, 10 * COR])
    keys["over_allocation"] += [("task", e.session_id, e.task_id), ("session", e.session_id)]
    # over_withdrawal: the outsider has 1 COR pending and takes 3.
    w = withdraw(net, node=outsider, amount=3 * COR)
    keys["over_withdrawal"].append((w.tx_hash, w.log_index))

    faults(net, False, skew)
    d = deposit(net, session_id=session.session_id, depositor=session.owner, amount=5 * COR)
    w = withdraw(net, node=m0, amount=COR)
    keys["amount_mismatch"] += [(d.tx_hash, "deposit"), (w.tx_hash, "withdrawal")]
    faults(net, False, 0)

    # ended_without_allocation: ended normally, never paid; a force-ended one stays silent.
    c = task("unpaid", miners=[m1, m2])
    keys["ended_without_allocation"].append((c.session_id, c.task_id))
    f = task("force-ended", miners=[m1, m2], force_end_after="acked")
    out.force_ended = (f.session_id, f.task_id)
    if mine_blocks:
        net.chain.rpc("anvil_mine", [hex(mine_blocks)])
    return out


def faults(net: Net, disable_checks: bool, event_skew: int) -> None:
    """SessionPayment.setFaults from the contract owner."""
    net.send(net.deployment.accounts.owner, "SessionPayment", "setFaults", disable_checks,
             event_skew)


def network_payment(net: Net, task: TaskRecord, payer: str, amount: int) -> PaymentRecord:
    sid, tid = task.session_id, task.task_id
    receipt = net.send(payer, "SessionPayment", "payFromSessionToNetwork", sid, tid, amount)
    ((index, args),) = net.logs(receipt, "SessionPayment", "NetworkPaid")
    return _record(net, "network", receipt, index, task, None, amount, args["amount"])


def allocate(net: Net, task: TaskRecord, payer: str, nodes: list[str], amounts: list[int]
             ) -> list[PaymentRecord]:
    """allocateNodePayments with any nodes and amounts (pay_task only pays committers)."""
    receipt = net.send(payer, "SessionPayment", "allocateNodePayments", task.session_id,
                       task.task_id, nodes, amounts)
    logs = net.logs(receipt, "SessionPayment", "NodePaymentAllocated")
    task.reach("paid", receipt.tx_hash)
    return [_record(net, "allocation", receipt, index, task, args["node"], amount, args["amount"])
            for (index, args), amount in zip(logs, amounts, strict=True)]


def _record(net: Net, kind: str, receipt: Receipt, index: int, task: TaskRecord,
            node: str | None, amount: int, logged: int) -> PaymentRecord:
    record = PaymentRecord(kind, receipt.tx_hash, index, task.session_id, task.task_id, node,
                           amount, logged)
    net.ledger.payments.append(record)
    return record


# ---- native-token payment stub ---------------------------------------------------------------
# Runtime: amount = callvalue + calldata[32:64] (mod 2**256, so a negative skew works); then
# LOG3(mem[0:32] = amount, topic0 = SessionDeposited, topic1 = calldata[0:32] (session id),
# topic2 = caller); keeps the value.
#   CALLVALUE PUSH1 32 CALLDATALOAD ADD PUSH1 0 MSTORE CALLER PUSH1 0 CALLDATALOAD
#   PUSH32 topic0 PUSH1 32 PUSH1 0 LOG3 STOP
# Init: PUSH1 len DUP1 PUSH1 11 PUSH1 0 CODECOPY PUSH1 0 RETURN (copies the runtime out).


def native_payment_code() -> str:
    topic0 = load_abi("SessionPayment").events["SessionDeposited"].topic0.removeprefix("0x")
    head = "34" "6020" "35" "01" "6000" "52" "33" "6000" "35" "7f"  # ... PUSH32
    runtime = head + topic0 + "6020" "6000" "a3" "00"
    init = f"60{len(runtime) // 2:02x}80600b6000396000f3"
    return "0x" + init + runtime


def deploy_native_payment(chain: Chain, sender: str) -> str:
    """Deploy the stub; its address (index it as the chain's SessionPayment)."""
    receipt = chain.send({"from": sender, "data": native_payment_code()}, "deploy NativePayment")
    assert receipt.contract_address is not None
    return receipt.contract_address


def native_deposit(chain: Chain, stub: str, sender: str, *, session_id: int, value: int,
                   skew: int = 0) -> Receipt:
    """Send ``value`` wei to the stub; it logs SessionDeposited(session_id, sender, value+skew)."""
    data = session_id.to_bytes(32, "big") + (skew % 2**256).to_bytes(32, "big")
    return chain.send({"from": sender, "to": stub, "data": "0x" + data.hex(), "value": hex(value)},
                      "NativePayment.deposit")
