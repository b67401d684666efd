"""The payout audit: pure rules over plain payment and task rows, plus one thin chain step.

Every rule is a function of plain rows (no I/O) returning :class:`Finding` s; :data:`RULES`
states each rule's exact semantics (the report repeats them). A finding's id hashes the chain
id, the rule and the natural key of what it is about, so two reports of one chain can be
diffed. :func:`read_moved` is the only I/O: the receipts and balances rule 6 compares against.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

RULES: dict[str, str] = {  # rule -> exact semantics, in report order
    "invalid_amount": (
        "A stored payment row whose amount (field payment.amount) is not the decimal string of "
        "a uint256; the row is left out of every other rule. Key: the row (tx, log index)."
    ),
    "allocation_without_commit": (
        "A NodePaymentAllocated to a node that was not assigned to the task, or was assigned "
        "but never committed (task_miner.commit_tx is null). Key: the allocation."
    ),
    "duplicate_allocation": (
        "Each repeat allocation of the same (session, task, node) after the first. Key: the repeat."
    ),
    "ended_without_allocation": (
        "A task that ended normally (its commit phase closed before TaskEnded; a force-ended "
        "task is expected unpaid) with at least one committer, none of whom got an allocation, "
        "once the indexed cursor is unpaid_after_blocks or more past TaskEnded. "
        "Key: (session, task)."
    ),
    "over_allocation": (
        "Walking a task's network payments and allocations in chain order, the first allocation "
        "that lifts its allocations above what was paid to the network for it so far (scope "
        "task; rows: the task's payments); the same per session (scope session: the total a "
        "session auditor reconciles, never without a task-scope finding; row: the allocation "
        "that crossed). Key: (scope, session[, task])."
    ),
    "over_withdrawal": (
        "Walking a node's allocations and withdrawals in chain order, a withdrawal above its "
        "pending balance (allocations minus earlier withdrawals; an overdraft leaves it at 0, "
        "as the contract does). Key: the withdrawal."
    ),
    "amount_mismatch": (
        "The deposits (withdrawals) of one transaction log a total other than the value that "
        "moved: the ERC-20 Transfer logs into (out of) the SessionPayment contract in the "
        "receipt or, with no such Transfer, the native balance change of the depositors "
        "(recipients) from block-1 to block, net of the gas fee for the one that sent the "
        "transaction. Network payments and allocations move no value and are not checked. "
        "Key: (tx, kind)."
    ),
}
# Arbitrum makes ~4 blocks/s, anvil one per transaction: 50 blocks is a short grace period
# for the router's allocation transaction, long enough not to flag a task mid-payment.
DEFAULT_UNPAID_AFTER_BLOCKS = 50
VALUE_KINDS = ("deposit", "withdrawal")  # the only payment events that move tokens
TRANSFER_TOPIC0 = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
UINT256_MAX = 2**256 - 1  # an event's amount is a uint256: anything else is a corrupt row
TaskKey = tuple[int, int]
GroupKey = tuple[str, str]  # (tx hash, kind)


@dataclass(frozen=True)
class Pay:
    """One indexed SessionPayment event (``contract``: the address that logged it), or a row a
    finding names: kind ``task_ended`` is a task's TaskEnded log (amount 0)."""

    kind: str
    tx_hash: str
    log_index: int
    block_number: int
    amount: int
    session_id: int | None = None
    task_id: int | None = None
    node: str | None = None
    counterparty: str | None = None
    contract: str | None = None


@dataclass(frozen=True)
class TaskFacts:
    """What the audit needs of a task: its TaskEnded (as a ``task_ended`` row) and which
    assigned miners committed."""

    session_id: int
    task_id: int
    force_ended: bool = False
    ended: Pay | None = None
    miners: Mapping[str, bool] = field(default_factory=dict)  # assigned miner -> committed


@dataclass(frozen=True)
class Finding:
    rule: str
    id: str
    message: str
    rows: tuple[Pay, ...]
    session_id: int | None = None
    task_id: int | None = None
    node: str | None = None
    scope: str | None = None
    amounts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleRun:
    rule: str
    status: Literal["ran", "skipped"]
    findings: int
    checked: int  # rows (or groups) the rule looked at
    reason: str | None = None


@dataclass(frozen=True)
class Report:
    findings: list[Finding]
    rules: list[RuleRun]

    @property
    def clean(self) -> bool:
        return not self.findings and all(r.status == "ran" for r in self.rules)

    @property
    def summary(self) -> dict[str, int]:
        return {r.rule: r.findings for r in self.rules}


@dataclass(frozen=True)
class Moved:
    """The value that moved for one (tx, kind) group, and which reading found it."""

    path: Literal["erc20", "native"]
    value: int


def parse_amount(raw: object) -> int | None:
    """A stored amount as an int, or None when it is not the decimal string of a uint256.

    >>> parse_amount("12"), parse_amount("abc"), parse_amount("-1"), parse_amount(None)
    (12, None, None, None)
    """
    text = str(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if not text.isascii() or not text.isdecimal() or len(text) > 78:
        return None
    value = int(text)
    return value if value <= UINT256_MAX else None


def pending_balance(moves: Iterable[tuple[str, int]]) -> int:
    """A node's pending payments after its (kind, amount) allocations and withdrawals in chain
    order: allocations add, a withdrawal subtracts and an overdraft leaves 0, as the contract
    does.

    >>> pending_balance([("allocation", 5), ("withdrawal", 7), ("allocation", 2)])
    2
    """
    pending = 0
    for kind, amount in moves:
        pending = pending + amount if kind == "allocation" else max(0, pending - amount)
    return pending


def finding_id(chain_id: int, rule: str, *key: object) -> str:
    """Stable id: the same rule and key on the same chain give the same id.

    >>> finding_id(1, "over_withdrawal", "0xab", 3)
    'over_withdrawal-de9f866354b64bc7'
    """
    text = "|".join(str(x) for x in (chain_id, rule, *key))
    return f"{rule}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _finding(
    chain_id: int, rule: str, key: tuple[object, ...], message: str, rows: Iterable[Pay], **kw: Any
) -> Finding:
    return Finding(rule, finding_id(chain_id, rule, *key), message, tuple(rows), **kw)


def chain_order(pays: Iterable[Pay]) -> list[Pay]:
    return sorted(pays, key=lambda p: (p.block_number, p.log_index, p.tx_hash))


def invalid_amount(chain_id: int, bad: Sequence[tuple[Pay, str]]) -> list[Finding]:
    """One finding per stored row whose amount could not be read (``bad``: the row, its raw
    amount)."""
    return [
        _finding(
            chain_id,
            "invalid_amount",
            (p.tx_hash, p.log_index),
            f"{p.kind} {p.tx_hash}:{p.log_index}: field amount is {raw[:80]!r}, not a decimal "
            "uint256; the row is left out of the other rules",
            [p],
            session_id=p.session_id,
            task_id=p.task_id,
            node=p.node,
        )
        for p, raw in sorted(bad, key=lambda b: (b[0].block_number, b[0].log_index, b[0].tx_hash))
    ]


def _allocs(pays: Iterable[Pay]) -> list[Pay]:
    return [p for p in chain_order(pays) if p.kind == "allocation" and p.task_id is not None]


def allocation_without_commit(
    chain_id: int, pays: Sequence[Pay], tasks: Mapping[TaskKey, TaskFacts]
) -> list[Finding]:
    """One finding per allocation whose node is not a committer of its task (RULES)."""
    out = []
    for p in _allocs(pays):
        t = tasks.get((int(p.session_id or 0), int(p.task_id or 0)))
        miners = t.miners if t else {}
        if p.node is not None and miners.get(p.node):
            continue
        why = "was assigned but never committed" if p.node in miners else "was not assigned"
        out.append(
            _finding(
                chain_id,
                "allocation_without_commit",
                (p.tx_hash, p.log_index),
                f"{p.amount} allocated to {p.node} for task {p.session_id}/{p.task_id}, which it "
                f"{why}",
                [p],
                session_id=p.session_id,
                task_id=p.task_id,
                node=p.node,
                amounts={"allocated": p.amount},
            )
        )
    return out


def duplicate_allocation(chain_id: int, pays: Sequence[Pay]) -> list[Finding]:
    """One finding per repeat of a (session, task, node) allocation; the first is fine."""
    first: dict[tuple[Any, ...], Pay] = {}
    out = []
    for p in _allocs(pays):
        key = (p.session_id, p.task_id, p.node)
        if key not in first:
            first[key] = p
            continue
        f = first[key]
        out.append(
            _finding(
                chain_id,
                "duplicate_allocation",
                (p.tx_hash, p.log_index),
                f"{p.node} allocated again for task {p.session_id}/{p.task_id} ({p.amount}; first "
                f"{f.amount} in {f.tx_hash})",
                [f, p],
                session_id=p.session_id,
                task_id=p.task_id,
                node=p.node,
                amounts={"first": f.amount, "repeat": p.amount},
            )
        )
    return out


def ended_without_allocation(
    chain_id: int,
    pays: Sequence[Pay],
    tasks: Mapping[TaskKey, TaskFacts],
    cursor_block: int,
    unpaid_after_blocks: int,
) -> list[Finding]:
    """One finding per normally ended task whose committers got nothing after the grace."""
    paid = {(p.session_id, p.task_id, p.node) for p in _allocs(pays)}
    out = []
    for (sid, tid), t in sorted(tasks.items()):
        committers = sorted(m for m, committed in t.miners.items() if committed)
        if t.ended is None or t.force_ended or not committers:
            continue
        if cursor_block - t.ended.block_number < unpaid_after_blocks:
            continue
        if any((sid, tid, m) in paid for m in committers):
            continue
        e = t.ended
        out.append(
            _finding(
                chain_id,
                "ended_without_allocation",
                (sid, tid),
                f"task {sid}/{tid} ended at block {e.block_number} and its {len(committers)} "
                f"committer(s) got no allocation within {cursor_block - e.block_number} blocks",
                [e],
                session_id=sid,
                task_id=tid,
            )
        )
    return out


def over_allocation(chain_id: int, pays: Sequence[Pay]) -> list[Finding]:
    """At most one finding per task and per session: at no point in chain order may the
    allocations made so far exceed the network payments made so far."""
    scopes: dict[tuple[Any, ...], list[Pay]] = defaultdict(list)
    for p in chain_order(pays):
        if p.kind in ("network", "allocation") and None not in (p.session_id, p.task_id):
            scopes[("task", p.session_id, p.task_id)].append(p)
            scopes[("session", p.session_id)].append(p)
    out = []
    for key, rows in sorted(scopes.items(), key=lambda kv: (kv[0][0] == "session", kv[0][1:])):
        paid = allocated = 0
        crossing: Pay | None = None
        for p in rows:
            paid += p.amount if p.kind == "network" else 0
            allocated += p.amount if p.kind == "allocation" else 0
            crossing = crossing or (p if allocated > paid else None)
        if crossing is None:
            continue
        what = f"task {key[1]}/{key[2]}" if key[0] == "task" else f"session {key[1]}"
        out.append(
            _finding(
                chain_id,
                "over_allocation",
                key,
                f"{what}: {allocated} allocated against {paid} paid to the network (first exceeded "
                f"in {crossing.tx_hash})",
                rows if key[0] == "task" else [crossing],
                session_id=key[1],
                task_id=key[2] if key[0] == "task" else None,
                scope=key[0],
                amounts={"allocated": allocated, "network_paid": paid},
            )
        )
    return out


def over_withdrawal(chain_id: int, pays: Sequence[Pay]) -> list[Finding]:
    """One finding per withdrawal above the node's pending balance (never below 0)."""
    pending: dict[str, int] = defaultdict(int)
    out = []
    for p in chain_order(pays):
        if p.node is None or p.kind not in ("allocation", "withdrawal"):
            continue
        if p.kind == "allocation":
            pending[p.node] += p.amount
            continue
        if p.amount > pending[p.node]:
            out.append(
                _finding(
                    chain_id,
                    "over_withdrawal",
                    (p.tx_hash, p.log_index),
                    f"{p.node} withdrew {p.amount} with {pending[p.node]} pending",
                    [p],
                    node=p.node,
                    amounts={"withdrawn": p.amount, "pending": pending[p.node]},
                )
            )
        pending[p.node] = max(0, pending[p.node] - p.amount)
    return out


def value_groups(pays: Iterable[Pay]) -> dict[GroupKey, list[Pay]]:
    """Deposits and withdrawals grouped by (tx, kind): what rule 6 compares, in chain order."""
    groups: dict[GroupKey, list[Pay]] = {}
    for p in chain_order(pays):
        if p.kind in VALUE_KINDS:
            groups.setdefault((p.tx_hash, p.kind), []).append(p)
    return groups


def amount_mismatch(
    chain_id: int, pays: Sequence[Pay], moved: Mapping[GroupKey, Moved | None]
) -> tuple[list[Finding], int]:
    """Findings and how many groups were checked (a group missing from ``moved`` or mapped to
    None, e.g. its receipt is gone, is not checked)."""
    out, checked = [], 0
    for (tx, kind), rows in value_groups(pays).items():
        m = moved.get((tx, kind))
        if m is None:
            continue
        checked += 1
        logged = sum(p.amount for p in rows)
        if logged == m.value:
            continue
        out.append(
            _finding(
                chain_id,
                "amount_mismatch",
                (tx, kind),
                f"{kind} logged {logged} but {m.value} moved ({m.path}) in {tx}",
                rows,
                session_id=rows[0].session_id,
                node=rows[0].node,
                scope=m.path,
                amounts={"logged": logged, "moved": m.value},
            )
        )
    return out, checked


def erc20_moved(kind: str, contract: str, receipt: Mapping[str, Any]) -> int | None:
    """Sum of the ERC-20 Transfers into (deposit) or out of (withdrawal) ``contract`` in a
    receipt; None when the receipt has no Transfer involving the contract (native path)."""
    total, seen = 0, False
    for log in receipt.get("logs") or []:
        topics = [str(t).lower() for t in log.get("topics") or []]
        if len(topics) != 3 or topics[0] != TRANSFER_TOPIC0:
            continue
        src, dst = "0x" + topics[1][-40:], "0x" + topics[2][-40:]
        if contract not in (src, dst):
            continue
        seen = True
        if (dst if kind == "deposit" else src) == contract:
            total += int(str(log.get("data") or "0x0"), 16)
    return total if seen else None


def native_moved(kind: str, party_deltas: Mapping[str, int], sender: str, fee: int) -> int:
    """Value that moved to (withdrawal) or from (deposit) the parties: their balance changes
    with the gas fee added back for the party that sent the transaction.

    >>> native_moved("deposit", {"0xa": -1_021}, "0xa", 21)
    1000
    """
    net = sum(d + (fee if party == sender else 0) for party, d in party_deltas.items())
    return -net if kind == "deposit" else net


class BatchRpc(Protocol):
    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]: ...


async def read_moved(rpc: BatchRpc, pays: Sequence[Pay]) -> dict[GroupKey, Moved | None]:
    """The chain step of rule 6: receipts of every deposit/withdrawal transaction (batched),
    then block-1/block balances of the parties where no ERC-20 Transfer explains the value.
    RPC failures propagate (the caller reports the rule as skipped)."""
    groups = value_groups(pays)
    txs = sorted({tx for tx, _ in groups})
    receipts = dict(
        zip(txs, await rpc.batch([("eth_getTransactionReceipt", [h]) for h in txs]), strict=True)
    )
    out: dict[GroupKey, Moved | None] = {}
    native: list[tuple[GroupKey, list[str], int, str, int]] = []
    for (tx, kind), rows in groups.items():
        r = receipts[tx]
        if not r or rows[0].contract is None:
            out[(tx, kind)] = None
            continue
        value = erc20_moved(kind, rows[0].contract, r)
        if value is not None:
            out[(tx, kind)] = Moved("erc20", value)
            continue
        fee = int(r["gasUsed"], 16) * int(r.get("effectiveGasPrice") or "0x0", 16)
        parties = sorted({p.counterparty for p in rows if p.counterparty})
        native.append(((tx, kind), parties, int(r["blockNumber"], 16), str(r["from"]).lower(), fee))
    calls = [
        ("eth_getBalance", [party, hex(b)])
        for _, ps, block, _, _ in native
        for party in ps
        for b in (block - 1, block)
    ]
    balances = iter(await rpc.batch(calls) if calls else [])
    for key, parties, _, sender, fee in native:
        deltas = {p: -int(next(balances), 16) + int(next(balances), 16) for p in parties}
        out[key] = Moved("native", native_moved(key[1], deltas, sender, fee))
    return out


def run_rules(
    chain_id: int,
    pays: Sequence[Pay],
    tasks: Mapping[TaskKey, TaskFacts],
    *,
    cursor_block: int,
    unpaid_after_blocks: int,
    moved: Mapping[GroupKey, Moved | None] | str,
    invalid: Sequence[tuple[Pay, str]] = (),
) -> Report:
    """Every rule over the rows; ``moved`` is :func:`read_moved`'s answer, or the reason the
    chain could not be read (rule 6 is then reported ``skipped``; the others still run).
    ``invalid``: stored rows whose amount could not be read, with the raw amount (not in
    ``pays``)."""
    allocs = len(_allocs(pays))
    ran: list[tuple[str, list[Finding], int]] = [
        ("invalid_amount", invalid_amount(chain_id, invalid), len(pays) + len(invalid)),
        ("allocation_without_commit", allocation_without_commit(chain_id, pays, tasks), allocs),
        ("duplicate_allocation", duplicate_allocation(chain_id, pays), allocs),
        (
            "ended_without_allocation",
            ended_without_allocation(chain_id, pays, tasks, cursor_block, unpaid_after_blocks),
            sum(1 for t in tasks.values() if t.ended is not None),
        ),
        ("over_allocation", over_allocation(chain_id, pays), allocs),
        (
            "over_withdrawal",
            over_withdrawal(chain_id, pays),
            sum(1 for p in pays if p.kind == "withdrawal"),
        ),
    ]
    runs = [RuleRun(rule, "ran", len(fs), n) for rule, fs, n in ran]
    findings = [f for _, fs, _ in ran for f in fs]
    if isinstance(moved, str):
        runs.append(RuleRun("amount_mismatch", "skipped", 0, 0, moved))
    else:
        bad = {(p.tx_hash, p.kind) for p, _ in invalid}  # an unreadable total is no mismatch
        readable = [p for p in pays if (p.tx_hash, p.kind) not in bad]
        fs, checked = amount_mismatch(chain_id, readable, moved)
        unchecked = len(value_groups(readable)) - checked
        why = f"{unchecked} transaction(s) not found on chain" if unchecked else None
        runs.append(RuleRun("amount_mismatch", "ran", len(fs), checked, why))
        findings += fs
    return Report(findings, runs)
