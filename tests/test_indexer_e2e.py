"""The indexer end to end against a real anvil devnet, on SQLite and PostgreSQL.

The devnet driver records what it did (the ledger); the index must hold exactly that.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import SQLModel

from devnet.anvil import Anvil
from devnet.chain import Chain
from devnet.deploy import Deployment, deploy_all
from devnet.ledger import Ledger
from devnet.lifecycle import Net, drive_task, submit_task
from devnet.scenario import run_scenario
from indexer.runner import open_store
from tests.indexing import check_lifecycle_copies, devnet_settings, dump, index

CID = 31337


def indexed_logs(dep: Deployment, ledger: Ledger) -> set[tuple[str, int]]:
    """Every log the driver saw from a contract corlens indexes."""
    indexed = {dep.addresses[n] for n in ("SessionV2", "SessionQueueV2", "CognitiveV1",
                                          "SessionPayment", "NodePool")}
    return {(tx.tx_hash, lg.log_index) for tx in [*dep.txs, *ledger.txs] for lg in tx.logs
            if lg.address in indexed and tx.block_number >= dep.start_block}


def rows(engine: sa.Engine, table: str) -> list[Any]:
    t = SQLModel.metadata.tables[table]
    with engine.connect() as conn:
        return list(conn.execute(sa.select(t).where(t.c.chain_id == CID)).mappings())


def check_against_ledger(engine: sa.Engine, dep: Deployment, ledger: Ledger) -> None:
    events = rows(engine, "event")
    got = [(r["tx_hash"], r["log_index"]) for r in events]
    assert len(got) == len(set(got)), "an event is stored twice"
    assert set(got) == indexed_logs(dep, ledger)

    tasks = {(r["session_id"], r["task_id"]): r for r in rows(engine, "task")}
    steps: dict[tuple[int, int], dict[str, str]] = {}
    for r in rows(engine, "task_step"):
        steps.setdefault((r["session_id"], r["task_id"]), {})[r["step"]] = r["tx_hash"]
    senders = {tx.tx_hash: tx.sender for tx in ledger.txs}
    allocs = {(p.tx_hash, p.log_index): p.node for p in ledger.payments}
    for r in rows(engine, "task_step"):
        t = ledger.tasks[(r["session_id"], r["task_id"])]
        if r["step"] == "acked":  # the log names the miner
            want = next(a for a, m in t.miners.items() if m.ack == r["tx_hash"])
        elif r["step"] == "paid":  # the log names the node paid
            want = allocs[(r["tx_hash"], r["log_index"])]
        else:  # the router or client that sent the transaction
            want = senders[r["tx_hash"]]
        assert r["actor"] == want, (r["step"], r["tx_hash"])
    miners: dict[tuple[int, int], dict[str, tuple[Any, ...]]] = {}
    for r in rows(engine, "task_miner"):
        miners.setdefault((r["session_id"], r["task_id"]), {})[r["miner"]] = (
            r["ack_tx"], r["precommit_tx"], r["commit_tx"])
    assert set(tasks) == set(ledger.tasks)
    for key, t in ledger.tasks.items():
        row = tasks[key]
        assert (row["status"], row["client_reference"], row["global_id"], row["force_ended"]) \
            == (t.status, t.client_reference, t.global_id, t.force_ended), key
        db_steps = {k: v for k, v in steps[key].items() if k != "acked"}
        assert db_steps == t.steps, key
        if any(m.ack for m in t.miners.values()):
            assert "acked" in steps[key]
        assert miners.get(key, {}) == {a: (m.ack, m.precommit, m.commit)
                                       for a, m in t.miners.items()}, key

    sessions = {r["session_id"]: r for r in rows(engine, "session")}
    assert set(sessions) == set(ledger.sessions)
    for sid, s in ledger.sessions.items():
        r = sessions[sid]
        assert r["owner"] == s.owner and r["model_identifier"] == str(s.model_identifier)
        assert r["active"] == (s.state == "active")
        assert r["state"] == (1 if s.state == "active" else 2)
        assert {x["address"]: x["info"] for x in r["routers"]} == s.routers
        assert sorted(r["dedicated_nodes"]) == sorted(s.dedicated)
        assert sorted(r["ephemeral_nodes"]) == sorted(s.ephemeral)

    rsteps: dict[int, dict[str, str]] = {}
    parts: dict[int, dict[str, dict[str, str]]] = {}
    for r in rows(engine, "network_task_step"):
        if r["actor"]:
            parts.setdefault(r["round_id"], {}).setdefault(r["actor"], {})[r["step"]] = \
                r["tx_hash"]
        elif r["step"] not in ("request_assigned", "prepare_assigned"):
            rsteps.setdefault(r["round_id"], {})[r["step"]] = r["tx_hash"]
    rounds = {r["round_id"]: r for r in rows(engine, "network_task")}
    assert set(rounds) == set(ledger.network_tasks)
    for rid, nt in ledger.network_tasks.items():
        assert rsteps[rid] == nt.steps, rid
        assert rounds[rid]["creator"] == nt.creator
        want = {a: {k: v for k, v in (("precommit", p.precommit), ("commit", p.commit)) if v}
                for a, p in nt.participants.items()}
        assert parts.get(rid, {}) == \
            {a: v for a, v in want.items() if v}, rid

    pays = {(r["kind"], r["tx_hash"], r["log_index"], r["session_id"], r["task_id"], r["node"],
             int(r["amount"])) for r in rows(engine, "payment")}
    assert pays == {(p.kind, p.tx_hash, p.log_index, p.session_id, p.task_id, p.node,
                     p.logged_amount) for p in ledger.payments}

    state_name = {"added": "available", "reserved": "reserved", "ephemeral": "ephemeral",
                  "released": "released", "removed": "removed"}
    nodes = {r["address"]: state_name[r["pool_state"]] for r in rows(engine, "node")}
    assert nodes == ledger.nodes

    (st,) = rows(engine, "chain_state")
    assert st["events_indexed"] == len(got) and st["malformed_logs"] == 0
    assert check_lifecycle_copies(engine) == len(ledger.tasks)


def test_scenario_indexed_end_to_end(anvil: Anvil, store_url: str) -> None:
    dep = deploy_all(anvil.url)
    ledger = run_scenario(anvil.url, dep, seed=3)
    settings = devnet_settings(anvil.url, dep.addresses, store_url, start_block=dep.start_block)
    index(settings)
    store = open_store(settings)
    try:
        check_against_ledger(store.engine, dep, ledger)
        before = dump(store.engine)
        # Re-running the whole range changes nothing.
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE chain_state SET cursor_block = :b, cursor_hash = NULL"),
                         {"b": dep.start_block - 1})
        index(settings, store)
        assert dump(store.engine) == before
        (st,) = rows(store.engine, "chain_state")
        assert st["events_indexed"] == len(before["event"])
    finally:
        store.engine.dispose()


def test_follow_picks_up_new_activity(anvil: Anvil, tmp_path: Any) -> None:
    """Index, then more tasks arrive: the next run indexes exactly the new ones."""
    dep = deploy_all(anvil.url)
    ledger = run_scenario(anvil.url, dep, seed=5, sessions=2, tasks_per_session=2)
    settings = devnet_settings(anvil.url, dep.addresses, f"sqlite:///{tmp_path}/f.db",
                               start_block=dep.start_block)
    index(settings)
    with Chain(anvil.url) as chain:
        net = Net(chain, dep, ledger)
        s = next(x for x in ledger.sessions.values() if x.state == "active")
        t = submit_task(net, session_id=s.session_id, sender=s.owner, task_data="more",
                        client_reference="req-late")
        drive_task(net, t, router=next(iter(s.routers)), miners=(s.dedicated + s.ephemeral)[:2],
                   payment=2 * 10**18)
    index(settings)
    store = open_store(settings)
    try:
        check_against_ledger(store.engine, dep, ledger)
    finally:
        store.engine.dispose()
