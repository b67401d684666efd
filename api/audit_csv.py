"""The payout audit's findings as CSV: one line per (finding, row), shared by
``corlens audit payouts --csv`` and ``GET .../audit/payouts?format=csv``."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from api.routes_payouts import AuditReportOut

CSV_HEADER = [
    "id",
    "rule",
    "scope",
    "message",
    "session_id",
    "task_id",
    "node",
    "amounts",
    "row_kind",
    "tx_hash",
    "log_index",
    "block_number",
    "amount",
    "finality",
    "explorer_url",
]


def finding_lines(r: AuditReportOut) -> Iterator[list[object]]:
    """The header, then one line per (finding, row); a finding without rows gets one line
    with empty row cells."""
    yield list(CSV_HEADER)
    for f in r.findings:
        head: list[object] = [
            f.id,
            f.rule,
            f.scope or "",
            f.message,
            _s(f.session_id),
            _s(f.task_id),
            f.node or "",
            ";".join(f"{k}={v}" for k, v in f.amounts.items()),
        ]
        rows: list[list[object]] = [
            [
                row.kind,
                row.tx_hash,
                row.log_index,
                row.block_number,
                row.amount or "",
                row.finality,
                row.explorer_url,
            ]
            for row in f.rows
        ]
        for cells in rows or [[""] * 7]:
            yield head + cells


def csv_text(r: AuditReportOut) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(finding_lines(r))
    return buf.getvalue()


def _s(v: object) -> str:
    return "" if v is None else str(v)
