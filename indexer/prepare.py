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
# receipt, which names the sender too; one with more (a large batch of a router's steps) is read
# as the transaction, since a receipt carries every log of its transaction. anvil serves a
# receipt in about a quarter of a transaction's time (100 against 440 us here: it recovers the
# transaction's sender anew), and providers price receipts no higher. The batch keeps only the
# sender of each answer (``pick``), so a receipt's logs are dropped as its chunk is parsed:
# at 8, the 100,000-event benchmark read 6,250 of its 12,500 transactions whole, which cost
# anvil 1.3 CPU s more than their 14-log receipts. Only our logs are counted: a transaction
# with few of ours among many logs of other contracts still sends its whole receipt.
RECEIPT_MAX_LOGS = 32


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
    senders = await ix.rpc.batch(calls, pick=_sender)
    return {h: s for h, s in zip(hashes, senders, strict=True) if s}


def _sender(tx_or_receipt: dict[str, Any]) -> str | None:
    """The ``from`` of a transaction or receipt, lowercase: all a batch keeps of either."""
    sender = tx_or_receipt.get("from")
    return str(sender).lower() if sender else None


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
