"""The indexer's writes: one transaction per range, cursor and rows together, idempotent.

Only this module writes indexer tables. :meth:`Store.write_batch` stores a decoded range (raw
events, malformed logs, headers, projections, session snapshots, cursor) in one transaction;
events already stored are skipped, so re-running a range changes nothing.
:meth:`Store.rollback` undoes everything above a fork block and re-folds the touched keys from the
events that remain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from indexer.bulk import BulkWriter, copy_rows
from indexer.decode import DecodedEvent, Malformed
from indexer.finality import finality_of, promote_between, read_marks
from indexer.project import Keys, Projector
from indexer.rows import EVENT_COLUMNS, event_rows, lifecycle_rows
from indexer.store_io import chunks, load_for, session_facts, set_payments_json
from indexer.tables import (
    Block,
    ChainState,
    Event,
    MalformedLog,
    NetworkTask,
    NetworkTaskStep,
    Node,
    Payment,
    Session,
    Task,
    TaskMiner,
    TaskStep,
)

TX, LOG = EVENT_COLUMNS.index("tx_hash"), EVENT_COLUMNS.index("log_index")
# Columns a session snapshot does not carry, for a session first seen through its snapshot.
SESSION_DEFAULTS: dict[str, Any] = {"miners": [], "active": True}


@dataclass
class Batch:
    """One indexed range, ready to commit."""

    chain_id: int
    name: str
    from_block: int
    to_block: int
    to_hash: str
    events: list[DecodedEvent] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    unknown: int = 0
    headers: list[dict[str, Any]] = field(
        default_factory=list
    )  # {number, hash, parent_hash, timestamp}
    sessions: list[dict[str, Any]] = field(default_factory=list)  # snapshot rows for Session
    head: int | None = None
    safe: int | None = None
    finalized: int | None = None
    # ``event_rows(chain_id, events)`` when the caller built them already (the sync loop does,
    # before the writer's turn); computed by ``write_batch`` otherwise.
    rows: tuple[list[tuple[Any, ...]], list[Keys]] | None = None
    from_parent: str | None = None  # parent hash of ``from_block``, for the caller's checks
    # The batch encoded for a writer process ahead of its turn (ProcessWriter.stage).
    wire: bytes | None = field(default=None, repr=False, compare=False)


class Store:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.bulk = BulkWriter(engine.dialect)

    # -- helpers ---------------------------------------------------------------------------
    def _insert(self, tbl: sa.Table) -> Any:
        mod = postgresql if self.dialect == "postgresql" else sqlite
        return mod.insert(tbl)

    def _upsert(
        self,
        conn: sa.Connection,
        tbl: sa.Table,
        rows: list[dict[str, Any]],
        insert_defaults: dict[str, Any] | None = None,
    ) -> None:
        """Insert or update on the primary key. Only the columns the rows carry are updated;
        ``insert_defaults`` fill the others when the row is new."""
        if not rows:
            return
        pk = [c.name for c in tbl.primary_key.columns]
        cols = [c for c in rows[0] if c not in pk]
        if insert_defaults:
            rows = [{**insert_defaults, **r} for r in rows]
        if self.bulk.supports(tbl):
            only = frozenset(insert_defaults or ()) - set(cols)
            self.bulk.write(conn, tbl, rows, insert_only=only)
            return
        ins = self._insert(tbl)
        stmt = ins.on_conflict_do_update(index_elements=pk, set_={c: ins.excluded[c] for c in cols})
        for chunk in chunks(rows, 2000):
            conn.execute(stmt, list(chunk))

    def _insert_ignore(self, conn: sa.Connection, tbl: sa.Table, rows: list[dict[str, Any]]
                       ) -> None:
        if rows and self.bulk.supports(tbl):
            self.bulk.write(conn, tbl, rows, update=False)
        elif rows:
            for chunk in chunks(rows, 2000):
                conn.execute(self._insert(tbl).on_conflict_do_nothing(), list(chunk))

    def state(self, chain_id: int) -> sa.Row[Any] | None:
        """The chain's ``chain_state`` row (its columns as attributes), if any."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(ChainState).where(ChainState.c.chain_id == chain_id)
            ).first()

    def ensure_state(self, chain_id: int, name: str, start_block: int) -> sa.Row[Any]:
        """The chain's state row, created with the cursor just below ``start_block``."""
        st = self.state(chain_id)
        if st is None:
            with self.engine.begin() as conn:
                self._insert_ignore(
                    conn,
                    ChainState,
                    [
                        {
                            "chain_id": chain_id,
                            "name": name,
                            "cursor_block": start_block - 1,
                            "cursor_hash": None,
                            "head_block": -1,
                            "safe_block": -1,
                            "finalized_block": -1,
                            "events_indexed": 0,
                            "unknown_logs": 0,
                            "malformed_logs": 0,
                            "reorgs": 0,
                            "updated_at": datetime.now(UTC),
                        }
                    ],
                )
            st = self.state(chain_id)
        assert st is not None
        return st

    # -- the write path --------------------------------------------------------------------
    def write_batch(self, batch: Batch) -> int:
        """Commit one range. Returns the number of new events stored."""
        with self.engine.begin() as conn:
            existing = set(
                conn.execute(
                    sa.select(Event.c.tx_hash, Event.c.log_index).where(
                        Event.c.chain_id == batch.chain_id,
                        Event.c.block_number.between(batch.from_block, batch.to_block),
                    )
                ).all()
            )
            rows, keys = batch.rows or event_rows(batch.chain_id, batch.events)
            new = batch.events
            if existing:
                keep = [i for i, e in enumerate(new) if (e.tx_hash, e.log_index) not in existing]
                new = [new[i] for i in keep]
                rows, keys = [rows[i] for i in keep], [keys[i] for i in keep]
            self._store_events(conn, rows)
            self._insert_ignore(
                conn,
                MalformedLog,
                [
                    {
                        "chain_id": batch.chain_id,
                        "block_number": m.block_number,
                        "block_hash": m.block_hash,
                        "tx_hash": m.tx_hash,
                        "log_index": m.log_index,
                        "address": m.address,
                        "topic0": m.topic0,
                        "contract": m.contract,
                        "event": m.event,
                        "reason": m.reason,
                    }
                    for m in batch.malformed
                ],
            )
            self._upsert(
                conn,
                Block,
                [
                    {
                        "chain_id": batch.chain_id,
                        "number": h["number"],
                        "hash": h["hash"],
                        "parent_hash": h.get("parent_hash"),
                        "timestamp": h.get("timestamp"),
                        "finality": finality_of(h["number"], batch.safe, batch.finalized),
                    }
                    for h in batch.headers
                ],
            )
            self._project(conn, batch.chain_id, new, keys)
            self._upsert(conn, Session, batch.sessions, SESSION_DEFAULTS)
            st = ChainState
            marks = read_marks(conn, batch.chain_id)
            values: dict[str, Any] = {
                "cursor_block": batch.to_block,
                "cursor_hash": batch.to_hash,
                "events_indexed": st.c.events_indexed + len(new),
                "unknown_logs": st.c.unknown_logs + batch.unknown,
                "malformed_logs": st.c.malformed_logs + len(batch.malformed),
                "updated_at": datetime.now(UTC),
            }
            for col, v in (
                ("head_block", batch.head),
                ("safe_block", batch.safe),
                ("finalized_block", batch.finalized),
            ):
                if v is not None:
                    values[col] = v
            conn.execute(st.update().where(st.c.chain_id == batch.chain_id).values(**values))
            promote_between(conn, batch.chain_id, batch.safe, batch.finalized, marks)
        return len(new)

    def _store_events(self, conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        """Bulk insert of raw event rows (:func:`indexer.rows.event_rows`): plain tuples
        through the driver's executemany."""
        if not rows:
            return
        if self.dialect == "postgresql" and len({(r[TX], r[LOG]) for r in rows}) == len(rows):
            # COPY: several times executemany's speed. The caller dropped the events already
            # stored and holds the chain's writer lock, so only a duplicate inside the batch
            # could conflict, and there is none.
            copy_rows(conn, None, f"COPY event ({', '.join(EVENT_COLUMNS)}) FROM STDIN", rows)
            return
        sql = (
            f"INSERT INTO event ({', '.join(EVENT_COLUMNS)}) VALUES "
            f"({', '.join([self.bulk.mark] * len(EVENT_COLUMNS))}) "
            "ON CONFLICT (chain_id, tx_hash, log_index) DO NOTHING"
        )
        for chunk in chunks(rows, 5000):
            conn.exec_driver_sql(sql, list(chunk))

    def _project(
        self, conn: sa.Connection, chain_id: int, events: list[DecodedEvent], keys: list[Keys]
    ) -> None:
        if not events:
            return
        proj = Projector(chain_id)
        load_for(self.dialect, conn, proj, events, keys)
        proj.apply_all(events)
        self._write_projection(conn, proj)

    def _write_projection(self, conn: sa.Connection, proj: Projector) -> None:
        # Tasks to write: those the events changed, and those with new payments (their
        # payments_json changes).
        dirty = set_payments_json(self.dialect, conn, proj)
        steps = [r for k, r in proj.steps.items() if k[:2] in dirty]
        miners = [r for k, r in proj.miners.items() if k[:2] in dirty]
        self._upsert(conn, Task, lifecycle_rows([proj.tasks[k] for k in dirty], steps, miners))
        self._upsert(conn, TaskStep, steps)
        self._upsert(conn, TaskMiner, miners)
        self._upsert(conn, NetworkTask, [proj.rounds[k] for k in proj.dirty_rounds])
        self._upsert(
            conn,
            NetworkTaskStep,
            [r for k, r in proj.round_steps.items() if k[0] in proj.dirty_rounds],
        )
        self._upsert(conn, Node, [proj.nodes[k] for k in proj.dirty_nodes])
        self._insert_ignore(conn, Payment, proj.payments)
        session_facts(conn, proj)

    # -- finality --------------------------------------------------------------------------
    def promote(self, chain_id: int, head: int, safe: int, finalized: int) -> None:
        """Record the chain's tags and promote stored blocks that they now cover."""
        st = ChainState
        with self.engine.begin() as conn:
            marks = read_marks(conn, chain_id)
            conn.execute(
                st.update()
                .where(st.c.chain_id == chain_id)
                .values(
                    head_block=head,
                    safe_block=safe,
                    finalized_block=finalized,
                    updated_at=datetime.now(UTC),
                )
            )
            promote_between(conn, chain_id, safe, finalized, marks)

    # -- reorgs ----------------------------------------------------------------------------
    def recent_blocks(self, chain_id: int, above: int) -> list[tuple[int, str]]:
        """Stored (number, hash) above ``above``, newest first: the reorg search space."""
        b = Block
        with self.engine.connect() as conn:
            return [
                (int(n), str(h))
                for n, h in conn.execute(
                    sa.select(b.c.number, b.c.hash)
                    .where(b.c.chain_id == chain_id, b.c.number > above)
                    .order_by(b.c.number.desc())
                ).all()
            ]

    def sessions_touched_above(self, chain_id: int, fork: int) -> list[int]:
        e = Event
        with self.engine.connect() as conn:
            return sorted(
                int(s)
                for (s,) in conn.execute(
                    sa.select(e.c.session_id)
                    .distinct()
                    .where(
                        e.c.chain_id == chain_id,
                        e.c.block_number > fork,
                        e.c.contract == "SessionV2",
                        e.c.session_id.is_not(None),
                    )
                ).all()
            )

    def rollback(
        self,
        chain_id: int,
        fork: int,
        fork_hash: str | None,
        sessions: list[dict[str, Any]],
        dropped_sessions: list[int],
    ) -> int:
        """Delete everything above ``fork`` and re-fold the keys it touched. Returns the number
        of events removed. ``sessions`` are fresh snapshots at the fork block."""
        from indexer.replay import rollback_in  # local: replay imports this module's helpers

        with self.engine.begin() as conn:
            removed = rollback_in(self, conn, chain_id, fork)
            s = Session
            for sid in dropped_sessions:
                conn.execute(s.delete().where(s.c.chain_id == chain_id, s.c.session_id == sid))
            self._upsert(conn, Session, sessions, SESSION_DEFAULTS)
            st = ChainState
            conn.execute(
                st.update()
                .where(st.c.chain_id == chain_id)
                .values(
                    cursor_block=fork,
                    cursor_hash=fork_hash,
                    reorgs=st.c.reorgs + 1,
                    events_indexed=st.c.events_indexed - removed,
                    updated_at=datetime.now(UTC),
                )
            )
        return removed
