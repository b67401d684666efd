"""Independent verification of a task's lifecycle against the chain: the pure core and the fetch.

:func:`check_step` compares one stored step (plain values from SQL) with the chain's receipt and
canonical headers (plain JSON-RPC dicts), and with a decoder the arguments of its log, and says
``verified``, ``pending``, ``mismatch`` (with the differing fields) or ``reorged``; it does no
I/O and is tested table-driven.
:func:`verify_steps` fetches what it needs in one batched round trip (two when a receipt names a
block not fetched yet, three when the node refuses the ``safe``/``finalized`` tags). Finalized
``verified`` results are kept in a :class:`VerifyCache` keyed by every stored value.
Loading from SQL (:mod:`api.verify_load`), the search for rows the store lacks
(:mod:`api.verify_chain`) and the response schema live at the edge, in :mod:`api.routes_verify`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from api.schemas import Finality
from indexer.config import ChainConfig
from indexer.errors import RpcError
from indexer.finality import finality_of
from indexer.rpc import RpcClient

Verdict = Literal["verified", "pending", "mismatch", "reorged"]
SEVERITY: dict[Verdict, int] = {"verified": 0, "pending": 1, "mismatch": 2, "reorged": 3}
FINALITY_RANK: dict[Finality, int] = {"latest": 0, "safe": 1, "finalized": 2}
# Finalized results never change; 10k entries is ~1k tasks' worth and a few MB.
CACHE_SIZE = 10_000

Json = dict[str, Any]
# (event name, a raw receipt log) -> the log's decoded arguments, None when it is not that event.
Decode = Callable[[str, Mapping[str, Any]], Mapping[str, Any] | None]
HASH_RE = re.compile(r"0x[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Difference:
    """One stored value that differs from the chain: ``field`` is block_number, block_hash,
    log_index, address, topics, data, log (no stored log), event, task, block_time, actor,
    tx_hash (not a hash), a payment's node, amount, session_id or task_id, or row (the chain
    has an event of the task the store has no row for)."""

    field: str
    stored: Any
    chain: Any


@dataclass(frozen=True)
class StoredLog:
    """An ``event`` row: what the store says the chain logged."""

    log_index: int
    block_number: int
    address: str
    topics: tuple[str, ...]
    data: str
    block_hash: str
    event: str
    session_id: int | None
    task_id: int | None
    miner: str | None


@dataclass(frozen=True)
class StoredStep:
    """One lifecycle step (``kind="step"``) or miner action (``"miner_action"``) as stored.

    ``log`` is the stored log it refers to (see :func:`pick_log`), ``None`` when there is none.
    Hashable: it is the cache key, so an edited row never hits a cached result.
    """

    kind: str
    step: str
    event: str
    actor: str | None
    session_id: int
    task_id: int
    tx_hash: str
    block_number: int
    log_index: int
    block_time: int | None
    log: StoredLog | None
    # Stored values the chain log's decoded arguments must equal: (field, arg name, value).
    claims: tuple[tuple[str, str, str], ...] = ()
    # The actor is the transaction's sender (steps whose log does not name who acted).
    sender: bool = False


@dataclass(frozen=True)
class Tags:
    head: int
    safe: int
    finalized: int


@dataclass(frozen=True)
class StepCheck:
    """The outcome of :func:`check_step`; links are added later (they depend on the request)."""

    verdict: Verdict
    finality: Finality | None
    block_time: int | None
    reason: str
    differences: tuple[Difference, ...] = ()


def _int(v: Any) -> int | None:
    """A JSON-RPC quantity as int; ``None`` when it is missing or malformed."""
    try:
        return int(v, 16) if isinstance(v, str) else None
    except ValueError:
        return None


def _low(v: Any) -> str | None:
    return v.lower() if isinstance(v, str) else None


def _content(log: Mapping[str, Any]) -> tuple[Any, ...]:
    topics = log.get("topics")
    return (
        _low(log.get("address")),
        tuple(str(t).lower() for t in topics) if isinstance(topics, list) else None,
        _low(log.get("data")),
    )


def pick_log(step: StoredStep, rows: Iterable[StoredLog]) -> StoredLog | None:
    """The stored log ``step`` refers to: the row at its log index when that row is the step's
    event for this task (and miner), else the one row of the tx that is, else the row at the index.

    >>> s = StoredStep("step", "ended", "TaskEnded", None, 1, 2, "0xt", 9, 3, None, None)
    >>> other = StoredLog(3, 9, "0xa", (), "0x", "0xb", "TaskQueued", 1, 2, None)
    >>> ended = StoredLog(2, 9, "0xa", (), "0x", "0xb", "TaskEnded", 1, 2, None)
    >>> pick_log(s, [other, ended]).log_index
    2
    """

    def ours(r: StoredLog) -> bool:
        return (
            r.event == step.event
            and (r.session_id, r.task_id) == (step.session_id, step.task_id)
            and (step.kind != "miner_action" or r.miner == step.actor)
        )

    rows = list(rows)
    at = next((r for r in rows if r.log_index == step.log_index), None)
    if at is not None and ours(at):
        return at
    same = [r for r in rows if ours(r)]
    return same[0] if len(same) == 1 else at


def valid_hash(v: str) -> bool:
    """Whether ``v`` is a 32-byte ``0x`` hex hash (anything else is never sent to the RPC).

    >>> valid_hash("0x" + "ab" * 32), valid_hash("zz")
    (True, False)
    """
    return HASH_RE.fullmatch(v) is not None


def check_step(
    s: StoredStep,
    receipt: Json | None,
    headers: Mapping[int, Json | None],
    tags: Tags,
    decode: Decode | None = None,
) -> StepCheck:
    """Compare one stored step with the chain: the receipt of its tx, canonical headers by number,
    and (with ``decode``) the arguments of the chain's log at the step's log index.

    ``reorged``: the tx has no receipt, or a block hash it names is no longer canonical.
    ``mismatch``: the chain holds the tx but a stored value differs (see ``differences``): the
    block, the log (index, address, topics, data, event, task), the block time, the actor (the
    tx's sender, or the log's miner/node argument) and ``claims`` (a payment's amount, node...);
    or a stored tx hash that is no hash at all (field ``tx_hash``, nothing is asked of the RPC).
    Otherwise ``verified`` when the receipt's block is finalized, else ``pending``.
    """
    if not valid_hash(s.tx_hash):
        return StepCheck(
            "mismatch",
            None,
            None,
            "the stored tx_hash is not a transaction hash",
            (Difference(field="tx_hash", stored=s.tx_hash, chain=None),),
        )
    if receipt is None:
        return StepCheck("reorged", None, None, "the transaction is not on the canonical chain")
    num, bh = _int(receipt.get("blockNumber")), _low(receipt.get("blockHash"))
    canon = headers.get(num) if num is not None else None
    if num is None or canon is None or _low(canon.get("hash")) != bh:
        return StepCheck("reorged", None, None, f"the receipt's block {num} is not canonical")
    when = _int(canon.get("timestamp"))
    fin = cast(Finality, finality_of(num, tags.safe, tags.finalized))
    log = s.log
    if log is not None and _low((headers.get(log.block_number) or {}).get("hash")) != _low(
        log.block_hash
    ):
        moved = "" if log.block_number == num else f"; the transaction is now in block {num}"
        return StepCheck(
            "reorged",
            None,
            when,
            f"stored block {log.block_number} is no longer canonical{moved}",
            (Difference(field="block_hash", stored=log.block_hash, chain=bh),),
        )
    diffs = [
        Difference(field="block_number", stored=n, chain=num)
        for n in dict.fromkeys((s.block_number, log.block_number if log else num))
        if n != num
    ][:1]
    diffs += _log_diffs(s, receipt)
    diffs += _value_diffs(s, receipt, when, decode)
    if diffs:
        named = ", ".join(d.field for d in diffs)
        return StepCheck(
            "mismatch", fin, when, f"stored values differ from the chain: {named}", tuple(diffs)
        )
    if fin == "finalized":
        return StepCheck("verified", fin, when, "matches the chain; block finalized")
    return StepCheck("pending", fin, when, f"matches the chain; block is {fin}, not finalized")


def _chain_logs(receipt: Json) -> dict[int, Json]:
    """The receipt's logs by log index."""
    raw = receipt.get("logs")
    return {
        i: lg
        for lg in (raw if isinstance(raw, list) else [])
        if isinstance(lg, dict) and (i := _int(lg.get("logIndex"))) is not None
    }


def _value_diffs(
    s: StoredStep, receipt: Json, when: int | None, decode: Decode | None
) -> list[Difference]:
    """The step's block time, actor and claimed arguments against the chain: the time is the
    log's ``blockTimestamp`` when the node gives it, else the canonical header's."""
    at = _chain_logs(receipt).get(s.log_index)
    diffs: list[Difference] = []
    if s.kind != "miner_action":  # miner actions store no time of their own
        t = _int(at.get("blockTimestamp")) if at else None
        chain_time = when if t is None else t
        if s.block_time != chain_time:
            diffs.append(Difference(field="block_time", stored=s.block_time, chain=chain_time))
    sender = _low(receipt.get("from"))
    if s.sender and _low(s.actor) != sender:
        diffs.append(Difference(field="actor", stored=s.actor, chain=sender))
    args = decode(s.event, at) if decode is not None and at is not None and s.claims else None
    if args is not None:  # not that event at all: the log's own differences say so
        for name, arg, stored in s.claims:
            chain = args.get(arg)
            if str(stored).lower() != str(chain).lower():
                diffs.append(Difference(field=name, stored=stored, chain=chain))
    return diffs


def _log_diffs(s: StoredStep, receipt: Json) -> list[Difference]:
    """What differs between the step's stored log and the receipt's logs."""
    chain_logs = _chain_logs(receipt)
    at = chain_logs.get(s.log_index)
    log = s.log
    if log is None:
        summary = (
            {"address": _low(at.get("address")), "topic0": (at.get("topics") or [None])[0]}
            if at
            else None
        )
        return [Difference(field="log", stored=None, chain=summary)]
    diffs: list[Difference] = []
    want = (log.address.lower(), tuple(t.lower() for t in log.topics), log.data.lower())
    found = [i for i, lg in sorted(chain_logs.items()) if _content(lg) == want]
    if found:
        where = next((i for i in (s.log_index, log.log_index) if i in found), found[0])
        wrong = [i for i in (s.log_index, log.log_index) if i != where]
        if wrong:
            diffs.append(Difference(field="log_index", stored=wrong[0], chain=where))
    elif at is None:
        diffs.append(Difference(field="log_index", stored=s.log_index, chain=None))
    else:
        for name, mine, theirs in zip(
            ("address", "topics", "data"), want, _content(at), strict=True
        ):
            if mine != theirs:
                diffs.append(Difference(field=name, stored=_json(mine), chain=_json(theirs)))
    if log.event != s.event:
        diffs.append(Difference(field="event", stored=s.event, chain=log.event))
    if (log.session_id, log.task_id) not in ((s.session_id, s.task_id), (None, None)):
        diffs.append(
            Difference(
                field="task",
                stored=f"{s.session_id}/{s.task_id}",
                chain=f"{log.session_id}/{log.task_id}",
            )
        )
    return diffs


def _json(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def overall(verdicts: Iterable[Verdict]) -> Verdict:
    """The worst verdict: reorged > mismatch > pending > verified; ``pending`` for no steps.

    >>> overall(["verified", "pending", "verified"]), overall(["pending", "reorged", "mismatch"])
    ('pending', 'reorged')
    """
    return max(verdicts, key=SEVERITY.__getitem__, default="pending")


def least_final(values: Iterable[Finality | None]) -> Finality | None:
    """The least final of the steps' finalities (``None`` when no step has one)."""
    return min((f for f in values if f), key=FINALITY_RANK.__getitem__, default=None)


class VerifyCache:
    """In-process LRU of ``verified`` (finalized) step checks, keyed by chain and stored step."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._d: OrderedDict[tuple[int, StoredStep], StepCheck] = OrderedDict()

    def get(self, key: tuple[int, StoredStep]) -> StepCheck | None:
        hit = self._d.get(key)
        if hit is not None:
            self._d.move_to_end(key)
        return hit

    def put(self, key: tuple[int, StoredStep], check: StepCheck) -> None:
        if check.verdict != "verified":
            return
        self._d[key] = check
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)


async def _tags_and(
    rpc: RpcClient, chain: ChainConfig, calls: list[tuple[str, list[Any]]]
) -> tuple[Tags, list[Any]]:
    """Live (head, safe, finalized) and the results of ``calls``, in one batch. A confirmation
    depth stands in for the tags when the chain is configured so or the node lacks them; a node
    that refuses the tags costs one more round trip."""
    tagged = chain.finality == "tags"
    tag_calls = [("eth_getBlockByNumber", [t, False]) for t in ("safe", "finalized")]
    try:
        res = await rpc.batch([("eth_blockNumber", []), *(tag_calls if tagged else []), *calls])
    except RpcError:
        if not tagged:
            raise
        tagged = False
        res = await rpc.batch([("eth_blockNumber", []), *calls])
    head = _int(res[0])
    if head is None:
        raise RpcError(
            None, "eth_blockNumber answered no quantity", "eth_blockNumber", chain.rpc_urls[0]
        )
    if tagged:
        safe, fin = (_int((_obj(b) or {}).get("number")) for b in res[1:3])
        res = res[3:]
        if safe is not None and fin is not None:
            return Tags(head, safe, fin), res
    else:
        res = res[1:]
    depth = chain.confirmations
    return Tags(head, max(-1, head - depth // 2), max(-1, head - depth)), res


@dataclass(frozen=True)
class Verification:
    """What :func:`verify_steps` found: the live tags and, per step, its check and whether the
    check came from the cache."""

    tags: Tags
    results: list[tuple[StoredStep, StepCheck, bool]]


async def verify_steps(
    rpc: RpcClient,
    chain: ChainConfig,
    steps: Sequence[StoredStep],
    cache: VerifyCache | None = None,
    decode: Decode | None = None,
) -> Verification:
    """Check ``steps`` against the chain. Raises :class:`~indexer.errors.RpcUnavailable` or
    :class:`~indexer.errors.RpcError` when the RPC fails (a stored value that is no hash or
    block number is the step's mismatch, never sent). Cached steps skip their receipts and
    headers; the tags are always read live."""
    cid = int(chain.chain_id or 0)
    cached = {s: c for s in steps if cache is not None and (c := cache.get((cid, s)))}
    todo = [s for s in steps if s not in cached]
    txs = sorted({s.tx_hash for s in todo if valid_hash(s.tx_hash)})
    nums = sorted(
        n
        for n in {s.block_number for s in todo} | {s.log.block_number for s in todo if s.log}
        if n >= 0
    )
    tags, res = await _tags_and(
        rpc,
        chain,
        [("eth_getTransactionReceipt", [h]) for h in txs]
        + [("eth_getBlockByNumber", [hex(n), False]) for n in nums],
    )
    receipts = {h: _obj(r) for h, r in zip(txs, res[: len(txs)], strict=True)}
    headers = {n: _obj(b) for n, b in zip(nums, res[len(txs) :], strict=True)}
    more = sorted(
        {
            n
            for r in receipts.values()
            if r and (n := _int(r.get("blockNumber"))) is not None and n not in headers
        }
    )
    if more:
        headers.update({n: _obj(b) for n, b in zip(more, await rpc.get_blocks(more), strict=True)})
    results = []
    for s in steps:
        check = cached.get(s)
        if check is None:
            check = check_step(s, receipts.get(s.tx_hash), headers, tags, decode)
            if cache is not None:
                cache.put((cid, s), check)
        results.append((s, check, s in cached))
    return Verification(tags, results)


def _obj(v: Any) -> Json | None:
    return v if isinstance(v, dict) else None
