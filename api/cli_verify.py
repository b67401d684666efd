"""``corlens verify task CHAIN SESSION TASK``: the verification route's check, from a terminal.

Prints a timeline (each step with its block, time, finality, verdict and explorer link) and the
overall verdict, or with ``--json`` the route's response. Exit status: 0 verified or pending,
1 mismatch, reorged, an unreachable RPC or a task not in the index, 2 bad usage or config.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from api.cli_opts import ConfigOpt, JsonOpt
from indexer.config import MAX_ID

if TYPE_CHECKING:  # loaded when the command runs
    from api.routes_verify import StepVerification, TaskVerification

# serve's default address: where the links point when the config sets no public_url.
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
# One-shot command: a couple of retries, then tell the user instead of backing off for long.
CLI_RPC_RETRIES = 2
SHOW_CHARS = 72  # a differing value longer than this is elided in the timeline
COLOURS = {"verified": "green", "pending": "yellow", "mismatch": "red", "reorged": "red"}


def register(app: typer.Typer) -> None:
    """Add ``verify task`` to the main CLI."""
    verify_app = typer.Typer(no_args_is_help=True, help="Verify indexed state against the chain.")
    verify_app.command("task")(verify_task_command)
    app.add_typer(verify_app, name="verify")


def verify_task_command(
    chain: Annotated[str, typer.Argument(help="A configured chain name.")],
    session: Annotated[int, typer.Argument(min=0, max=MAX_ID, help="SessionV2 session id.")],
    task: Annotated[int, typer.Argument(min=0, max=MAX_ID, help="Task id within the session.")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every step, miner action and payment of a task against the chain (receipt, log,
    canonical block, time, actor, amount, finality), and look for its events that have no row."""
    from api.cli import config_fail, fail, settings_or_exit
    from api.links import Links
    from api.routes_verify import verify_task
    from api.verify_load import NotIndexed
    from indexer.errors import ConfigError, RpcError, RpcUnavailable
    from indexer.rpc import RpcClient
    from indexer.runner import config_dir, open_store

    s = settings_or_exit(config)
    try:
        c = s.chain(chain)
    except ConfigError as e:
        raise fail(2, f"CHAIN: {e.problem}") from None
    try:
        store = open_store(s)
    except ConfigError as e:
        raise config_fail(e) from None
    links = Links(c, s.public_url or DEFAULT_PUBLIC_URL)

    async def run() -> TaskVerification:
        async with RpcClient(c.rpc_urls, timeout=c.rpc_timeout, max_retries=CLI_RPC_RETRIES) as rpc:
            with store.engine.connect() as conn:
                return await verify_task(
                    conn, rpc, c, links, session, task, config_dir=config_dir(s)
                )

    try:
        result = asyncio.run(run())
    except NotIndexed as e:
        raise fail(
            1,
            f"{e.what} not in the index: chain {chain}, session {session}, task "
            f"{task}. Check the ids, or index the chain first (corlens index)",
        ) from None
    except ConfigError as e:  # a contract's ABI file, read when the check needs it
        raise config_fail(e) from None
    except (RpcUnavailable, RpcError) as e:
        raise fail(
            1,
            f"{chain}: could not verify, the RPC failed: {e} Try again once the "
            "node answers, or add another URL to the chain's rpc_urls",
        ) from None
    finally:
        store.engine.dispose()
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        print_timeline(result, Console(soft_wrap=True))
    if result.verdict in ("mismatch", "reorged"):
        raise typer.Exit(1)


def _when(t: int | None) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if t else "-"


def _short(v: object) -> str:
    """A value for the timeline; long hex is elided in the middle (``--json`` has it whole)."""
    text = str(v)
    return escape(text if len(text) <= SHOW_CHARS else f"{text[:40]}...{text[-24:]}")


def _line(x: StepVerification) -> str:
    colour = COLOURS[x.verdict]
    who = f" by {x.actor}" if x.actor else ""
    return (
        f"  block {x.block_number:>9,} log {x.log_index:<3} {_when(x.block_time)}  "
        f"{x.step:<13} {x.finality or '-':<9} [{colour}]{x.verdict:<8}[/{colour}] "
        f"{escape(x.event)}{escape(who)}\n      {escape(x.explorer_url)}"
    )


def print_timeline(r: TaskVerification, out: Console) -> None:
    """The readable form: a header, one entry per step in chain order, the overall verdict."""
    out.print(
        f"[bold]{escape(r.chain)}[/bold] session {r.session_id} task {r.task_id}: checked "
        f"against the chain at head {r.head_block:,} (safe {r.safe_block:,}, finalized "
        f"{r.finalized_block:,})",
        highlight=False,
    )
    for x in r.steps:
        out.print(_line(x), highlight=False)
        if x.verdict != "verified":
            out.print(f"      {escape(x.reason)}", highlight=False)
        for d in x.differences:
            out.print(
                f"      {escape(d.field)}: stored {_short(d.stored)}, chain {_short(d.chain)}",
                highlight=False,
            )
    colour = COLOURS[r.verdict]
    fin = f" ({r.finality})" if r.finality and r.verdict == "pending" else ""
    out.print(f"overall: [bold {colour}]{r.verdict}[/bold {colour}]{fin}", highlight=False)
