"""Block finality: set as blocks are stored, promoted as the chain's tags advance."""

from __future__ import annotations

import sqlalchemy as sa

from indexer.tables import Block, ChainState


def finality_of(block: int, safe: int | None, finalized: int | None) -> str:
    """latest | safe | finalized for a block, given the chain's tags (None or negative: no
    such tag yet). Blocks are stored with it; the API reports it.

    >>> [finality_of(b, safe=8, finalized=5) for b in (4, 5, 7, 9)]
    ['finalized', 'finalized', 'safe', 'latest']
    """
    if finalized is not None and 0 <= finalized and block <= finalized:
        return "finalized"
    if safe is not None and 0 <= safe and block <= safe:
        return "safe"
    return "latest"


def read_marks(conn: sa.Connection, chain_id: int) -> tuple[int, int]:
    """(safe, finalized) as recorded before this transaction changes them."""
    st = ChainState
    row = conn.execute(
        sa.select(st.c.safe_block, st.c.finalized_block).where(st.c.chain_id == chain_id)
    ).first()
    return (int(row[0]), int(row[1])) if row else (-1, -1)


def promote_between(
    conn: sa.Connection,
    chain_id: int,
    safe: int | None,
    finalized: int | None,
    marks: tuple[int, int],
) -> None:
    """Promote stored blocks between the recorded ``marks`` (safe, finalized) and the new
    tags. Blocks at or below a recorded mark were promoted when it was recorded, or stored
    with their finality since: each call touches the new blocks only, not the whole
    history (a scan that grew with every block stored)."""
    b = Block
    old_safe, old_final = marks
    # Finalized first: a block that is both becomes "finalized", never "safe" after it.
    for new, old, level, unless in (
        (finalized, old_final, "finalized", b.c.finality == "finalized"),
        (safe, old_safe, "safe", b.c.finality != "latest"),
    ):
        if new is not None and new > old:
            conn.execute(
                b.update()
                .where(b.c.chain_id == chain_id, b.c.number > old, b.c.number <= new, ~unless)
                .values(finality=level)
            )
