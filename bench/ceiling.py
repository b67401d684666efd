"""The leanest indexing loop we could write in this stack: a ceiling for ``corlens index``.

    python bench/ceiling.py MODE RPC_URL ADDRESS SQLITE_PATH      (run by bench/indexer.py)

Each mode does strictly less than ``corlens index --once`` must, over the same chain, and reads
the logs as corlens does: one ``eth_getLogs`` after the other, each range planned from the
answers before it by the indexer's own :class:`~indexer.ranges.LogRangePlanner` with its
defaults, each answer prepared in a task of its own as soon as it arrives (so its lookups are in
flight with the next ``eth_getLogs``), at most one prepared range waiting for the writer. A
writer process stores each log as one row with plain ``sqlite3`` and corlens's pragmas (WAL,
32 KiB pages, one transaction per range with a cursor row, one unique index):

* ``raw``: the logs as they come (block, hashes, log index, address, topic0, data), undecoded;
* ``decoded``: decoded by corlens's own decoders, the row holding what the issue asks of a raw
  event at least (chain, block number and hash, tx hash, log index, contract, event, decoded
  args as JSON);
* ``senders``: ``decoded`` plus the sender of every step transaction (the actor of a step whose
  log does not name it), read as corlens reads them (``indexer.prepare.senders_of``): a
  receipt, or the transaction when it left more than 32 of our logs, in JSON-RPC batches of
  100, keeping ``from``;
* ``unstored``: ``senders`` with a writer process that discards every batch unread: the reads,
  the decoding and the sender lookups alone, with nothing stored.

Nothing else: no projections, no block headers, no reorg or finality checks, no lifecycle
copies. Whatever this takes, an indexer that also does those takes more. Prints one JSON line:
the logs handed to the writer (``stored``) and the senders read. Only the standard library,
httpx and orjson are imported, besides corlens's decoders and range planner (no SQLAlchemy, no
pydantic).
"""

from __future__ import annotations

import asyncio
import json
import marshal
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

MODES = ("raw", "decoded", "senders", "unstored")
CONTRACTS = ("SessionV2", "SessionQueueV2", "SessionPayment", "NodePool")  # as bench/indexer.py
SENDER_BATCH = 100  # JSON-RPC calls per batch, as corlens's RpcClient sends them
# As corlens's modules that load SQLAlchemy (tests/test_bench_indexer.py checks they agree):
RECEIPT_MAX_LOGS = 32  # indexer.prepare.RECEIPT_MAX_LOGS
INITIAL_RANGE = 200  # indexer.sync.INITIAL_RANGE: the first range's blocks
MAX_BLOCK_RANGE = 10_000  # the config's default max_block_range, as in the benchmark's config
_LEN = struct.Struct("<Q")
_JSON = {"content-type": "application/json"}
_SCHEMA = (  # corlens's pragmas (indexer/db.py); SQLite checkpoints the WAL in the commits
    "PRAGMA page_size=32768",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA cache_size=-32768",
    "CREATE TABLE event (id INTEGER PRIMARY KEY, chain_id INTEGER NOT NULL, block_number "
    "INTEGER NOT NULL, block_hash TEXT NOT NULL, tx_hash TEXT NOT NULL, log_index INTEGER NOT "
    "NULL, contract TEXT NOT NULL, event TEXT NOT NULL, args TEXT NOT NULL, sender TEXT)",
    "CREATE UNIQUE INDEX uq_event_log ON event (chain_id, tx_hash, log_index)",
    "CREATE TABLE cursor (chain_id INTEGER PRIMARY KEY, block INTEGER NOT NULL)",
)
_INSERT = (
    "INSERT INTO event (chain_id, block_number, block_hash, tx_hash, log_index, contract, "
    "event, args, sender) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_CURSOR = (
    "INSERT INTO cursor VALUES (1, ?) ON CONFLICT (chain_id) DO UPDATE SET block = excluded.block"
)


def writer(path: str, discard: bool = False) -> None:
    """The writer process: frames of (last block, rows) on stdin, one transaction each; with
    ``discard``, each frame is read and dropped (no database at all)."""
    inp = sys.stdin.buffer
    if discard:
        while len(head := inp.read(_LEN.size)) == _LEN.size:
            inp.read(_LEN.unpack(head)[0])
        return
    db = sqlite3.connect(path, isolation_level=None)
    for statement in _SCHEMA:
        db.execute(statement)
    while len(head := inp.read(_LEN.size)) == _LEN.size:
        (n,) = _LEN.unpack(head)
        last, rows = marshal.loads(inp.read(n))
        db.execute("BEGIN")
        db.executemany(_INSERT, rows)
        db.execute(_CURSOR, (last,))
        db.execute("COMMIT")
    db.close()


async def index(mode: str, url: str, address: str, path: str) -> dict[str, int]:
    role = "discard" if mode == "unstored" else "writer"
    child = subprocess.Popen([sys.executable, __file__, role, path], stdin=subprocess.PIPE)
    import httpx
    import orjson

    from indexer.abi import abi_path, events_of, load_abi
    from indexer.decode import Registry
    from indexer.project import SENDER_STEPS
    from indexer.ranges import LogRangePlanner

    registry = Registry()
    for name in CONTRACTS:
        registry.add(address, events_of(name, load_abi(abi_path(name, None)), None))
    loop = asyncio.get_running_loop()
    stored = senders_read = 0

    def json_text(v: Any) -> str:  # as indexer.bulk.json_text: json for what orjson refuses
        try:
            return orjson.dumps(v).decode()
        except TypeError:  # an integer wider than 64 bits (a uint256 amount)
            return json.dumps(v)

    async with httpx.AsyncClient(timeout=120.0) as client:

        async def rpc(body: Any) -> Any:
            answer = await client.post(url, content=orjson.dumps(body), headers=_JSON)
            return orjson.loads(answer.content)

        def result(answer: Any) -> Any:
            if not isinstance(answer, dict) or "result" not in answer:
                raise SystemExit(f"the node answered {str(answer)[:300]}")
            return answer["result"]

        def call(method: str, params: list[Any], i: int = 0) -> dict[str, Any]:
            return {"jsonrpc": "2.0", "id": i, "method": method, "params": params}

        async def senders_of(logs_per_tx: dict[str, int]) -> dict[str, str]:
            # As indexer.prepare.senders_of: a receipt when the transaction left few of our
            # logs, else the transaction itself; only the sender is kept.
            calls = [("eth_getTransactionReceipt" if n <= RECEIPT_MAX_LOGS
                      else "eth_getTransactionByHash", h)
                     for h, n in sorted(logs_per_tx.items())]  # fmt: skip
            found: dict[str, str] = {}

            async def chunk(part: list[tuple[str, str]]) -> None:
                batch = [call(m, [h], i) for i, (m, h) in enumerate(part)]
                answers = {a.get("id"): a for a in await rpc(batch) if isinstance(a, dict)}
                for i, (_, h) in enumerate(part):
                    found[h] = str(result(answers.get(i))["from"]).lower()

            await asyncio.gather(*(chunk(calls[i : i + SENDER_BATCH])
                                   for i in range(0, len(calls), SENDER_BATCH)))  # fmt: skip
            return found

        async def rows_of(logs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
            nonlocal senders_read
            if mode == "raw":
                return [(1, int(lg["blockNumber"], 16), lg["blockHash"], lg["transactionHash"],
                         int(lg["logIndex"], 16), lg["address"], lg["topics"][0], lg["data"],
                         None) for lg in logs]  # fmt: skip
            events = registry.decode_logs(logs).events
            senders: dict[str, str] = {}
            if mode in ("senders", "unstored"):
                ours: dict[str, int] = {}
                for e in events:
                    ours[e.tx_hash] = ours.get(e.tx_hash, 0) + 1
                steps = {e.tx_hash for e in events if (e.contract, e.event) in SENDER_STEPS}
                senders = await senders_of({h: ours[h] for h in steps})
                senders_read += len(senders)
            return [(1, e.block_number, e.block_hash, e.tx_hash, e.log_index, e.contract,
                     e.event, json_text(e.args),
                     senders.get(e.tx_hash) if (e.contract, e.event) in SENDER_STEPS else None)
                    for e in events]  # fmt: skip

        def send(frame: bytes) -> None:
            assert child.stdin is not None
            child.stdin.write(_LEN.pack(len(frame)) + frame)
            child.stdin.flush()

        # As indexer.ranges.prepared_ranges: the ranges are read one after the other, each
        # planned from the answers before it; each answer is prepared in a task of its own as
        # soon as it arrives (its sender lookups in flight with the next eth_getLogs), and at
        # most one prepared range waits for the writer.
        head = int(result(await rpc(call("eth_blockNumber", []))), 16)
        planner = LogRangePlanner(initial=INITIAL_RANGE, maximum=MAX_BLOCK_RANGE)
        queue: asyncio.Queue[tuple[int, asyncio.Task[list[tuple[Any, ...]]]] | None]
        queue = asyncio.Queue(1)

        async def produce() -> None:
            cursor = 0
            while cursor <= head:
                lo, hi = planner.next_range(cursor, head)
                flt = {"fromBlock": hex(lo), "toBlock": hex(hi), "address": [address]}
                logs = result(await rpc(call("eth_getLogs", [flt])))
                planner.on_success(len(logs))
                await queue.put((hi, asyncio.create_task(rows_of(logs))))
                cursor = hi + 1
            await queue.put(None)

        producer = asyncio.create_task(produce())
        sending: asyncio.Future[None] | None = None
        while (item := await queue.get()) is not None:
            hi, task = item
            rows = await task
            stored += len(rows)
            frame = marshal.dumps((hi, rows))
            if sending is not None:
                await sending
            sending = loop.run_in_executor(None, send, frame)
        await producer
        if sending is not None:
            await sending
    assert child.stdin is not None
    child.stdin.close()
    if child.wait() != 0:
        raise SystemExit(f"the writer process exited {child.returncode}")
    return {"stored": stored, "senders": senders_read}


def main() -> None:
    if sys.argv[1] in ("writer", "discard"):
        writer(sys.argv[2], discard=sys.argv[1] == "discard")
        return
    mode, url, address, path = sys.argv[1:5]
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    # `python bench/ceiling.py` puts bench/ first on sys.path, where bench/indexer.py would
    # shadow the `indexer` package: the repository root takes its place.
    here = Path(__file__).resolve().parent
    if Path(sys.path[0]).resolve() == here:
        sys.path[0] = str(here.parent)
    print(json.dumps(asyncio.run(index(mode, url, address, path))))


if __name__ == "__main__":
    main()
