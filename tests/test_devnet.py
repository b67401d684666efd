"""The devnet on a real anvil: deployment, the scenario and its ledger, enforced lifecycle order,
the public-ABI view of SessionV2, and a fork of a devnet chain."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from eth_utils.crypto import keccak

from devnet.anvil import Anvil
from devnet.chain import Chain, ContractAbi, TxReverted, load_abi
from devnet.deploy import COR, Deployment, deploy_all
from devnet.ledger import Ledger
from devnet.lifecycle import Net, deactivate_session, deposit, drive_task, open_session, submit_task
from devnet.scenario import run_scenario
from tests.conftest import public_abi

HASH = re.compile(r"^0x[0-9a-f]{64}$")


def _all_logs(url: str, start: int, end: int | str = "latest") -> set[tuple[str, int]]:
    with Chain(url) as chain:
        to_block = end if isinstance(end, str) else hex(end)
        logs = chain.rpc("eth_getLogs", [{"fromBlock": hex(start), "toBlock": to_block}])
    return {(log["transactionHash"], int(log["logIndex"], 16)) for log in logs}


def _ledger_logs(deployment: Deployment, ledger: Ledger | None = None) -> set[tuple[str, int]]:
    txs = deployment.txs + (ledger.txs if ledger else [])
    return {(tx.tx_hash, log.log_index) for tx in txs for log in tx.logs}


def test_scenario_drives_every_lifecycle(anvil: Anvil) -> None:
    deployment = deploy_all(anvil.url)
    ledger = run_scenario(anvil.url, deployment)
    json.dumps(ledger.to_dict())  # serialisable as promised

    statuses = {key: t.status for key, t in ledger.tasks.items()}
    assert len(statuses) == 8
    assert sorted(set(statuses.values())) == ["acked", "ended", "paid"]
    forced = [t for t in ledger.tasks.values() if t.force_ended]
    assert len(forced) == 1 and "paid" not in forced[0].steps
    assert all(t.client_reference.startswith("req-1-") for t in ledger.tasks.values())
    silent = [m for t in ledger.tasks.values() for m, s in t.miners.items()
              if s.precommit and not s.commit and t.status == "paid"]
    assert len(silent) == 1
    allocations = [p for p in ledger.payments if p.kind == "allocation"]
    for p in allocations:  # only miners that committed are paid
        assert p.task_id is not None and p.session_id is not None and p.node is not None
        assert ledger.tasks[(p.session_id, p.task_id)].miners[p.node].commit is not None
    assert {p.kind for p in ledger.payments} == {"deposit", "network", "allocation", "withdrawal"}
    assert [r.state for r in ledger.network_tasks.values()] == ["ended"] * 3
    assert [r.force_ended for r in ledger.network_tasks.values()] == [False, False, True]
    assert ledger.sessions[1].state == "deactivated" and ledger.sessions[0].state == "active"
    assert len(ledger.sessions[0].routers) == 2
    assert "removed" not in ledger.nodes.values() and "released" in ledger.nodes.values()
    # The ledger accounts for every log on the chain since the deployment started.
    assert _all_logs(anvil.url, deployment.start_block) == _ledger_logs(deployment, ledger)


def _shape(value: Any) -> Any:
    """The ledger with transaction hashes and block numbers blanked out."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in ("block_number", "tx_hash")}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    if isinstance(value, str) and HASH.match(value):
        return "<hash>"
    return value


def test_same_seed_same_ledger(anvil: Anvil) -> None:
    first = run_scenario(anvil.url, deploy_all(anvil.url), seed=7, tasks_per_session=3)
    with Anvil() as other:
        second = run_scenario(other.url, deploy_all(other.url), seed=7, tasks_per_session=3)
        third = run_scenario(other.url, deploy_all(other.url), seed=8, tasks_per_session=3)
    assert _shape(first.to_dict()) == _shape(second.to_dict())
    assert _shape(third.to_dict())["tasks"] != _shape(first.to_dict())["tasks"]


@pytest.fixture
def net(anvil: Anvil) -> Iterator[Net]:
    deployment = deploy_all(anvil.url)
    with Chain(anvil.url) as chain:
        yield Net(chain, deployment, Ledger(chain_id=deployment.chain_id))


def _reverts(reason: str, net: Net, sender: str, contract: str, fn: str, *args: Any) -> None:
    with pytest.raises(TxReverted) as info:
        net.send(sender, contract, fn, *args)
    assert info.value.reason == reason
    assert info.value.tx_hash is not None


def test_lifecycle_order_is_enforced(net: Net) -> None:
    roles = net.deployment.accounts
    router = roles.routers[0]
    session = open_session(net, owner=roles.users[0], name="s", model_identifier=3, redundant=2,
                           routers={router: "http://127.0.0.1:1"})
    a, b, c = session.ephemeral
    task = submit_task(net, session_id=0, sender=router, task_data="hi", client_reference="r-1")
    q = "SessionQueueV2"
    _reverts("not router", net, roles.outsider, q, "assignTask", 0, 0, [a, b], 3)
    _reverts("model mismatch", net, router, q, "assignTask", 0, 0, [a, b], 4)
    _reverts("miner not in session", net, router, q, "assignTask", 0, 0, [a, roles.outsider], 3)
    drive_task(net, task, router=router, miners=[a, b], stop_after="assigned")
    _reverts("not assigned", net, c, q, "ack", 0, 0)
    _reverts("not acked", net, a, q, "precommit", 0, 0, b"\x01" * 32, "0x")
    net.send(a, q, "ack", 0, 0)
    net.send(b, q, "ack", 0, 0)
    _reverts("already acked", net, a, q, "ack", 0, 0)
    _reverts("no precommits", net, router, q, "endPrecommit", 0, 0, True)
    net.send(a, q, "precommit", 0, 0, keccak(text="2"), "0x")  # then commits "1": mismatch
    _reverts("precommit not ended", net, a, q, "commit", 0, 0, "1")
    net.send(router, q, "endPrecommit", 0, 0, True)
    _reverts("not precommitted", net, b, q, "commit", 0, 0, "1")
    _reverts("hash mismatch", net, a, q, "commit", 0, 0, "1")
    _reverts("commit not ended", net, router, q, "end", 0, 0, False)
    _reverts("no commits", net, router, q, "endCommit", 0, 0, True)
    net.send(router, q, "end", 0, 0, True)  # force-end is allowed after assignment
    _reverts("task ended", net, router, q, "end", 0, 0, True)

    deactivate_session(net, session)
    _reverts("session inactive", net, router, "SessionV2", "submit", 0, 0, "x", 1, "", [], [], "r")


def test_network_round_and_payment_rules(net: Net) -> None:
    roles = net.deployment.accounts
    cog = "CognitiveV1"
    _reverts("not oracle", net, roles.outsider, cog, "request")
    net.send(roles.oracle, cog, "request")
    _reverts("not assigned creator", net, roles.oracles[1], cog, "create", "d", "s")
    net.send(roles.oracle, cog, "create", "d", "s")
    _reverts("not prepared", net, roles.oracle, cog, "start", 0)
    preparer = roles.oracles[1]
    net.send(preparer, cog, "prepare", 0, ["q"], b"", 0)
    net.send(roles.oracle, cog, "start", 0)
    selected = net.call(cog, "get", 0)[8]
    outsider = next(m for m in roles.miners if m.lower() not in {s.lower() for s in selected})
    _reverts("not selected", net, outsider, cog, "precommit", 0, b"\x00" * 32, b"", 0)
    _reverts("precommit not ended", net, selected[0], cog, "commit", 0, "x", b"", 0)
    _reverts("not committed", net, roles.oracle, cog, "end", 0, False)

    router = roles.routers[0]
    session = open_session(net, owner=roles.users[0], name="s", model_identifier=1, redundant=2,
                           routers={router: "http://127.0.0.1:1"})
    deposit(net, session_id=0, depositor=session.owner, amount=10 * COR)
    task = submit_task(net, session_id=0, sender=router, task_data="hi", client_reference="r-2")
    drive_task(net, task, router=router, miners=session.ephemeral[:2], payment=4 * COR)
    pay = "SessionPayment"
    miner = session.ephemeral[0]
    _reverts("already allocated", net, router, pay, "allocateNodePayments", 0, 0, [miner], [1])
    _reverts("exceeds network payment", net, router, pay, "allocateNodePayments", 0, 0,
             [session.ephemeral[2]], [1])
    _reverts("exceeds pending payment", net, miner, pay, "withdrawNodePayment", 3 * COR)
    _reverts("insufficient session balance", net, router, pay, "payFromSessionToNetwork", 0, 1,
             7 * COR)
    _reverts("not owner or router", net, roles.outsider, pay, "payFromSessionToNetwork", 0, 1, 1)
    # Fault injection: unchecked over-withdrawal, with a skewed event amount.
    net.send(roles.owner, pay, "setFaults", True, -5)
    receipt = net.send(miner, pay, "withdrawNodePayment", 3 * COR)
    (logged,) = net.events(receipt, pay, "NodePaymentWithdrawn")
    assert logged["amount"] == 3 * COR - 5
    balance = net.chain.call(net.deployment.addresses["CorToken"], "CorToken", "balanceOf", miner)
    assert balance == 3 * COR


def _public(name: str) -> ContractAbi:
    return ContractAbi(name, public_abi(name))


def test_public_abi_reads_sessions_and_getters(net: Net) -> None:
    public = _public("SessionV2")
    roles = net.deployment.accounts
    routers = {roles.routers[0]: "http://127.0.0.1:9001", roles.routers[1]: "http://127.0.0.1:9002"}
    open_session(net, owner=roles.users[1], name="pub", model_identifier=42, redundant=3,
                 routers=routers, dedicated=[roles.miners[5]])
    address = net.deployment.addresses["SessionV2"]

    def call(fn: str, *args: Any) -> Any:
        function = public.function(fn)
        tx = {"to": address, "data": function.encode_call(args)}
        return function.decode_output(net.chain.rpc("eth_call", [tx, "latest"]))

    session = call("getSession", 0)
    assert session[0] == 0 and session[2] == "pub" and session[4] == 1  # id, name, state active
    assert session[7].lower() == roles.users[1]
    assert [a.lower() for a in session[9]] == [roles.miners[5]]  # dedicatedNodes
    assert session[11] == 3 and session[18] == 42  # redundant, modelIdentifier
    assert dict(zip([a.lower() for a in session[16]], session[15], strict=True)) == routers
    addresses = net.deployment.addresses
    assert call("getSessionQueueAddress").lower() == addresses["SessionQueueV2"]
    assert call("getSessionPaymentAddress").lower() == addresses["SessionPayment"]
    assert call("getNodePoolAddress").lower() == addresses["NodePool"]


def test_fork_sees_parent_history_and_its_own_blocks(anvil: Anvil) -> None:
    deployment = deploy_all(anvil.url)
    run_scenario(anvil.url, deployment, sessions=2, tasks_per_session=1)  # session 0 stays active
    with Chain(anvil.url) as parent_chain:
        fork_block = parent_chain.block_number()
    parent_logs = _all_logs(anvil.url, deployment.start_block)
    with Anvil(fork_url=anvil.url, fork_block=fork_block) as fork:
        assert _all_logs(fork.url, deployment.start_block, fork_block) == parent_logs
        with Chain(fork.url) as chain:
            net = Net(chain, deployment, Ledger(chain_id=deployment.chain_id))
            router = deployment.accounts.routers[0]
            task = submit_task(net, session_id=0, sender=router, task_data="on fork",
                               client_reference="fork-1")
        (tx,) = net.ledger.txs
        assert tx.block_number == fork_block + 1 and task.task_id == 1
        new = _all_logs(fork.url, fork_block + 1)
        assert new == {(tx.tx_hash, log.log_index) for log in tx.logs} and len(new) == 2
    with Chain(anvil.url) as parent_chain:  # the fork's block never reached the parent
        assert parent_chain.block_number() == fork_block


def test_bulk_emitter_logs_real_signatures(anvil: Anvil) -> None:
    with Chain(anvil.url) as chain:
        owner = chain.accounts()[0]
        address, _ = chain.deploy(owner, "BulkEmitter")
        receipt = chain.transact(
            owner, address, "BulkEmitter", "emitTaskLifecycles", 7, 100, 50, owner, COR
        )
    assert len(receipt.logs) == 350
    queue = _public("SessionQueueV2").events
    topics = [log.topic0 for log in receipt.logs[:7]]
    assert topics[:6] == [queue[e].topic0 for e in (
        "TaskQueued", "TaskAssigned", "TaskAcked", "TaskPrecommitted", "TaskCommitted", "TaskEnded"
    )]
    allocated = load_abi("SessionPayment").events["NodePaymentAllocated"]
    assert topics[6] == allocated.topic0
    assert allocated.decode(receipt.logs[-1])["taskId"] == 149
