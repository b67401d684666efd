"""The sync loop for one chain: plan a range, fetch, decode, enrich, store; detect reorgs.

:meth:`ChainIndexer.step` does one unit of work and returns what happened (:class:`Advanced`,
:class:`Waiting` or :class:`Reorged`); backfill (``index --once``) repeats it up to the head seen
at start, the follower repeats it under APScheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.abi import abi_path, events_of, function_selector, load_abi
from indexer.config import ChainConfig
from indexer.decode import Registry
from indexer.errors import ConfigError, ReorgTooDeep, RpcError
from indexer.prepare import prepare_batch
from indexer.ranges import LogRangePlanner, prepared_ranges
from indexer.rpc import RpcClient
from indexer.sessions import SessionReader
from indexer.store import Store
from indexer.writer_proc import BatchWriter, ProcessWriter
from indexer.writer_start import in_process_only

# SessionV2 getters that name the other contracts, for addresses the config leaves out.
ADDRESS_GETTERS = {
    "SessionQueueV2": "getSessionQueueAddress",
    "SessionPayment": "getSessionPaymentAddress",
    "NodePool": "getNodePoolAddress",
}
# An eth_call answer holding (at least) one 32-byte word: an address getter's.
WORD_RE = re.compile(r"0x[0-9a-fA-F]{64,}")


# eth_getLogs ranges one step may take when following the head, and during a backfill (whose
# progress is reported after each committed range).
RANGES_PER_STEP = 8
BACKFILL_RANGES_PER_STEP = 64
# Blocks in the first eth_getLogs range; the planner grows it while answers stay small.
INITIAL_RANGE = 200


@dataclass(frozen=True)
class Advanced:
    from_block: int
    to_block: int
    events: int


@dataclass(frozen=True)
class Waiting:
    head: int


@dataclass(frozen=True)
class Reorged:
    fork_block: int
    removed_events: int


StepOutcome = Advanced | Waiting | Reorged


@dataclass
class Progress:
    """What a long backfill shows: blocks done of total, events/s, ETA."""

    chain: str
    cursor: int
    target: int
    blocks_done: int
    blocks_total: int
    events: int
    elapsed: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if self.blocks_done <= 0 or self.elapsed <= 0:
            return None
        return (self.blocks_total - self.blocks_done) * self.elapsed / self.blocks_done


class ChainIndexer:
    """Indexes one configured chain into a :class:`Store` through one :class:`RpcClient`."""

    def __init__(
        self,
        chain: ChainConfig,
        store: Store,
        rpc: RpcClient,
        *,
        config_dir: Path | None = None,
        writer: BatchWriter | None = None,
    ) -> None:
        self.chain = chain
        self.store = store
        # Where ranges are committed: the store itself (in a thread), or a ProcessWriter.
        self.writer: BatchWriter = writer or store
        # An in-memory database is one connection that every user shares (indexer.db): its
        # ranges are written on the loop's own thread, so that no other chain's read or write
        # can fall inside one of their transactions.
        self.inline_writes = writer is None and in_process_only(str(store.engine.url))
        self.rpc = rpc
        self.config_dir = config_dir
        self.chain_id = int(chain.chain_id or 0)
        self.registry = Registry()
        self.addresses: dict[str, str] = {}
        self.sessions: SessionReader | None = None
        # Start small and grow: the first answer on a dense chain cannot blow the memory bound.
        self.planner = LogRangePlanner(
            initial=min(INITIAL_RANGE, chain.max_block_range), maximum=chain.max_block_range
        )
        self.start_block = chain.start_block

    async def setup(self) -> None:
        """Check the chain id, resolve contract addresses, build the decoders."""
        got = await self.rpc.chain_id()
        if got != self.chain_id:
            raise ConfigError(
                f"chains[{self.chain.name}].chain_id",
                f"the RPC reports chain {got}, the config says {self.chain_id}",
            )
        abis = {name: self._contract_abi(name, c.abi) for name, c in self.chain.contracts.items()}
        for name, c in self.chain.contracts.items():
            if c.address:
                self.addresses[name] = c.address
        if "SessionV2" in self.addresses:
            await self._resolve_addresses(abis["SessionV2"])
        if not self.addresses:
            raise ConfigError(
                f"chains[{self.chain.name}].contracts", "no contract address configured"
            )
        await self._check_code()
        for name, address in self.addresses.items():
            abi = abis.get(name) or load_abi(abi_path(name, None))
            cfg = self.chain.contracts.get(name)
            if cfg and cfg.events:
                self._check_event_map(name, cfg.events, abi)
            self.registry.add(address, events_of(name, abi, cfg.events if cfg else None))
        if "SessionV2" in self.addresses:
            self.sessions = SessionReader(
                self.chain_id, self.addresses["SessionV2"], abis["SessionV2"]
            )
        self.start_block = min(self.chain.start_for(n) for n in self.addresses)
        self.store.ensure_state(self.chain_id, self.chain.name, self.start_block)

    def _contract_abi(self, name: str, abi: str | None) -> list[dict[str, Any]]:
        """The ABI a contract's config names (or the default); a problem names the key."""
        path = abi_path(name, abi, self.config_dir)
        try:
            return load_abi(path)
        except ConfigError as e:
            key = f"chains[{self.chain.name}].contracts.{name}.abi"
            raise ConfigError(key, f"{e.key}: {e.problem}") from None

    def _check_event_map(self, contract: str, events: dict[str, Any], abi: list[Any]) -> None:
        """Each mapping names an event corlens projects and an event the ABI has: a mapping
        that matches nothing would leave those events unindexed without a word."""
        ours = {
            e.name: {p.name for p in e.inputs}
            for e in events_of(contract, load_abi(abi_path(contract, None)))
        }
        theirs = {
            item.get("name"): {str(p.get("name", "")) for p in item.get("inputs", [])}
            for item in abi
            if item.get("type") == "event"
        }
        for name, mapping in events.items():
            key = f"chains[{self.chain.name}].contracts.{contract}.events.{name}"
            if name not in ours:
                raise ConfigError(key, f"corlens projects no {contract} event of this name "
                                  f"(it knows: {', '.join(sorted(ours))})")
            if mapping.event not in theirs:
                raise ConfigError(key, f"the ABI has no event named {mapping.event!r} "
                                  f"(it has: {', '.join(sorted(map(str, theirs)))})")
            # A misspelt argument would leave its value out of every row, without a word.
            for arg, their_arg in mapping.args.items():
                if arg not in ours[name]:
                    raise ConfigError(f"{key}.args.{arg}", f"{name} has no argument of this "
                                      f"name (it has: {', '.join(sorted(ours[name]))})")
                if their_arg not in theirs[mapping.event]:
                    raise ConfigError(
                        f"{key}.args.{arg}", f"the ABI's {mapping.event} has no argument "
                        f"{their_arg!r} (it has: {', '.join(sorted(theirs[mapping.event]))})")

    async def _check_code(self) -> None:
        """Every contract address holds code: a wrong one (another chain's, say) would index
        nothing, without a word, and the cursor would move past its history."""
        names = list(self.addresses)
        codes = await self.rpc.batch(
            [("eth_getCode", [self.addresses[n], "latest"]) for n in names]
        )
        for name, code in zip(names, codes, strict=True):
            if not isinstance(code, str) or code in ("0x", "0x0", ""):
                configured = self.chain.contracts.get(name)
                key = name if configured and configured.address else "SessionV2"
                raise ConfigError(
                    f"chains[{self.chain.name}].contracts.{key}.address",
                    f"no contract code at {self.addresses[name]} ({name}) on chain "
                    f"{self.chain_id}: check that the address is this chain's",
                )

    async def _resolve_addresses(self, session_abi: list[dict[str, Any]]) -> None:
        for name, getter in ADDRESS_GETTERS.items():
            if name in self.addresses:
                continue
            try:
                selector, _ = function_selector(session_abi, getter)
                out = await self.rpc.eth_call(self.addresses["SessionV2"], selector)
            except (KeyError, RpcError) as e:
                raise ConfigError(
                    f"chains[{self.chain.name}].contracts.{name}.address",
                    f"not set and SessionV2.{getter}() failed: {e}",
                ) from None
            if not isinstance(out, str) or not WORD_RE.fullmatch(out):
                # No contract there (an empty answer), or not SessionV2.
                raise ConfigError(
                    f"chains[{self.chain.name}].contracts.SessionV2.address",
                    f"SessionV2.{getter}() at {self.addresses['SessionV2']} answered "
                    f"{out[:20]!r}, not an address: check that this is SessionV2's address on "
                    f"this chain (chain {self.chain_id}), or set contracts.{name}.address",
                )
            addr = "0x" + out[-40:].lower()
            if int(addr, 16) != 0:
                self.addresses[name] = addr

    # -- tags and finality -----------------------------------------------------------------
    async def tags(self) -> tuple[int, int, int]:
        """(head, safe, finalized); a confirmation depth stands in when tags are not served."""
        head = await self.rpc.block_number()
        if self.chain.finality == "tags":
            try:
                safe_b, fin_b = await self.rpc.batch(
                    [
                        ("eth_getBlockByNumber", ["safe", False]),
                        ("eth_getBlockByNumber", ["finalized", False]),
                    ]
                )
                if safe_b and fin_b:
                    return head, int(safe_b["number"], 16), int(fin_b["number"], 16)
            except RpcError:
                pass
        depth = self.chain.confirmations
        return head, max(-1, head - depth // 2), max(-1, head - depth)

    # -- one step --------------------------------------------------------------------------
    async def step(
        self,
        target: int | None = None,
        *,
        max_ranges: int = RANGES_PER_STEP,
        on_written: Callable[[int, int], None] | None = None,
    ) -> StepOutcome:
        """Index up to ``max_ranges`` eth_getLogs ranges from the cursor towards ``target`` (or
        the head). ``on_written(block, events)`` follows each committed range: the block it
        ended at and the events this step has stored so far."""
        head, safe, finalized = await self.tags()
        st = self.store.state(self.chain_id)
        assert st is not None, "setup() first"
        if st.cursor_hash and st.cursor_block > finalized:
            block = await self.rpc.get_block(st.cursor_block)
            if block is None or block["hash"] != st.cursor_hash:
                return await self._handle_reorg(st.cursor_block)
        end = min(head, target) if target is not None else head
        start = st.cursor_block + 1
        if start > end:
            self.store.promote(self.chain_id, head, safe, finalized)
            return Waiting(head)
        total = 0
        parent = st.cursor_hash
        last = start - 1
        pending: tuple[int, asyncio.Future[int]] | None = None  # (its last block, the write)

        async def settle() -> None:
            nonlocal total, pending
            if pending is not None:
                to_block, fut = pending
                pending = None
                total += await fut
                if on_written is not None:
                    on_written(to_block, total)

        try:
            prefetched = prepared_ranges(
                self.rpc,
                self.planner,
                self.registry.addresses,
                start,
                end,
                max_ranges,
                lambda a, b, logs: prepare_batch(self, a, b, logs, head, safe, finalized),
            )
            async with contextlib.aclosing(prefetched) as ranges:
                async for a, prepared in ranges:
                    # The previous range is written (in a thread, or the writer process)
                    # while this one is prepared and the next one fetched.
                    batch = await prepared
                    if batch is not None and isinstance(self.writer, ProcessWriter):
                        self.writer.stage(batch)
                    await settle()
                    if batch is None or (parent and batch.from_parent != parent):
                        # The chain moved under us; the next step sorts it out.
                        return Advanced(start, a - 1, total)
                    if self.inline_writes:
                        done = asyncio.get_running_loop().create_future()
                        done.set_result(self.writer.write_batch(batch))
                        pending = (batch.to_block, done)
                    else:
                        write = asyncio.to_thread(self.writer.write_batch, batch)
                        pending = (batch.to_block, asyncio.ensure_future(write))
                    parent = batch.to_hash
                    last = batch.to_block
        finally:
            await settle()
        return Advanced(start, last, total)

    # -- reorgs ----------------------------------------------------------------------------
    async def _handle_reorg(self, cursor: int) -> Reorged:
        """Find the newest stored block still canonical, roll back to it."""
        floor = max(self.start_block - 1, cursor - self.chain.max_reorg_depth - 1)
        stored = [(n, h) for n, h in self.store.recent_blocks(self.chain_id, floor) if n <= cursor]
        canon = await self.rpc.get_blocks([n for n, _ in stored]) if stored else []
        canon_hash = {int(c["number"], 16): c["hash"] for c in canon if c}
        fork: int | None = None
        for n, h in stored:
            if canon_hash.get(n) == h:
                fork = n
                break
        if fork is None:
            if floor > self.start_block - 1:
                raise ReorgTooDeep(cursor - floor, self.chain.max_reorg_depth)
            fork = self.start_block - 1
        fork_hash = None
        if fork >= 0:
            fb = await self.rpc.get_block(fork)
            fork_hash = fb["hash"] if fb else None
        touched = self.store.sessions_touched_above(self.chain_id, fork)
        rows: list[dict[str, Any]] = []
        missing = touched
        if self.sessions is not None and touched and fork >= 0:
            rows, missing = await self.sessions.snapshots(self.rpc, touched, fork)
        removed = self.store.rollback(self.chain_id, fork, fork_hash, rows, missing)
        return Reorged(fork, removed)

    # -- drivers ---------------------------------------------------------------------------
    async def backfill(
        self, on_progress: Callable[[Progress], None] | None = None, target: int | None = None
    ) -> Progress:
        """Index up to the head seen at start (``index --once``)."""
        if target is None:
            target = await self.rpc.block_number()
        st = self.store.state(self.chain_id)
        assert st is not None
        first = st.cursor_block
        t0 = time.monotonic()
        events = 0
        prog = Progress(self.chain.name, first, target, 0, max(0, target - first), 0, 0.0)

        def report(cursor: int, step_events: int) -> None:
            nonlocal prog
            if prog.elapsed and (prog.cursor, prog.events) == (cursor, events + step_events):
                return  # said already (the step's last range, then the step's end)
            prog = Progress(
                self.chain.name,
                cursor,
                target,
                max(0, cursor - first),
                max(0, target - first),
                events + step_events,
                time.monotonic() - t0,
            )
            if on_progress:
                on_progress(prog)

        while True:
            # Many ranges per step: the pipeline (fetch, decode, write) drains between steps.
            out = await self.step(target, max_ranges=BACKFILL_RANGES_PER_STEP, on_written=report)
            if isinstance(out, Advanced):
                events += out.events
            st = self.store.state(self.chain_id)
            assert st is not None
            report(st.cursor_block, 0)
            if isinstance(out, Waiting) or st.cursor_block >= target:
                if not isinstance(out, Waiting):
                    head, safe, fin = await self.tags()
                    self.store.promote(self.chain_id, head, safe, fin)
                return prog
