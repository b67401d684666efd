"""Raw event rows, built where there is CPU to spare.

The sync loop builds each range's rows (:func:`event_rows`) on the event loop while the previous
range is written by the writer, so the single writer only inserts. Rows are plain tuples in
:data:`EVENT_COLUMNS` order; ``args`` and ``topics`` are JSON text
(:func:`indexer.bulk.json_text`).
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import orjson

from indexer.bulk import json_text
from indexer.decode import DecodedEvent
from indexer.project import Keys, Row, keys_of
from indexer.schema import (
    LIFECYCLE_MINER_COLS,
    LIFECYCLE_PAYMENT_COLS,
    LIFECYCLE_STEP_COLS,
)

EventRow = tuple[Any, ...]
EVENT_COLUMNS = (
    "chain_id",
    "block_number",
    "block_hash",
    "tx_hash",
    "tx_index",
    "log_index",
    "address",
    "contract",
    "event",
    "topic0",
    "args",
    "topics",
    "data",
    "sender",
    "session_id",
    "task_id",
    "subject",
)


def event_rows(
    chain_id: int, events: list[DecodedEvent]
) -> tuple[list[tuple[Any, ...]], list[Keys]]:
    """(rows for the ``event`` table, projection keys), both in the order of ``events``."""
    dumps = json_text
    rows: list[EventRow] = []
    keys: list[Keys] = []
    for e in events:
        k = keys_of(e)
        keys.append(k)
        rows.append(
            (
                chain_id,
                e.block_number,
                e.block_hash,
                e.tx_hash,
                e.tx_index,
                e.log_index,
                e.address,
                e.contract,
                e.event,
                e.topic0,
                dumps(e.args),
                dumps(e.topics),
                e.data,
                e.sender,
                k.session_id,
                k.task_id,
                k.subject,
            )
        )
    return rows, keys


_by_step = itemgetter("step")
_by_miner = itemgetter("miner")


def lifecycle_rows(tasks: list[Row], steps: list[Row], miners: list[Row]) -> list[Row]:
    """``tasks`` with ``steps_json`` and ``miners_json`` set from ``steps`` and ``miners``,
    which hold every task_step and task_miner row of those tasks (the projector loaded them
    all; each JSON is rebuilt whole). Key order follows the lifecycle's column lists; entries
    are sorted by step and by miner, so the same rows give the same text whatever order they
    came in. (Each entry is built straight from its row: a tuple first, then a dict zipped
    from it, took half as long again.)"""
    by_task: dict[tuple[int, int], tuple[list[Row], list[Row]]] = {
        (t["session_id"], t["task_id"]): ([], []) for t in tasks
    }
    for r in steps:
        by_task[r["session_id"], r["task_id"]][0].append(r)
    for r in miners:
        by_task[r["session_id"], r["task_id"]][1].append(r)
    step_cols, miner_cols, dumps = LIFECYCLE_STEP_COLS, LIFECYCLE_MINER_COLS, orjson.dumps
    for t in tasks:
        s, m = by_task[t["session_id"], t["task_id"]]
        s.sort(key=_by_step)
        m.sort(key=_by_miner)
        t["steps_json"] = dumps([{c: r[c] for c in step_cols} for r in s]).decode()
        t["miners_json"] = dumps([{c: r[c] for c in miner_cols} for r in m]).decode()
    return tasks


def payments_json(*groups: list[Row]) -> str:
    """A task's payment rows (from any of ``groups``, each payment once) as the JSON
    ``Task.payments_json`` holds, in chain order."""
    docs = {
        (r["tx_hash"], r["log_index"]): {c: r[c] for c in LIFECYCLE_PAYMENT_COLS}
        for rows in groups
        for r in rows
    }
    return orjson.dumps(sorted(docs.values(), key=chain_order)).decode()


def chain_order(r: Row) -> tuple[int, int]:
    """Sort key of rows in the order the chain logged them."""
    return r["block_number"], r["log_index"]
