"""What verification reads of the chain beyond receipts: the task contracts' decoders (to compare
a log's arguments with stored values) and the task's events over its block span (to find chain
events the store has no row for).

:func:`missing` is pure: it re-projects the task's decoded chain events with the indexer's own
:class:`~indexer.project.Projector` and names every step, miner, miner action and payment row the
projection makes that the store lacks. :func:`task_events` is the fetch: one ``eth_getLogs`` per
``max_block_range`` blocks of the span, in one batch, filtered by the contracts' addresses and the
task events' topics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from api.schemas import Finality
from api.verify import Difference, StepCheck, StoredStep, Tags
from api.verify_load import PAYMENT_EVENT
from indexer.abi import EventSpec, abi_path, events_of, load_abi
from indexer.config import ChainConfig
from indexer.decode import DecodedEvent, EventDecoder, Registry
from indexer.errors import DecodeError
from indexer.finality import finality_of
from indexer.project import MINER_ACTION, PAYMENT_KIND, TASK_STEP_OF, Projector, keys_of
from indexer.rpc import RpcClient

TASK_CONTRACTS = ("SessionV2", "SessionQueueV2", "SessionPayment")
# A task lives minutes; a stored span wider than this many eth_getLogs ranges (a tampered
# updated_block, say) is scanned over its first ones only, so one request stays bounded.
MAX_SCAN_RANGES = 64
TASK_EVENTS = frozenset({e for _, e in TASK_STEP_OF} | set(MINER_ACTION) | set(PAYMENT_KIND))


class Decoders:
    """The task contracts' event decoders, by (event name, topic0); callable as
    :data:`api.verify.Decode`."""

    def __init__(self, chain: ChainConfig, base: Path | None = None) -> None:
        self.specs: dict[str, list[EventSpec]] = {}
        for name in TASK_CONTRACTS:
            cfg = chain.contracts.get(name)
            abi = load_abi(abi_path(name, cfg.abi if cfg else None, base))
            self.specs[name] = [
                s
                for s in events_of(name, abi, cfg.events if cfg else None)
                if s.name in TASK_EVENTS
            ]
        self._by_key = {
            (s.name, s.topic0): EventDecoder(s) for specs in self.specs.values() for s in specs
        }
        self._registries: dict[tuple[tuple[str, str], ...], Registry] = {}

    def registry(self, addresses: Mapping[str, str]) -> Registry:
        """The task contracts' decoders at ``addresses`` (contract name -> address), built once
        per set of addresses: building a decoder generates its code."""
        key = tuple(sorted(addresses.items()))
        reg = self._registries.get(key)
        if reg is None:
            reg = self._registries[key] = Registry()
            for name, address in key:
                reg.add(address, self.specs.get(name, ()))
        return reg

    def __call__(self, event: str, log: Mapping[str, Any]) -> dict[str, Any] | None:
        topics = [str(t).lower() for t in log.get("topics") or []]
        dec = self._by_key.get((event, topics[0])) if topics else None
        if dec is None:
            return None
        try:
            return dec.decode(topics, str(log.get("data", "0x")))
        except (DecodeError, ValueError, IndexError):
            return None


_DECODERS: dict[str, Decoders] = {}


def decoders(chain: ChainConfig, base: Path | None = None) -> Decoders:
    """Built once per chain configuration (the ABI files are read once); ``base`` is where a
    relative ``abi`` path is read from. Raises :class:`~indexer.errors.ConfigError` for an ABI
    file that cannot be read."""
    key = f"{base}|{chain.model_dump_json(include={'name', 'contracts'})}"
    d = _DECODERS.get(key)
    if d is None:
        d = _DECODERS[key] = Decoders(chain, base)
    return d


@dataclass(frozen=True)
class Span:
    """Where to look: the task's blocks and its contracts' addresses (by contract name)."""

    first: int
    last: int
    addresses: Mapping[str, str]


async def task_events(
    rpc: RpcClient, chain: ChainConfig, dec: Decoders, span: Span, key: tuple[int, int]
) -> list[DecodedEvent]:
    """The task's decoded events on the canonical chain in ``span``, in chain order."""
    reg = dec.registry(span.addresses)
    if not reg.addresses or span.last < span.first:
        return []
    step = max(1, chain.max_block_range)
    flt = {"address": reg.addresses, "topics": [reg.topics()]}
    calls = [
        (
            "eth_getLogs",
            [{**flt, "fromBlock": hex(a), "toBlock": hex(min(a + step - 1, span.last))}],
        )
        for a in range(span.first, span.last + 1, step)
    ][:MAX_SCAN_RANGES]
    logs = [lg for chunk in await rpc.batch(calls) for lg in chunk or ()]
    events = [e for e in reg.decode_logs(logs).events if keys_of(e)[:2] == key]
    return sorted(events, key=lambda e: (e.block_number, e.log_index))


def missing(
    chain_id: int,
    key: tuple[int, int],
    events: Iterable[DecodedEvent],
    have: Iterable[StoredStep],
    miners: Iterable[str],
) -> list[StoredStep]:
    """The rows the indexer would have written for ``events`` that the store lacks, as steps
    carrying the chain's values: a step, a miner (reported as its ``assigned`` step), a miner's
    action, a payment. ``have`` are the stored steps, ``miners`` the stored task_miner rows.

    >>> missing(1, (0, 0), [], [], [])
    []
    """
    p = Projector(chain_id)
    p.apply_all(events)
    have = list(have)
    steps = {s.step for s in have if s.kind == "step"}
    actions = {(s.step, (s.actor or "").lower()) for s in have if s.kind == "miner_action"}
    payments = {(s.tx_hash, s.log_index) for s in have if s.kind == "payment"}
    stored_miners = {m.lower() for m in miners}
    sid, tid = key
    out: list[StoredStep] = []

    def add(kind: str, step: str, event: str, actor: Any, tx: str, block: int, idx: int) -> None:
        out.append(
            StoredStep(
                kind, step, event, actor and str(actor), sid, tid, tx, block, idx, None, None
            )
        )

    for (_, _, step), r in p.steps.items():
        if step not in steps:
            add(
                "step",
                step,
                r["event"],
                r["actor"],
                r["tx_hash"],
                r["block_number"],
                r["log_index"],
            )
    assigned = p.steps.get((sid, tid, "assigned"))
    for (_, _, miner), m in p.miners.items():
        if miner.lower() not in stored_miners and assigned is not None:
            a = assigned
            add("miner_action", "assigned", a["event"], miner, a["tx_hash"], a["block_number"],
                a["log_index"])  # fmt: skip
        for event, act in MINER_ACTION.items():
            if m[f"{act}_tx"] and (act, miner.lower()) not in actions:
                add("miner_action", act, event, miner, m[f"{act}_tx"], m[f"{act}_block"],
                    m[f"{act}_log_index"])  # fmt: skip
    for r in p.payments:
        if (r["tx_hash"], r["log_index"]) not in payments:
            add("payment", r["kind"], PAYMENT_EVENT[r["kind"]], r["node"], r["tx_hash"],
                r["block_number"], r["log_index"])  # fmt: skip
    return out


def gap_check(g: StoredStep, tags: Tags) -> StepCheck:
    """The verdict on a row the store lacks: a ``mismatch`` on field ``row``."""
    fin = cast(Finality, finality_of(g.block_number, tags.safe, tags.finalized))
    return StepCheck(
        "mismatch",
        fin,
        None,
        f"the chain logged {g.event} for this task; the store has no row for it",
        (Difference(field="row", stored=None, chain=f"{g.tx_hash}#{g.log_index}"),),
    )
