"""Payment rows as the API shows them (shared by task detail, node and payout routes)."""

from __future__ import annotations

from typing import Any

from api.links import Links
from api.schemas import PaymentOut
from indexer.finality import finality_of


def payment_doc(p: dict[str, Any], finality: str, links: Links) -> dict[str, Any]:
    """A payment row as a :class:`PaymentOut`-shaped dict, given its block's finality."""
    return {
        "kind": p["kind"],
        "tx_hash": p["tx_hash"],
        "log_index": p["log_index"],
        "session_id": p["session_id"],
        "task_id": p["task_id"],
        "node": p["node"],
        "counterparty": p["counterparty"],
        "amount": str(p["amount"]),
        "block_number": p["block_number"],
        "block_time": p["block_time"],
        "finality": finality,
        "explorer_url": links.tx(p["tx_hash"]),
    }


def payment_out(p: dict[str, Any], st: dict[str, Any] | None, links: Links) -> PaymentOut:
    fin = (
        finality_of(p["block_number"], int(st["safe_block"]), int(st["finalized_block"]))
        if st
        else "latest"
    )
    return PaymentOut(**payment_doc(p, fin, links))
