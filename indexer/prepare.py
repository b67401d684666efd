"""Preparing one fetched range for the store: decode, then what the logs leave out.

:func:`prepare_batch` turns a range's raw logs into a :class:`~indexer.store.Batch`: decoded
events, the headers needed to check the range against the chain (and block times a node did not
put in its logs), the senders behind steps that do not name their actor, session snapshots
after session events, and the raw event rows. It runs on the event loop while the previous range
is written and the next one fetched (:func:`indexer.ranges.prepared_ranges`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Any

from indexer.decode import DecodedEvent
from indexer.project import SENDER_STEPS, SESSION_EVENTS
from indexer.rows import event_rows
from indexer.store import Batch

if TYPE_CHECKING:
    from indexer.sync import ChainIndexer


async def prepare_batch(
    ix: ChainIndexer,
    a: int,
    b: int,
    logs: list[dict[str, Any]],
    head: int,
    safe: int,
    finalized: int,
) -> Batch | None:
    res = ix.registry.decode_logs(logs)
    want = {a, b}
    unfinal = b > finalized
    log_blocks = {e.block_number for e in res.events}
    if unfinal or any(e.block_time is None for e in res.events):
        want |= log_blocks
    numbers = sorted(want)
    blocks, senders = await asyncio.gather(ix.rpc.get_blocks(numbers), senders_of(ix, res.events))
    headers = {int(h["number"], 16): h for h in blocks if h}
    for e in res.events:
        e.sender = senders.get(e.tx_hash) if (e.contract, e.event) in SENDER_STEPS else None
    if a not in headers or b not in headers:
        return None
    for e in res.events:
        h = headers.get(e.block_number)
        if h is not None:
            if h["hash"] != e.block_hash:
                return None
            if e.block_time is None:
                e.block_time = int(h["timestamp"], 16)
    rows: dict[int, dict[str, Any]] = {}
    for e in res.events:
        rows[e.block_number] = {
            "number": e.block_number,
            "hash": e.block_hash,
            "timestamp": e.block_time,
            "parent_hash": None,
        }
    for n, h in headers.items():
        rows[n] = {
            "number": n,
            "hash": h["hash"],
            "parent_hash": h["parentHash"],
            "timestamp": int(h["timestamp"], 16),
        }
    sessions, _missing = await snapshots_for(ix, res.events, b)
    # Senders and session hints are known now: the rows are final, built here rather than
    # by the writer.
    built = event_rows(ix.chain_id, res.events)
    return Batch(
        chain_id=ix.chain_id,
        name=ix.chain.name,
        from_block=a,
        to_block=b,
        to_hash=headers[b]["hash"],
        events=res.events,
        malformed=res.malformed,
        unknown=res.unknown,
        headers=list(rows.values()),
        sessions=sessions,
        head=head,
        safe=safe,
        finalized=finalized,
        rows=built,
        from_parent=headers[a]["parentHash"],
    )


# A transaction that left at most this many of our logs in the range is read through its
# receipt, which names the sender too: anvil serves a receipt in a quarter of the time it takes
# for the transaction (reading 12,500 transactions cost anvil 2.4 CPU seconds in a
# 100,000-event backfill, half as much as the indexer's own work), and providers price receipts
# no higher. A receipt carries every log of its transaction, so one with more logs (a router's
# batch of steps) is read as the transaction instead: at 16 logs, receipts of 14 logs each
# raised the backfill's peak memory by 100 MB for no gain in time. Only our logs are counted: a
# transaction with few of ours among many logs of other contracts still sends its whole receipt.
RECEIPT_MAX_LOGS = 8


async def senders_of(ix: ChainIndexer, events: list[DecodedEvent]) -> dict[str, str]:
    """Senders of the transactions behind step events that do not name their actor."""
    if not ix.chain.resolve_actors:
        return {}
    hashes = sorted({e.tx_hash for e in events if (e.contract, e.event) in SENDER_STEPS})
    if not hashes:
        return {}
    logs = Counter(e.tx_hash for e in events)
    calls = [
        ("eth_getTransactionReceipt" if logs[h] <= RECEIPT_MAX_LOGS else "eth_getTransactionByHash",
         [h])
        for h in hashes
    ]  # fmt: skip
    txs = await ix.rpc.batch(calls)
    return {
        h: str(tx["from"]).lower()
        for h, tx in zip(hashes, txs, strict=True)
        if tx and tx.get("from")
    }


async def snapshots_for(
    ix: ChainIndexer, events: list[DecodedEvent], block: int
) -> tuple[list[dict[str, Any]], list[int]]:
    if ix.sessions is None:
        return [], []
    touched: set[int] = set()
    need_tx: list[DecodedEvent] = []
    for e in events:
        if e.contract != "SessionV2" or e.event not in SESSION_EVENTS:
            continue
        if "sessionId" in e.args:
            touched.add(int(e.args["sessionId"]))
        else:
            need_tx.append(e)
    if need_tx:
        hashes = sorted({e.tx_hash for e in need_tx})
        txs = await ix.rpc.batch([("eth_getTransactionByHash", [h]) for h in hashes])
        by_hash = dict(zip(hashes, txs, strict=True))
        for e in need_tx:
            sid = ix.sessions.session_from_input(by_hash.get(e.tx_hash))
            if sid is not None:
                e.session_hint = sid
                touched.add(sid)
    return await ix.sessions.snapshots(ix.rpc, sorted(touched), block)
