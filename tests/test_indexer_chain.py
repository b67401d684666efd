"""Reorgs, faults, finality, forks and bad logs, each against a real anvil.

Every scenario ends by comparing the index with a fresh index of the canonical chain (or of the
same chain without faults): row for row, the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from devnet.anvil import Anvil
from devnet.chain import Chain
from devnet.deploy import Deployment, deploy_all
from devnet.ledger import Ledger
from devnet.lifecycle import Net, drive_task, submit_task
from devnet.scenario import run_scenario
from indexer.abi import abi_path, events_of, load_abi
from indexer.runner import open_store
from indexer.sync import Reorged, Waiting
from tests.conftest import collector_off
from tests.faultproxy import FaultProxy, Faults
from tests.indexing import check_lifecycle_copies, devnet_settings, dump, index, step
from tests.test_indexer_e2e import check_against_ledger


def scenario(url: str, seed: int = 2) -> tuple[Deployment, Ledger]:
    dep = deploy_all(url)
    return dep, run_scenario(url, dep, seed=seed, sessions=2, tasks_per_session=3)


def more_tasks(url: str, dep: Deployment, ledger: Ledger, tag: str, n: int = 2) -> None:
    """Submit and drive ``n`` more tasks on an active session."""
    with Chain(url) as chain:
        net = Net(chain, dep, ledger)
        s = next(x for x in ledger.sessions.values() if x.state == "active")
        for i in range(n):
            t = submit_task(net, session_id=s.session_id, sender=s.owner, task_data=f"{tag}{i}",
                            client_reference=f"{tag}-{i}")
            drive_task(net, t, router=next(iter(s.routers)),
                       miners=(s.dedicated + s.ephemeral)[:2], payment=10**18)


def fresh_dump(url: str, dep: Deployment, tmp: Path, name: str) -> dict[str, Any]:
    settings = devnet_settings(url, dep.addresses, f"sqlite:///{tmp}/{name}.db",
                               start_block=dep.start_block)
    index(settings)
    store = open_store(settings)
    try:
        return dump(store.engine)
    finally:
        store.engine.dispose()


def follow_until_waiting(settings: Any, store: Any) -> list[Any]:
    outs: list[Any] = []
    for _ in range(50):
        (out,) = step(settings, store)
        outs.append(out)
        if isinstance(out, Waiting):
            return outs
    raise AssertionError(f"never caught up: {outs[-3:]}")


@pytest.mark.parametrize("depth", [1, 3, 8])
def test_anvil_reorg_rolls_back_to_canonical(anvil: Anvil, store_url: str, tmp_path: Path,
                                             depth: int) -> None:
    dep, ledger = scenario(anvil.url)
    settings = devnet_settings(anvil.url, dep.addresses, store_url, start_block=dep.start_block)
    store = open_store(settings)
    try:
        index(settings, store)
        before = dump(store.engine)
        anvil.rpc("anvil_reorg", [depth, []])
        outs = follow_until_waiting(settings, store)
        assert isinstance(outs[0], Reorged) and outs[0].removed_events > 0
        after = dump(store.engine)
        assert after != before
        assert after == fresh_dump(anvil.url, dep, tmp_path, "fresh")
        assert check_lifecycle_copies(store.engine) > 0
    finally:
        store.engine.dispose()


def test_snapshot_revert_with_other_transactions(anvil: Anvil, store_url: str,
                                                 tmp_path: Path) -> None:
    dep, ledger = scenario(anvil.url)
    snap = anvil.rpc("evm_snapshot")
    settings = devnet_settings(anvil.url, dep.addresses, store_url, start_block=dep.start_block)
    store = open_store(settings)
    try:
        more_tasks(anvil.url, dep, ledger, "a", n=2)
        index(settings, store)
        assert anvil.rpc("evm_revert", [snap])
        more_tasks(anvil.url, dep, ledger, "b", n=3)  # a longer, different history
        outs = follow_until_waiting(settings, store)
        assert any(isinstance(o, Reorged) for o in outs)
        got = dump(store.engine)
        assert got == fresh_dump(anvil.url, dep, tmp_path, "fresh")
        refs = {r for r in got["task"] if "'a-0'" in r or "'b-0'" in r}
        assert len(refs) == 1 and "'b-0'" in next(iter(refs))
    finally:
        store.engine.dispose()


def test_reorg_deeper_than_allowed_stops_with_clear_error(anvil: Anvil, tmp_path: Path) -> None:
    from indexer.errors import ReorgTooDeep

    dep, _ = scenario(anvil.url)
    settings = devnet_settings(anvil.url, dep.addresses, f"sqlite:///{tmp_path}/d.db",
                               start_block=dep.start_block, max_reorg_depth=4)
    store = open_store(settings)
    try:
        index(settings, store)
        anvil.rpc("anvil_reorg", [30, []])
        with pytest.raises(ReorgTooDeep, match="deeper than the allowed 4"):
            step(settings, store)
    finally:
        store.engine.dispose()


def test_fault_proxy_gives_the_same_rows(anvil: Anvil, tmp_path: Path) -> None:
    dep, _ = scenario(anvil.url)
    faults = Faults(http_429_every=5, http_502_every=9, truncate_every=7, timeout_every=17,
                    delay=1.0, max_log_blocks=20)
    # The client's timeout stays under the proxy's 1.0 s hold, so the timeout fault is seen as
    # one; 0.5 s was too short for plain answers on a loaded machine (a CI emulation beside a
    # benchmark ran out of retries).
    with FaultProxy(anvil.url, faults) as proxy:
        settings = devnet_settings(proxy.url, dep.addresses, f"sqlite:///{tmp_path}/p.db",
                                   start_block=dep.start_block, rpc_timeout=0.9)
        index(settings)
        counts = dict(proxy.counts)
    for kind in ("http_429", "http_502", "truncated", "timeout", "range_refused"):
        assert counts.get(kind, 0) > 0, f"fault {kind} never fired: {counts}"
    store = open_store(settings)
    try:
        assert dump(store.engine) == fresh_dump(anvil.url, dep, tmp_path, "direct")
    finally:
        store.engine.dispose()


def test_finality_promotion_follows_tags(tmp_path: Path) -> None:
    with Anvil(slots_in_an_epoch=2) as node:  # safe = head - 2, finalized = head - 4
        dep, _ = scenario(node.url)
        settings = devnet_settings(node.url, dep.addresses, f"sqlite:///{tmp_path}/f.db",
                                   start_block=dep.start_block)
        store = open_store(settings)
        try:
            index(settings, store)

            def finality() -> dict[int, str]:
                with store.engine.connect() as conn:
                    return dict(conn.execute(sa.text("SELECT number, finality FROM block")).all())

            head = int(node.rpc("eth_blockNumber"), 16)
            f = finality()
            assert f[head] == "latest" and f[head - 2] == "safe"
            assert all(v == "finalized" for n, v in f.items() if n <= head - 4)
            assert all(v == "latest" for n, v in f.items() if n > head - 2)
            node.rpc("anvil_mine", ["0xa"])
            follow_until_waiting(settings, store)
            assert all(v == "finalized" for n, v in finality().items() if n <= head + 6)
            with store.engine.connect() as conn:
                st = conn.execute(sa.text("SELECT safe_block, finalized_block FROM chain_state")
                                  ).one()
            assert tuple(st) == (head + 8, head + 6)
        finally:
            store.engine.dispose()


def test_index_a_fork_of_another_chain(tmp_path: Path) -> None:
    """The local anvil-fork test: history before the fork block comes from the parent."""
    with Anvil() as parent:
        dep, ledger = scenario(parent.url)
        fork_block = int(parent.rpc("eth_blockNumber"), 16)
        with Anvil(fork_url=parent.url, fork_block=fork_block) as child:
            more_tasks(child.url, dep, ledger, "fork", n=2)
            settings = devnet_settings(child.url, dep.addresses, f"sqlite:///{tmp_path}/k.db",
                                       start_block=dep.start_block)
            index(settings)
            store = open_store(settings)
            try:
                check_against_ledger(store.engine, dep, ledger)
                with store.engine.connect() as conn:
                    lo, hi = conn.execute(sa.text("SELECT MIN(block_number), MAX(block_number) "
                                                  "FROM event")).one()
                assert lo <= fork_block < hi
            finally:
                store.engine.dispose()


def _log1(topic: str) -> str:
    return "7f" + topic[2:] + "60006000a1"


def test_malformed_and_unknown_logs_are_recorded_and_skipped(anvil: Anvil, tmp_path: Path
                                                            ) -> None:
    dep, _ = scenario(anvil.url)
    ended = next(s for s in events_of("CognitiveV1", load_abi(abi_path("CognitiveV1", None)))
                 if s.name == "SessionEnded")
    # A contract that emits CognitiveV1's SessionEnded topic without its indexed id (malformed)
    # and a topic nobody knows.
    rogue = "0x" + "c0" * 20
    anvil.rpc("anvil_setCode", [rogue, "0x" + _log1(ended.topic0) + _log1("0x" + "ee" * 32)
                                + "00"])
    sender = anvil.rpc("eth_accounts")[0]
    anvil.rpc("eth_sendTransaction", [{"from": sender, "to": rogue, "gas": "0x30000"}])
    addresses = dict(dep.addresses, CognitiveV1=rogue)
    settings = devnet_settings(anvil.url, addresses, f"sqlite:///{tmp_path}/m.db",
                               start_block=dep.start_block)
    index(settings)
    store = open_store(settings)
    try:
        with store.engine.connect() as conn:
            bad = conn.execute(sa.text("SELECT event, reason FROM malformed_log")).all()
            st = conn.execute(sa.text("SELECT cursor_block, unknown_logs, malformed_logs "
                                      "FROM chain_state")).one()
        assert [tuple(b) for b in bad] == [("SessionEnded", "expected 2 topics, got 1")]
        head = int(anvil.rpc("eth_blockNumber"), 16)
        assert st.cursor_block == head and st.malformed_logs == 1 and st.unknown_logs == 1
    finally:
        store.engine.dispose()


def test_depth_finality_when_tags_are_not_used(anvil: Anvil, tmp_path: Path) -> None:
    dep, _ = scenario(anvil.url)
    settings = devnet_settings(anvil.url, dep.addresses, f"sqlite:///{tmp_path}/z.db",
                               start_block=dep.start_block, finality="depth", confirmations=10)
    store = open_store(settings)
    try:
        index(settings, store)
        head = int(anvil.rpc("eth_blockNumber"), 16)
        with store.engine.connect() as conn:
            st = conn.execute(sa.text("SELECT safe_block, finalized_block FROM chain_state")).one()
            fin = dict(conn.execute(sa.text("SELECT number, finality FROM block")).all())
        assert tuple(st) == (head - 5, head - 10)
        assert fin[head] == "latest" and fin[head - 5] == "safe" and fin[head - 10] == "finalized"
    finally:
        store.engine.dispose()


def test_step_actors_from_receipts_and_from_transactions(anvil: Anvil, tmp_path: Path) -> None:
    """The sender behind a step that names no actor: read from the receipt of a transaction
    that left few logs, from the transaction itself when it left many (a receipt carries them
    all). Either way the actor is the transaction's sender."""
    import asyncio

    from indexer.prepare import RECEIPT_MAX_LOGS
    from indexer.rpc import RpcClient
    from indexer.sync import ChainIndexer

    with Chain(anvil.url) as chain:
        accounts = chain.accounts()
        client, router = accounts[1], accounts[2]
        address, _ = chain.deploy(accounts[0], "BulkEmitter")
        chain.transact(client, address, "BulkEmitter", "emitTaskSubmitted", 7, 1, 5, "ref")
        many = chain.transact(router, address, "BulkEmitter", "emitTaskLifecycles", 7, 1, 5,
                              accounts[3], 10**18)
    assert len(many.logs) > RECEIPT_MAX_LOGS >= 3
    # BulkEmitter emits under the real signatures of these contracts.
    contracts = {n: {"address": address}
                 for n in ("SessionV2", "SessionQueueV2", "SessionPayment", "NodePool")}
    settings = devnet_settings(anvil.url, {"SessionV2": address, "CognitiveV1": address},
                               f"sqlite:///{tmp_path}/a.db", contracts=contracts)
    store = open_store(settings)

    async def run() -> dict[str, int]:
        c = settings.chains[0]
        async with RpcClient(c.rpc_urls, timeout=c.rpc_timeout) as rpc:
            ix = ChainIndexer(c, store, rpc)
            await ix.setup()
            await ix.backfill()
            return rpc.stats().requests

    try:
        requests = asyncio.run(run())
        with store.engine.connect() as conn:
            actors = {(t, s): a for t, s, a in conn.execute(sa.text(
                "SELECT task_id, step, actor FROM task_step"))}
    finally:
        store.engine.dispose()
    assert requests.get("eth_getTransactionReceipt") == 1  # the submissions
    assert requests.get("eth_getTransactionByHash") == 1  # the lifecycle batch
    for task in range(1, 6):
        assert actors[task, "submitted"] == client.lower()
        for s in ("queued", "assigned", "ended"):
            assert actors[task, s] == router.lower()
        assert actors[task, "acked"] == accounts[3].lower()  # named by the event


def test_backfill_reports_progress_after_each_committed_range(anvil: Anvil, tmp_path: Path
                                                              ) -> None:
    """One pipeline over many ranges, written by the writer process (batches staged ahead of
    their turn): progress after each committed range, blocks and events growing, each state
    said once, ending at the head with every event counted and the rows as a fresh index."""
    import asyncio

    from indexer.rpc import RpcClient
    from indexer.sync import ChainIndexer, Progress
    from indexer.writer_proc import ProcessWriter

    dep, _ = scenario(anvil.url)
    settings = devnet_settings(anvil.url, dep.addresses, f"sqlite:///{tmp_path}/p.db",
                               start_block=dep.start_block, max_block_range=10)
    store = open_store(settings)
    seen: list[Progress] = []

    async def run() -> Progress:
        c = settings.chains[0]
        async with RpcClient(c.rpc_urls, timeout=c.rpc_timeout) as rpc:
            with ProcessWriter(settings.database_url, early=store) as writer:
                ix = ChainIndexer(c, store, rpc, writer=writer)
                await ix.setup()
                return await ix.backfill(seen.append)

    try:
        final = asyncio.run(run())
        with store.engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*) FROM event")).scalar_one()
        assert check_lifecycle_copies(store.engine) > 0
        assert dump(store.engine) == fresh_dump(anvil.url, dep, tmp_path, "fresh")
    finally:
        store.engine.dispose()
    head = int(anvil.rpc("eth_blockNumber"), 16)
    assert len(seen) > (head - dep.start_block) // 10 > 2  # one per range of 10 blocks
    states = [(p.cursor, p.events) for p in seen]
    assert len(set(states)) == len(states)
    assert all(a[0] < b[0] and a[1] <= b[1] for a, b in zip(states, states[1:], strict=False))
    assert states[-1] == (head, stored) and final.cursor == head and final.eta_s == 0


def test_a_backfill_leaves_no_answers_to_the_cycle_collector(anvil: Anvil, tmp_path: Path
                                                            ) -> None:
    """The indexing processes run the cycle collector rarely (indexer.gc_tuning), so whatever a
    range leaves in reference cycles stays in memory until it runs: a backfill's memory then
    grows with its length. With the collector off in this process (the sync side; the writer
    process's own collector is not seen from here), a whole backfill of many ranges leaves no
    HTTP response, no range, no event and no raw log or header in cycles."""
    import gc

    import httpx

    from indexer.decode import DecodedEvent
    from indexer.store import Batch

    dep, _ = scenario(anvil.url)
    settings = devnet_settings(anvil.url, dep.addresses, f"sqlite:///{tmp_path}/g.db",
                               start_block=dep.start_block, max_block_range=10)
    with collector_off():
        progress = index(settings)
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            kept = [type(o).__name__ for o in gc.garbage
                    if isinstance(o, httpx.Response | httpx.Request | Batch | DecodedEvent)]
            # Raw logs and block headers as parsed from the node's answers.
            kept += ["log" if "logIndex" in o else "header" for o in gc.garbage
                     if isinstance(o, dict) and ("logIndex" in o or "parentHash" in o)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert progress.events > 50 and progress.blocks_done > 30  # many ranges of 10 blocks
    assert not kept, f"left to the cycle collector: {sorted(set(kept))} ({len(kept)} objects)"


def test_an_in_memory_database_is_written_on_the_loops_thread(anvil: Anvil, tmp_path: Path
                                                              ) -> None:
    """An in-memory database is one connection shared by every user (StaticPool): the ranges
    are committed on the event loop's own thread, so that with several chains following at
    once no read or write of another falls inside one of their transactions. The rows equal
    those of a file database."""
    import threading

    dep, _ = scenario(anvil.url)
    memory = devnet_settings(anvil.url, dep.addresses, "sqlite://",
                             start_block=dep.start_block, max_block_range=7)
    store = open_store(memory)
    threads: set[int] = set()
    write = store.write_batch

    def on_which_thread(batch: Any) -> int:
        threads.add(threading.get_ident())
        return write(batch)

    store.write_batch = on_which_thread  # type: ignore[method-assign]
    try:
        index(memory, store)
        got = dump(store.engine)
    finally:
        store.engine.dispose()
    assert threads == {threading.get_ident()}
    on_disk = devnet_settings(anvil.url, dep.addresses, f"sqlite:///{tmp_path}/f.db",
                              start_block=dep.start_block, max_block_range=7)
    file_store = open_store(on_disk)
    try:
        index(on_disk, file_store)
        assert got == dump(file_store.engine) and got["event"]
    finally:
        file_store.engine.dispose()


def _series(text: str) -> tuple[dict[str, str], dict[str, float]]:
    """(metric name -> type, series -> value) of a Prometheus text page."""
    types = {ln.split()[2]: ln.split()[3] for ln in text.splitlines() if ln.startswith("# TYPE")}
    values = {
        ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
        for ln in text.splitlines()
        if ln and not ln.startswith("#")
    }
    return types, values


def test_a_reorg_lowers_no_counter_in_metrics(anvil: Anvil, tmp_path: Path) -> None:
    """A reorg deletes the events of the blocks it drops: the events series falls, so it is a
    gauge; every series /metrics declares a counter stays where it was or grows."""
    from fastapi.testclient import TestClient

    from api.compose import build_app

    dep, _ = scenario(anvil.url)
    settings = devnet_settings(anvil.url, dep.addresses, f"sqlite:///{tmp_path}/m.db",
                               start_block=dep.start_block)
    store = open_store(settings)
    try:
        index(settings, store)
        with TestClient(build_app(settings, run_indexer=False)) as client:
            types, before = _series(client.get("/metrics").text)
            anvil.rpc("anvil_reorg", [3, []])
            outs = follow_until_waiting(settings, store)
            assert isinstance(outs[0], Reorged) and outs[0].removed_events > 0
            _, after = _series(client.get("/metrics").text)
        assert after['corlens_indexer_reorgs_total{chain="local"}'] == 1
        counters = {n for n, t in types.items() if t == "counter"}
        fell = [s for s, v in before.items()
                if s.split("{")[0] in counters and after.get(s, 0.0) < v]
        assert not fell, fell
        assert types["corlens_indexer_events"] == "gauge"
        events = 'corlens_indexer_events{chain="local"}'
        assert after[events] == before[events] - outs[0].removed_events
    finally:
        store.engine.dispose()
