"""indexer.bulk: the plain-tuple upserts behave as the Core statements they replace (both
backends), and its JSON text equals ``json.dumps``."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from indexer.bulk import COPY_FROM, BulkWriter, json_text
from indexer.db import make_engine
from indexer.models import Session, Task, table


@pytest.mark.parametrize(
    "value",
    [{"a": 1, "b": [1, "x"], "c": None, "d": True, "big": 2**300, "s": 'é"\n'}, [], "x",
     {"amount": 2**64, "neg": -(2**63) - 1}, {"s": "\ud800"}, {"s": "é\u2028\x00"},
     ["0x" + "1f" * 32, "0x" + "00" * 32], {"n": 2**64 - 1, "m": -(2**63)}],
)
def test_json_text_reads_back_as_json_dumps(value: object) -> None:
    """orjson's text, or json.dumps's where orjson refuses (wide integers, lone surrogates):
    either way the same value when read back, as the Core JSON type would store it."""
    text = json_text(value)
    assert json.loads(text) == json.loads(json.dumps(value)) == value
    assert isinstance(text, str)


def _task(tid: int, status: str, miners: list[str]) -> dict[str, object]:
    return {"chain_id": 1, "session_id": 7, "task_id": tid, "global_id": None,
            "client_reference": f"ref-{tid}", "task_data": None, "status": status,
            "force_ended": False, "miners": miners, "node_ids": [], "first_block": 1,
            "updated_block": tid}


def test_upsert_insert_ignore_and_insert_only_columns(store_url: str) -> None:
    engine = make_engine(store_url)
    bulk = BulkWriter(engine.dialect)
    t, s = table(Task), table(Session)
    assert bulk.supports(t) and bulk.supports(s)
    try:
        with engine.begin() as conn:
            bulk.write(conn, t, [_task(1, "queued", ["0xa"]), _task(2, "ended", [])])
            bulk.write(conn, t, [_task(1, "ended", ["0xa", "0xb"])])  # update on the key
            bulk.write(conn, t, [_task(2, "submitted", [])], update=False)  # kept as it was
            row = {"chain_id": 1, "session_id": 7, "sid": "s", "ephemeral_nodes": [],
                   "dedicated_nodes": [], "routers": [], "miners": ["0xm"], "active": False}
            bulk.write(conn, s, [row], insert_only=frozenset({"miners", "active"}))
            again = dict(row, sid="s2", miners=["0xother"], active=True)
            bulk.write(conn, s, [again], insert_only=frozenset({"miners", "active"}))
        with engine.connect() as conn:
            got = {r.task_id: (r.status, r.miners) for r in conn.execute(sa.select(t))}
            sess = conn.execute(sa.select(s)).one()
        assert got == {1: ("ended", ["0xa", "0xb"]), 2: ("ended", [])}  # JSON reads back
        assert (sess.sid, sess.miners, sess.active) == ("s2", ["0xm"], False)
        with engine.begin() as conn, pytest.raises(KeyError, match="no column"):
            bulk.write(conn, t, [{**_task(3, "queued", []), "bogus": 1}])
    finally:
        engine.dispose()


def test_large_batches_take_the_copy_path_with_the_same_outcome(store_url: str) -> None:
    """From COPY_FROM rows PostgreSQL stages through COPY (SQLite keeps executemany); twice in
    one transaction, so the staging table must be empty again after each use."""
    engine = make_engine(store_url)
    bulk = BulkWriter(engine.dialect)
    t = table(Task)
    n = COPY_FROM + 5
    try:
        with engine.begin() as conn:
            bulk.write(conn, t, [_task(i, "queued", ["0xa"]) for i in range(n)])
            bulk.write(conn, t, [_task(i, "ended", []) for i in range(0, n, 2)])
            bulk.write(conn, t, [_task(i, "acked", []) for i in range(n)], update=False)
        with engine.begin() as conn:  # a new transaction on a pooled connection
            bulk.write(conn, t, [_task(i, "paid", ["0xz"]) for i in range(n, 2 * n)])
        with engine.connect() as conn:
            got = {r.task_id: (r.status, r.miners) for r in conn.execute(sa.select(t))}
        want = {i: ("ended", []) if i % 2 == 0 else ("queued", ["0xa"]) for i in range(n)}
        want |= {i: ("paid", ["0xz"]) for i in range(n, 2 * n)}
        assert got == want
    finally:
        engine.dispose()


def test_task_json_copies_include_payments_stored_before_the_task(store_url: str) -> None:
    """A network payment stored while its task had no row (an index that starts after the task
    was submitted: its first event indexed is TaskQueued) is in the task's payments_json once a
    later batch creates the row; a task written again keeps its payments, and a new payment
    rewrites them."""
    from indexer.decode import DecodedEvent
    from indexer.store import Batch, Store
    from tests.indexing import check_lifecycle_copies

    def ev(block: int, contract: str, event: str, **args: object) -> DecodedEvent:
        return DecodedEvent(block, f"0x{block:064x}", 1000 + block, f"0x{block:064x}", 0, 0,
                            "0x" + "11" * 20, contract, event, "0x" + "22" * 32, dict(args),
                            [], "0x", sender="0x" + "33" * 20)

    def batch(block: int, *events: DecodedEvent) -> Batch:
        return Batch(chain_id=31337, name="t", from_block=block, to_block=block,
                     to_hash=f"0x{block:064x}", events=list(events),
                     headers=[{"number": block, "hash": f"0x{block:064x}", "timestamp": block}])

    engine = make_engine(store_url)
    store = Store(engine)
    try:
        store.ensure_state(31337, "t", 0)
        store.write_batch(batch(1, ev(1, "SessionPayment", "NetworkPaid", sessionId=1, taskId=1,
                                      amount=5)))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM task")).scalar() == 0
        store.write_batch(batch(2, ev(2, "SessionQueueV2", "TaskQueued", sessionId=1, taskId=1,
                                      globalId=9, taskData="d")))
        assert check_lifecycle_copies(engine) == 1
        store.write_batch(batch(3, ev(3, "SessionQueueV2", "TaskAssigned", sessionId=1, taskId=1,
                                      miners=["0x" + "44" * 20])))
        assert check_lifecycle_copies(engine) == 1
        store.write_batch(batch(4, ev(4, "SessionV2", "TaskSubmitted", sessionId=1, taskId=2,
                                      clientReference="r2", taskData="d")))
        store.write_batch(batch(5, ev(5, "SessionPayment", "NodePaymentAllocated", sessionId=1,
                                      taskId=1, node="0x" + "44" * 20, amount=3)))
        assert check_lifecycle_copies(engine) == 2
        with engine.connect() as conn:
            docs = dict(conn.execute(sa.text(
                "SELECT task_id, payments_json FROM task ORDER BY task_id")).all())
        assert [p["kind"] for p in json.loads(docs[1])] == ["network", "allocation"]
        assert docs[2] == "[]"
    finally:
        engine.dispose()
