"""The ``corlens`` command line.

Exit status: 0 success, 2 bad usage or configuration (the message names the option or key),
1 a failure at run time (the message says what to do next).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from api import entry
from api.cli_opts import ConfigOpt, JsonOpt, listen_problem, serving_line
from indexer.config import Settings, load_settings
from indexer.errors import ConfigError, IndexerError, SchemaOutdated

if TYPE_CHECKING:  # command modules load when their command runs: a quick start for each
    from indexer.sync import Progress

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="corlens: Cortensor on-chain indexer and verification service.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(code: int, message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(code)


def config_fail(e: ConfigError) -> typer.Exit:
    """A ConfigError as every command reports it: status 2 naming the key; an outdated schema
    is no config error (the setting is right, the database needs `corlens db upgrade`): 1."""
    if isinstance(e, SchemaOutdated):
        return fail(1, str(e))
    return fail(2, f"config {e}")


def settings_or_exit(config: str | None, require_chains: bool = True) -> Settings:
    try:
        s = load_settings(config)
    except ConfigError as e:
        raise fail(2, f"config {e}") from None
    if require_chains and not s.chains:
        raise fail(2, "config chains: no chain configured (see examples/testnet0.yaml)")
    note_new_database(s.database_url)
    return s


def note_new_database(url: str) -> None:
    """Say so when the command is about to create a SQLite file (the default database_url
    makes ./corlens.db wherever the command runs)."""
    from indexer.db import sqlite_file

    file = sqlite_file(url)
    if file is not None and not file.exists():
        err.print(
            f"database: creating a new SQLite file {escape(str(file.resolve()))} "
            f"(database_url {escape(url)})",
            highlight=False,
        )


class ProgressPrinter:
    """Blocks, events/s and ETA: a live line on a terminal, a line every few seconds otherwise."""

    def __init__(self, quiet: bool = False, every: float = 2.0) -> None:
        self.quiet = quiet
        self.every = every
        self._last = 0.0
        self._width = 0  # of the longest line on the terminal's current row

    def __call__(self, p: Progress) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        done = p.cursor >= p.target
        if not done and now - self._last < (0.2 if err.is_terminal else self.every):
            return
        self._last = now
        pct = 100.0 * p.blocks_done / p.blocks_total if p.blocks_total else 100.0
        eta = "-" if p.eta_s is None else f"{p.eta_s:,.0f}s"
        # The percentage, the events and the ETA are this run's: a resumed backfill says so,
        # or "block 5,100/9,000 (0.1%)" reads as a wrong percentage.
        line = (
            f"{p.chain}: block {p.cursor:,}/{p.target:,}; this run {p.blocks_done:,}/"
            f"{p.blocks_total:,} blocks ({pct:5.1f}%), {p.events:,} events, "
            f"{p.events_per_s:,.0f} ev/s, ETA {eta}"
        )
        if err.is_terminal:
            # Padded to the longest line since the last newline: "\r" alone would leave the
            # tail of a longer line ("ETA 10s" then "ETA 9ss").
            padded = line.ljust(self._width)
            self._width = 0 if done else max(self._width, len(line))
            err.print(padded, end="\r" if not done else "\n", highlight=False)
        else:
            err.print(line, highlight=False)


@app.command()
def index(
    config: ConfigOpt = None,
    chain: Annotated[str | None, typer.Option(help="Index only this configured chain.")] = None,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="Backfill to the current head, then exit (status 1 at once if another "
            "indexer holds the chain's writer lock).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index the configured chains: backfill, then follow the head (one writer per chain)."""
    from indexer.writer_start import prestart

    s = settings_or_exit(config)
    # The writer process imports while this one does; the console script started it already
    # (api.entry), or it starts now. An in-memory database gets none.
    prestart(s.database_url)
    from indexer.runner import follow, index_once, open_store, select_chains, summarize, tune_gc

    tune_gc()
    try:
        chains = select_chains(s, chain)
    except ConfigError as e:
        raise fail(2, f"--chain: {e.problem}") from None
    try:
        store = open_store(s)
    except ConfigError as e:
        raise config_fail(e) from None
    printer = ProgressPrinter(quiet=as_json)

    def say(msg: str) -> None:
        err.print(escape(msg), highlight=False)

    async def run() -> None:
        if once:
            for c in chains:
                await index_once(s, c, store, printer)
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await asyncio.gather(*(follow(s, c, store, printer, say, stop) for c in chains))

    try:
        asyncio.run(run())
    except ConfigError as e:
        raise fail(2, f"config {e}") from None
    except IndexerError as e:
        raise fail(1, str(e)) from None
    summaries = [summarize(store, c) for c in chains]
    store.engine.dispose()
    if as_json:
        out.print_json(json.dumps([asdict(x) for x in summaries]))
    else:
        for x in summaries:
            print_summary(x)


def print_summary(x: Any) -> None:
    out.print(
        f"[bold]{x.chain}[/bold] (chain {x.chain_id}) indexed to block {x.cursor:,}: "
        f"{x.events:,} events, {x.sessions} sessions, {x.tasks} tasks, "
        f"{x.network_tasks} network tasks, {x.payments} payments, {x.nodes} nodes; "
        f"{x.malformed} malformed and {x.unknown} unknown logs, {x.reorgs} reorgs",
        highlight=False,
    )


HostOpt = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOpt = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]


@app.command()
def serve(
    config: ConfigOpt = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    no_indexer: Annotated[
        bool, typer.Option("--no-indexer", help="Serve only; do not index.")
    ] = False,
) -> None:
    """Serve the verification API (and the gateway), indexing in-process unless --no-indexer."""
    import uvicorn

    if problem := listen_problem(host, port):
        raise fail(*problem)
    s = settings_or_exit(config, require_chains=False)
    if not s.chains and not s.gateway.get("models"):  # legitimate with a gateway alone
        where = f"config {s.config_path}" if s.config_path else "no config file found"
        err.print(
            f"warning: {escape(where)}: no chain configured (config key chains) and no "
            "gateway.models: serving an empty API. Give --config FILE (or $CORLENS_CONFIG, "
            "./corlens.yaml); see examples/testnet0.yaml",
            highlight=False,
        )
    try:
        from api.compose import serve_app

        application = serve_app(s, run_indexer=not no_indexer)
    except ConfigError as e:
        raise fail(2, f"config {e}") from None
    try:
        check_database(s.database_url)
        err.print(serving_line(host, port)[1], highlight=False)
        uvicorn.run(application, host=host, port=port, log_level="warning")
    except ConfigError as e:
        raise config_fail(e) from None


def check_database(url: str) -> None:
    """Reach the database, and bring a SQLite file to the schema, before a server starts: a
    failure inside the server's own start-up would end it with a traceback."""
    from indexer.db import ensure_schema, make_engine
    from indexer.writer_start import in_process_only

    if in_process_only(url):  # the API's connections would each open an empty database
        raise ConfigError(
            "database_url", "a database in memory cannot be served: use sqlite:///PATH"
        )
    engine = make_engine(url)
    try:
        ensure_schema(url, engine)
    finally:
        engine.dispose()


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Upgrade the database to the newest migration."""
    from indexer.db import make_engine, reach, upgrade

    s = settings_or_exit(config, require_chains=False)
    try:
        engine = make_engine(s.database_url)
        try:
            reach(engine)  # a server that is down: said as every other command says it
        finally:
            engine.dispose()
    except ConfigError as e:
        raise config_fail(e) from None
    try:
        upgrade(s.database_url)
    except Exception as e:  # alembic/driver errors: report, never a traceback
        raise fail(
            1, f"upgrade failed: {e}. Check database_url and that the server is up."
        ) from None
    out.print("database is at the newest migration")


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the demo keeps its config and SQLite database.")
    ] = Path(".corlens"),
    seed: Annotated[int, typer.Option(help="Scenario seed (same seed, same history).")] = 1,
    sessions: Annotated[int, typer.Option(min=1, max=50)] = 2,
    tasks: Annotated[int, typer.Option("--tasks", min=1, max=500, help="Tasks per session.")] = 4,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Index, print the summary and exit.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run corlens on its embedded default: a local Cortensor devnet on anvil, indexed into
    SQLite with progress and a summary, then the API serving it while the indexer follows."""
    if not no_serve and (problem := listen_problem(host, port)):
        raise fail(*problem)
    from api.demo import run_demo

    def show(summary: Any) -> None:
        if as_json:
            out.print_json(json.dumps(asdict(summary)))
        else:
            print_summary(summary)

    try:
        run_demo(
            workdir,
            seed=seed,
            sessions=sessions,
            tasks=tasks,
            serve_at=None if no_serve else (host, port),
            quiet=as_json,
            printer=ProgressPrinter(quiet=as_json),
            say=lambda m: err.print(escape(m), highlight=False),
            on_indexed=show,
        )
    except ConfigError as e:
        raise fail(2, f"config {e}") from None
    except (IndexerError, RuntimeError) as e:
        raise fail(1, str(e)) from None


def _gateway_hooks() -> Any:
    """How the gateway's commands load settings and check the schema."""
    from gateway.cli import CliHooks, SettingsProblem

    def load(path: str | None) -> Settings:
        try:
            s = load_settings(path)
        except ConfigError as e:
            raise SettingsProblem(f"config {e}") from None
        note_new_database(s.database_url)
        return s

    def prepare(url: str) -> None:
        from indexer.db import ensure_schema, make_engine

        engine = make_engine(url)
        try:
            ensure_schema(url, engine)
        except ConfigError as e:
            if isinstance(e, SchemaOutdated):  # as config_fail says it
                raise SettingsProblem(str(e), 1) from None
            raise SettingsProblem(f"config {e}") from None
        finally:
            engine.dispose()

    return CliHooks(load=load, prepare=prepare)


def _register_commands() -> None:
    from api.cli_audit import register as register_audit
    from api.cli_verify import register as register_verify
    from gateway.cli import register as register_gateway

    register_verify(app)
    register_audit(app)
    register_gateway(app, _gateway_hooks())


if not entry.INDEX_ONLY:
    _register_commands()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
