"""The leanest indexing loop we could write in this stack: a ceiling for ``corlens index``.

    python bench/ceiling.py MODE RPC_URL ADDRESS SQLITE_PATH      (run by bench/indexer.py)

Each mode does strictly less than ``corlens index --once`` must, over the same chain and the
same ``eth_getLogs`` ranges (the indexer's own :class:`~indexer.ranges.LogRangePlanner`, two
requests in flight), and stores each log as one row through a writer process with plain
``sqlite3`` (WAL, one transaction per range with a cursor row, one unique index):

* ``raw``: the logs as they come (block, hashes, log index, address, topic0, data), undecoded;
* ``decoded``: decoded by corlens's own decoders, the row holding what the issue asks of a raw
  event at least (chain, block number and hash, tx hash, log index, contract, event, decoded
  args as JSON);
* ``senders``: ``decoded`` plus the sender of every step transaction (the actor of a step whose
  log does not name it), read as corlens reads them: ``eth_getTransactionReceipt`` in JSON-RPC
  batches of 100, keeping ``from``.

Nothing else: no projections, no block headers, no reorg or finality checks, no lifecycle
copies, no SQLAlchemy. Whatever this takes, an indexer that also does those takes more, so its
ratio to the floor bounds what corlens can reach on this machine. Prints one JSON line: the logs
stored and the senders read. Only the standard library, httpx and orjson are imported before
the first request, besides corlens's decoders and range planner (no SQLAlchemy, no pydantic).
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

MODES = ("raw", "decoded", "senders")
CONTRACTS = ("SessionV2", "SessionQueueV2", "SessionPayment", "NodePool")  # as bench/indexer.py
IN_FLIGHT = 2  # eth_getLogs requests ahead of the one being prepared
SENDER_BATCH = 100  # JSON-RPC calls per batch, as corlens's RpcClient sends them
_LEN = struct.Struct("<Q")
_JSON = {"content-type": "application/json"}
_SCHEMA = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
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


def writer(path: str) -> None:
    """The writer process: frames of (last block, rows) on stdin, one transaction each."""
    db = sqlite3.connect(path, isolation_level=None)
    for statement in _SCHEMA:
        db.execute(statement)
    inp = sys.stdin.buffer
    while len(head := inp.read(_LEN.size)) == _LEN.size:
        (n,) = _LEN.unpack(head)
        last, rows = marshal.loads(inp.read(n))
        db.execute("BEGIN")
        db.executemany(_INSERT, rows)
        db.execute(_CURSOR, (last,))
        db.execute("COMMIT")
    db.close()


async def index(mode: str, url: str, address: str, path: str) -> dict[str, int]:
    child = subprocess.Popen([sys.executable, __file__, "writer", path], stdin=subprocess.PIPE)
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
    async with httpx.AsyncClient(timeout=120.0) as client:

        async def rpc(body: Any) -> Any:
            answer = await client.post(url, content=orjson.dumps(body), headers=_JSON)
            return orjson.loads(answer.content)

        def call(method: str, params: list[Any], i: int = 0) -> dict[str, Any]:
            return {"jsonrpc": "2.0", "id": i, "method": method, "params": params}

        async def get_logs(lo: int, hi: int) -> list[dict[str, Any]]:
            flt = {"fromBlock": hex(lo), "toBlock": hex(hi), "address": [address]}
            logs: list[dict[str, Any]] = (await rpc(call("eth_getLogs", [flt])))["result"]
            return logs

        async def senders_of(hashes: list[str]) -> dict[str, str]:
            found: dict[str, str] = {}

            async def chunk(part: list[str]) -> None:
                batch = [call("eth_getTransactionReceipt", [h], i) for i, h in enumerate(part)]
                for answer in await rpc(batch):
                    receipt = answer["result"]
                    found[receipt["transactionHash"]] = receipt["from"]

            await asyncio.gather(*(chunk(hashes[i : i + SENDER_BATCH])
                                   for i in range(0, len(hashes), SENDER_BATCH)))  # fmt: skip
            return found

        async def rows_of(logs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
            if mode == "raw":
                return [(1, int(lg["blockNumber"], 16), lg["blockHash"], lg["transactionHash"],
                         int(lg["logIndex"], 16), lg["address"], lg["topics"][0], lg["data"],
                         None) for lg in logs]  # fmt: skip
            events = registry.decode_logs(logs).events
            senders: dict[str, str] = {}
            if mode == "senders":
                steps = {e.tx_hash for e in events if (e.contract, e.event) in SENDER_STEPS}
                senders = await senders_of(sorted(steps))
                nonlocal senders_read
                senders_read += len(senders)
            dumps = orjson.dumps
            return [(1, e.block_number, e.block_hash, e.tx_hash, e.log_index, e.contract,
                     e.event, dumps(e.args).decode(), senders.get(e.tx_hash))
                    for e in events]  # fmt: skip

        def send(frame: bytes) -> None:
            assert child.stdin is not None
            child.stdin.write(_LEN.pack(len(frame)) + frame)
            child.stdin.flush()

        head = int((await rpc(call("eth_blockNumber", [])))["result"], 16)
        planner = LogRangePlanner(initial=200, maximum=10_000)  # the indexer's defaults
        cursor = 0
        ahead: list[tuple[int, asyncio.Task[list[dict[str, Any]]]]] = []

        def request_next() -> None:
            nonlocal cursor
            if cursor <= head:
                lo, hi = planner.next_range(cursor, head)
                ahead.append((hi, asyncio.ensure_future(get_logs(lo, hi))))
                cursor = hi + 1

        for _ in range(IN_FLIGHT):
            request_next()
        sending: asyncio.Future[None] | None = None
        while ahead:
            hi, task = ahead.pop(0)
            logs = await task
            planner.on_success(len(logs))
            request_next()
            rows = await rows_of(logs)
            stored += len(rows)
            frame = marshal.dumps((hi, rows))
            if sending is not None:
                await sending
            sending = loop.run_in_executor(None, send, frame)
        if sending is not None:
            await sending
    assert child.stdin is not None
    child.stdin.close()
    if child.wait() != 0:
        raise SystemExit(f"the writer process exited {child.returncode}")
    return {"stored": stored, "senders": senders_read}


def main() -> None:
    if sys.argv[1:2] == ["writer"]:
        writer(sys.argv[2])
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
