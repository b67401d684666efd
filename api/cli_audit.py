"""``corlens audit payouts``: the payout audit run directly against the database and the RPC.

The same report as ``GET /api/v1/chains/{chain}/audit/payouts`` (:func:`build_report`). Exit
status: 0 clean; 1 findings exist, or a failure happened (the database query failed, or the
RPC was unreachable so amount_mismatch was skipped; stderr says which); 2 bad usage or config
(the message names the option or key).
"""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import sqlalchemy as sa
import typer
from rich.markup import escape

from api.cli_opts import ConfigOpt
from indexer.errors import ConfigError

if TYPE_CHECKING:  # the API's modules load when the command runs, not with every CLI start
    from api.routes_payouts import AuditReportOut
    from indexer.config import ChainConfig

LINK_BASE = "http://127.0.0.1:8000"  # corlens serve's default, for links when no public_url
CLI_RPC_RETRIES = 2  # a one-shot report should say "RPC unreachable" quickly, not back off long


def register(app: typer.Typer) -> None:
    """Add ``audit payouts`` to the main CLI."""
    audit_app = typer.Typer(no_args_is_help=True, help="Audits over the index and the chain.")
    audit_app.command("payouts")(payouts)
    app.add_typer(audit_app, name="audit")


def payouts(
    chain: Annotated[str, typer.Option("--chain", help="The configured chain to audit.")],
    config: ConfigOpt = None,
    csv_file: Annotated[
        Path | None,
        typer.Option(
            "--csv", help="Also write the findings as CSV (one line per finding and row)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    unpaid_after_blocks: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Grace period for ended_without_allocation (default: config "
            "audit.unpaid_after_blocks, else 50).",
        ),
    ] = None,
) -> None:
    """Audit the payouts of one chain: findings with explorer links; exit 1 if any."""
    from api.cli import config_fail, err, fail, settings_or_exit
    from api.routes_payouts import configured_unpaid_after
    from indexer.db import ensure_schema, make_engine

    s = settings_or_exit(config)
    try:
        c = s.chain(chain)
        unpaid = configured_unpaid_after(s) if unpaid_after_blocks is None else unpaid_after_blocks
    except ConfigError as e:
        raise fail(2, f"--chain: {e.problem}" if e.key == "chains" else f"config {e}") from None
    engine = make_engine(s.database_url)
    try:
        ensure_schema(s.database_url, engine)
        out = asyncio.run(_run(engine, c, unpaid, s.public_url or LINK_BASE))
    except ConfigError as e:
        raise config_fail(e) from None
    except sa.exc.SQLAlchemyError as e:
        raise fail(1, f"database query failed: {type(e).__name__}: {e}") from None
    finally:
        engine.dispose()
    if csv_file is not None:
        try:
            write_csv(csv_file, out)
        except OSError as e:
            raise fail(2, f"--csv: cannot write {csv_file}: {e.strerror or e}") from None
    if as_json:
        typer.echo(out.model_dump_json(indent=2))
    else:
        print_report(out)
    failures = [f"{r.rule} skipped: {r.reason}" for r in out.rules if r.status == "skipped"]
    if failures:
        found = [f"{len(out.findings)} finding(s)"] if out.findings else []
        raise fail(1, "; ".join(failures + found))
    if out.findings:
        err.print(f"audit: {len(out.findings)} finding(s)", highlight=False)
        raise typer.Exit(1)


async def _run(engine: sa.Engine, chain: ChainConfig, unpaid: int, base: str) -> AuditReportOut:
    from api import queries as q
    from api.links import Links
    from api.routes_payouts import build_report, report_out
    from indexer.rpc import RpcClient

    cid = int(chain.chain_id or 0)
    async with RpcClient(
        chain.rpc_urls, timeout=chain.rpc_timeout, max_retries=CLI_RPC_RETRIES
    ) as rpc:
        with engine.connect() as conn:
            report, cursor = await build_report(conn, cid, rpc, unpaid_after_blocks=unpaid)
            st = q.chain_state(conn, cid)
    return report_out(report, chain.name, cid, cursor, unpaid, st, Links(chain, base))


def print_report(r: AuditReportOut) -> None:
    """Findings with their rows and links, then one line per rule."""
    from api.cli import out

    out.print(
        f"[bold]{escape(r.chain)}[/bold] (chain {r.chain_id}) payouts audited to block "
        f"{r.indexed_to_block:,}: {len(r.findings)} finding(s)",
        highlight=False,
    )
    for f in r.findings:
        out.print(f"\n[red]{f.rule}[/red] {f.id}\n  {escape(f.message)}", highlight=False)
        for row in f.rows:
            amount = f" amount {row.amount}" if row.amount is not None else ""
            out.print(
                f"  - {row.kind} {row.tx_hash}:{row.log_index} block {row.block_number} "
                f"({row.finality}){amount}\n    {row.explorer_url}",
                highlight=False,
            )
        for label, url in (("task", f.task_url), ("node", f.node_url)):
            if url:
                out.print(f"  {label}: {url}", highlight=False)
    out.print("\nrules:", highlight=False)
    for rule in r.rules:
        state = (
            f"{rule.findings} finding(s), {rule.checked} checked"
            if rule.status == "ran"
            else f"[yellow]skipped[/yellow]: {escape(rule.reason or '')}"
        )
        note = f" ({escape(rule.reason)})" if rule.status == "ran" and rule.reason else ""
        out.print(f"  {rule.rule}: {state}{note}", highlight=False)


def write_csv(path: Path, r: AuditReportOut) -> None:
    """One line per (finding, row), as ``GET .../audit/payouts?format=csv`` answers."""
    from api.audit_csv import finding_lines

    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(finding_lines(r))
