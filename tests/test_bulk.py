"""indexer.bulk: the plain-tuple upserts behave as the Core statements they replace (both
backends), and its JSON text equals ``json.dumps``."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from indexer.bulk import COPY_FROM, BulkWriter, json_text
from indexer.db import make_engine
from indexer.models import Session, Task, table
from indexer.rows import topics_json


@pytest.mark.parametrize(
    "value",
    [{"a": 1, "b": [1, "x"], "c": None, "d": True, "big": 2**300, "s": 'é"\n'}, [], "x", 1.5],
)
def test_json_text_is_json_dumps(value: object) -> None:
    assert json_text(value) == json.dumps(value)


@pytest.mark.parametrize(
    "topics",
    [[], ["0xab"], ["0x" + "1f" * 32, "0x" + "00" * 32], ["0xé"], ['0x"'], ['a", "b'], ["", ""],
     ["0xa", "b\\"]],
)
def test_topics_json_is_json_dumps(topics: list[str]) -> None:
    """The shortcut for hex topics, and the fallback for anything JSON would escape."""
    assert topics_json(topics) == json.dumps(topics)


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
