"""Synthetic Cortensor task lifecycles for bench/api.py, written through ``Store.write_batch``.

Task ``g`` (0 <= g < tasks) is task ``g // SESSIONS`` of session ``g % SESSIONS`` (global id
``g``). It is submitted in block ``2 + g // TASKS_PER_BLOCK`` and each later transaction of its
lifecycle lands one block after the previous one:

    submit      SessionQueueV2.TaskQueued + SessionV2.TaskSubmitted (one tx, as on-chain)
    assign      SessionQueueV2.TaskAssigned(miners=[m])
    ack / precommit / endPrecommit / commit / endCommit / end
                TaskAcked, TaskPrecommitted, TaskPrecommitEnded, TaskCommitted,
                TaskCommitEnded, TaskEnded
    allocate    SessionPayment.NodePaymentAllocated(node=m)

10 logs in 9 transactions per task, one miner from a pool of ``MINERS``; block 1 holds
SessionV2.SessionCreated for every session. Topics and data are the real ABI encodings of the
args (``self_check`` decodes the first task's logs with the indexer's own decoder and compares).
A load resumes from the chain's cursor, so an interrupted load continues where it stopped.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from indexer.abi import ABI_DIR, EventSpec, events_of, load_abi
from indexer.decode import DecodedEvent, Registry
from indexer.finality import promote_between
from indexer.project import Projector
from indexer.store import Batch, Store
from indexer.tables import Block, ChainState

SESSIONS = 1_000  # tasks are spread round-robin over this many sessions
TASKS_PER_BLOCK = 10  # new submissions per block: ~90 txs / ~100 logs per block
TXS = 9  # transactions per task lifecycle (submit .. allocate), one block apart
LOGS_PER_TASK = 10
MINERS = 256  # miner pool; task g is served by miner g % MINERS
GENESIS_TIME = 1_750_000_000
BLOCK_SECONDS = 2
SAFE_LAG = 32  # safe = head - 32, finalized = head - 64: the newest tasks stay latest/safe
CONTRACTS = ("SessionV2", "SessionQueueV2", "SessionPayment")
QUEUE_STEPS = (  # transactions 1..7 of a task
    "TaskAssigned TaskAcked TaskPrecommitted TaskPrecommitEnded TaskCommitted TaskCommitEnded "
    "TaskEnded"
).split()


def _h(*parts: object) -> str:
    """A deterministic 32-byte 0x hash (sha256 stands in for keccak: same shape, C speed)."""
    return "0x" + hashlib.sha256(repr(parts).encode()).hexdigest()


ADDRESS = {c: "0x" + _h("contract", c)[-40:] for c in CONTRACTS}
MINER = ["0x" + _h("miner", i)[-40:] for i in range(MINERS)]
SIDS = range(SESSIONS)
OWNER = ["0x" + _h("owner", i)[-40:] for i in range(SESSIONS)]
SPECS: dict[tuple[str, str], EventSpec] = {
    (c, s.name): s for c in CONTRACTS for s in events_of(c, load_abi(ABI_DIR / f"{c}.json"))
}
TOPIC0 = {k: s.topic0 for k, s in SPECS.items()}  # EventSpec.topic0 hashes on every access
DYNAMIC = ("string", "address[]")


def _word(typ: str, v: Any) -> str:
    if typ == "address":
        return v[2:].rjust(64, "0")
    if typ == "bytes32":
        return str(v[2:])
    return format(int(v), "064x")


def _tail(typ: str, v: Any) -> str:
    if typ == "string":
        raw = v.encode().hex()
        return format(len(raw) // 2, "064x") + raw.ljust(-(-len(raw) // 64) * 64, "0")
    return format(len(v), "064x") + "".join(_word("address", a) for a in v)


def encode(spec: EventSpec, args: dict[str, Any]) -> tuple[list[str], str]:
    """(topics, data) of a log of ``spec`` carrying ``args`` (the types Cortensor uses)."""
    topics = [TOPIC0[(spec.contract, spec.name)]] + [
        "0x" + _word(p.type, args[p.name]) for p in spec.inputs if p.indexed
    ]
    body = [p for p in spec.inputs if not p.indexed]
    heads, tails, off = [], [], 32 * len(body)
    for p in body:
        if p.type in DYNAMIC:
            t = _tail(p.type, args[p.name])
            heads.append(format(off, "064x"))
            tails.append(t)
            off += len(t) // 2
        else:
            heads.append(_word(p.type, args[p.name]))
    return topics, "0x" + "".join(heads) + "".join(tails)


def task_key(g: int) -> tuple[int, int]:
    """(session_id, task_id) of global task ``g``."""
    return g % SESSIONS, g // SESSIONS


def _tx_logs(g: int, j: int) -> list[tuple[str, str, dict[str, Any]]]:
    s, t = task_key(g)
    m = MINER[g % MINERS]
    base = {"sessionId": s, "taskId": t}
    if j == 0:
        data = f'{{"prompt":"Summarise document {g:07d} in three sentences.","max_tokens":256}}'
        ref = f"req-{_h('ref', g)[2:34]}"
        return [
            ("SessionQueueV2", "TaskQueued", {**base, "globalId": g, "taskData": data}),
            ("SessionV2", "TaskSubmitted", {**base, "taskData": data, "clientReference": ref}),
        ]
    if j == 8:
        amount = 10**17 + (g % 1000) * 10**14
        return [("SessionPayment", "NodePaymentAllocated", {**base, "node": m, "amount": amount})]
    event = QUEUE_STEPS[j - 1]
    if event in ("TaskAssigned", "TaskEnded"):
        return [("SessionQueueV2", event, {**base, "miners": [m]})]
    if event in ("TaskAcked", "TaskPrecommitted", "TaskCommitted"):
        return [("SessionQueueV2", event, {**base, "miner": m})]
    return [("SessionQueueV2", event, base)]


def last_block(tasks: int) -> int:
    return start_block(tasks - 1) + TXS - 1


def start_block(g: int) -> int:
    return 2 + g // TASKS_PER_BLOCK


def header(n: int) -> dict[str, Any]:
    ts = GENESIS_TIME + BLOCK_SECONDS * n
    return {"number": n, "hash": _h("block", n), "parent_hash": _h("block", n - 1), "timestamp": ts}


def _event(
    n: int, tx: str, tx_index: int, log_index: int, log: tuple[str, str, dict[str, Any]]
) -> DecodedEvent:
    contract, event, args = log
    spec = SPECS[(contract, event)]
    topics, data = encode(spec, args)
    return DecodedEvent(
        n,
        _h("block", n),
        GENESIS_TIME + BLOCK_SECONDS * n,
        tx,
        tx_index,
        log_index,
        ADDRESS[contract],
        contract,
        event,
        TOPIC0[(contract, event)],
        args,
        topics,
        data,
    )


def session_events() -> list[DecodedEvent]:
    """Block 1: SessionCreated for every session (with an empty miner list)."""
    args = [{"sessionId": s, "sid": _h("sid", s), "owner": OWNER[s], "miners": []} for s in SIDS]
    return [
        _event(1, _h("tx", "session", s), s, s, ("SessionV2", "SessionCreated", args[s]))
        for s in SIDS
    ]


def task_events(g: int) -> list[DecodedEvent]:
    """The 10 logs of task ``g``. In a block, txs run by step (latest first), then by task."""
    out, slot = [], g % TASKS_PER_BLOCK
    for j in range(TXS):
        tx_index = (TXS - 1 - j) * TASKS_PER_BLOCK + slot
        for k, log in enumerate(_tx_logs(g, j)):
            log_index = tx_index if j else (TXS - 1) * TASKS_PER_BLOCK + 2 * slot + k
            out.append(_event(start_block(g) + j, _h("tx", g, j), tx_index, log_index, log))
    return out


def _order(events: list[DecodedEvent]) -> list[DecodedEvent]:
    return sorted(events, key=lambda e: (e.block_number, e.log_index))


def make_batch(chain_id: int, name: str, tasks: int, lo: int, hi: int) -> Batch:
    """Blocks ``lo..hi`` as the sync loop hands them to ``Store.write_batch``."""
    head = last_block(tasks)
    first = max(0, (lo - TXS - 1) * TASKS_PER_BLOCK)
    events = [
        e
        for g in range(first, min(tasks, (hi - 1) * TASKS_PER_BLOCK))
        for e in task_events(g)
        if lo <= e.block_number <= hi
    ]
    events = _order(session_events() + events if lo <= 1 else events)
    batch = Batch(chain_id, name, lo, hi, _h("block", hi), events=events, head=head)
    batch.headers = [header(n) for n in range(lo, hi + 1)]
    batch.safe, batch.finalized = head - SAFE_LAG, head - 2 * SAFE_LAG
    return batch


def write_rows(store: Store, chain_id: int, tasks: int, a: int, b: int) -> int:
    """Tasks ``a..b-1`` through the Projector and the store's own bulk upserts, in one
    transaction with the cursor (the highest block all of whose logs are now stored); the raw
    event rows are left out. Returns the number of logs projected."""
    events = _order([e for g in range(a, b) for e in task_events(g)])
    if a == 0:
        events = session_events() + events
    head = last_block(tasks)
    cursor = head if b >= tasks else b // TASKS_PER_BLOCK + 1
    proj = Projector(chain_id)
    proj.apply_all(events)
    st = ChainState
    blocks = range(1 if a == 0 else start_block(a), start_block(b - 1) + TXS)
    with store.engine.begin() as conn:
        store._upsert(
            conn, Block, [{"chain_id": chain_id, **header(n), "finality": "latest"} for n in blocks]
        )
        store._write_projection(conn, proj)
        conn.execute(
            st.update()
            .where(st.c.chain_id == chain_id)
            .values(
                cursor_block=cursor,
                cursor_hash=_h("block", cursor),
                head_block=head,
                safe_block=head - SAFE_LAG,
                finalized_block=head - 2 * SAFE_LAG,
                events_indexed=st.c.events_indexed + len(events),
                updated_at=datetime.now(UTC),
            )
        )
        # Every stored block, as this loader stores them all as "latest" (no previous marks).
        promote_between(conn, chain_id, head - SAFE_LAG, head - 2 * SAFE_LAG, (-1, -1))
    return len(events)


def self_check() -> None:
    """The synthetic logs decode, with the indexer's decoder, to exactly the args they carry."""
    reg = Registry()
    for c in CONTRACTS:
        reg.add(ADDRESS[c], [s for (c2, _), s in SPECS.items() if c2 == c])
    batch = make_batch(1, "x", 1, 1, last_block(1))
    raw = [
        {"address": e.address, "topics": e.topics, "data": e.data, "blockHash": e.block_hash}
        | {"transactionHash": e.tx_hash, "blockNumber": hex(e.block_number)}
        | {"transactionIndex": hex(e.tx_index), "logIndex": hex(e.log_index)}
        for e in batch.events
    ]
    decoded = reg.decode_logs(raw)
    got = [(e.contract, e.event, e.args) for e in decoded.events]
    want = [(e.contract, e.event, e.args) for e in batch.events]
    if got != want or decoded.malformed or decoded.unknown:
        raise SystemExit(f"synthetic logs do not decode to their args: {got[:3]} != {want[:3]}")


@dataclass
class LoadStats:
    events: int = 0
    blocks: int = 0
    generate_s: float = 0.0
    write_s: float = 0.0


def load(
    engine: sa.Engine,
    chain_id: int,
    name: str,
    tasks: int,
    batch_events: int,
    path: str,
    report: Callable[[str], None],
) -> LoadStats:
    """Load everything above the stored cursor, ``batch_events`` logs per transaction.

    ``path="batch"``: ``Store.write_batch`` over consecutive block ranges (the indexer's own
    write path: raw events, headers, projections, cursor). ``path="rows"``: consecutive task
    ranges through :func:`write_rows`."""
    store = Store(engine)
    cursor = store.ensure_state(chain_id, name, 1).cursor_block
    last = last_block(tasks)
    stats, shown = LoadStats(), time.perf_counter()
    while cursor < last:
        t0 = time.perf_counter()
        if path == "batch":
            hi = min(last, cursor + max(1, batch_events // (TASKS_PER_BLOCK * LOGS_PER_TASK)))
            batch = make_batch(chain_id, name, tasks, cursor + 1, hi)
            t1 = time.perf_counter()
            stats.events += store.write_batch(batch)
        else:
            a = max(0, (cursor - 1) * TASKS_PER_BLOCK)
            per = max(
                TASKS_PER_BLOCK, batch_events // LOGS_PER_TASK // TASKS_PER_BLOCK * TASKS_PER_BLOCK
            )
            t1 = t0  # generation and projection are counted as part of the write
            stats.events += write_rows(store, chain_id, tasks, a, min(tasks, a + per))
            hi = last if a + per >= tasks else (a + per) // TASKS_PER_BLOCK + 1
        stats.blocks += hi - cursor
        stats.generate_s += t1 - t0
        stats.write_s += time.perf_counter() - t1
        cursor = hi
        if time.perf_counter() - shown > 30 or hi == last:
            shown = time.perf_counter()
            rate = stats.events / max(stats.write_s + stats.generate_s, 1e-9)
            report(f"  block {hi:,}/{last:,}: {stats.events:,} logs, {rate:,.0f} logs/s")
    return stats
