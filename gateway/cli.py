"""Gateway commands for the ``corlens`` CLI, registered by api.cli:

    corlens gateway --config FILE [--host 127.0.0.1] [--port 8000] [--replica-id ID]
    corlens keys create --name N [--rpm N] [--json]     # prints the key once
    corlens keys list [--json] | keys disable ID | keys enable ID

Exit status: 0 success, 2 bad usage or configuration (the message names the option or key),
1 a failure at run time.

Settings come through a :class:`CliHooks` the composition root (api.cli) passes to
:func:`register`: loading the config file and checking the schema are not the gateway's
business.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import typer
from rich.console import Console
from rich.markup import escape

from api.cli_opts import listen_problem
from gateway.config import GatewayConfig, load_gateway_config
from gateway.errors import GatewayConfigError
from gateway.limits import BIGINT_MAX, INT_MAX, KEY_NAME_MAX

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="YAML config file "
                                               "(default: $CORLENS_CONFIG, then ./corlens.yaml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
KeyIdArg = Annotated[int, typer.Argument(metavar="ID", min=0, max=BIGINT_MAX)]


class GatewaySettings(Protocol):
    database_url: str
    redis_url: str | None
    admin_token: str | None
    gateway: dict[str, Any]


class SettingsProblem(Exception):
    """A settings problem; ``exit_code`` 2 for bad config, 1 for a run-time failure."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class CliHooks:
    """``load(config_path)`` -> settings; ``prepare(database_url)`` makes sure the schema is
    current (SQLite: upgrade; PostgreSQL: refuse an outdated one). Both raise
    :class:`SettingsProblem`."""

    load: Callable[[str | None], GatewaySettings]
    prepare: Callable[[str], None]


def fail(code: int, message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(code)


def register(app: typer.Typer, hooks: CliHooks) -> None:
    """Add ``gateway`` and ``keys`` to the main CLI; ``hooks`` load settings and check the
    schema (the composition root supplies them, so the gateway never imports the indexer)."""
    h = hooks
    keys_app = typer.Typer(no_args_is_help=True, help="Gateway API keys.")
    app.add_typer(keys_app, name="keys")

    def settings(config: str | None) -> tuple[GatewaySettings, GatewayConfig]:
        try:
            s = h.load(config)
            cfg = load_gateway_config(s.gateway)
            h.prepare(s.database_url)
        except SettingsProblem as e:
            raise fail(e.exit_code, str(e)) from None
        except GatewayConfigError as e:
            raise fail(2, f"config {e}") from None
        return s, cfg

    @app.command("gateway")
    def gateway_cmd(
        config: ConfigOpt = None,
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
        replica_id: Annotated[str | None, typer.Option(help="This replica's name in the "
                                                       "accounting (default host-pid).")] = None,
        verify_base_url: Annotated[str | None, typer.Option(
            help="Base URL of the verification API for cortensor.verification_url.")] = None,
    ) -> None:
        """Serve the gateway alone (one replica; replicas share Redis and the database)."""
        import uvicorn

        from gateway.app import Gateway, create_gateway_app

        if problem := listen_problem(host, port):
            raise fail(*problem)
        s, cfg = settings(config)
        if not cfg.models:
            raise fail(2, "config gateway.models: no model configured")
        gw = Gateway(cfg, database_url=s.database_url, redis_url=s.redis_url,
                     admin_token=s.admin_token, replica_id=replica_id,
                     verify_base_url=verify_base_url)
        try:
            uvicorn.run(create_gateway_app(gw), host=host, port=port, log_level="warning",
                        access_log=False, backlog=4096, timeout_graceful_shutdown=10)
        except OSError as e:
            raise fail(1, f"cannot serve on {host}:{port}: {e}") from None

    def store(config: str | None) -> Any:
        from gateway.store import GatewayStore

        s, _ = settings(config)
        return GatewayStore(s.database_url)

    @keys_app.command("create")
    def keys_create(
        name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
        rpm: Annotated[int | None, typer.Option("--rpm", min=1, max=INT_MAX, help="Requests "
                                                "per minute (default: unlimited).")] = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Create an API key and print it (shown once; only its hash is stored)."""
        if not name.strip():
            raise fail(2, "--name: must not be empty")
        if len(name.strip()) > KEY_NAME_MAX:
            raise fail(2, f"--name: at most {KEY_NAME_MAX} characters")
        st = store(config)
        try:
            info, key = st.create_key(name.strip(), rpm)
        finally:
            st.dispose()
        if as_json:
            out.print_json(json.dumps({**info.public(), "key": key}))
            return
        out.print(f"created key {info.id} ({escape(info.name)}); it is shown only once:",
                  highlight=False)
        out.print(key, highlight=False)

    @keys_app.command("list")
    def keys_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
        """List API keys (prefix, state, limit, last use; never the key)."""
        st = store(config)
        try:
            keys = st.list_keys()
        finally:
            st.dispose()
        if as_json:
            out.print_json(json.dumps([k.public() for k in keys]))
            return
        if not keys:
            out.print("no API keys (create one with `corlens keys create --name N`)")
        for k in keys:
            state = "enabled" if k.enabled else "disabled"
            rpm = f"{k.rpm_limit} rpm" if k.rpm_limit else "unlimited"
            used = k.last_used_at.isoformat() if k.last_used_at else "never used"
            out.print(f"{k.id:>5}  {k.prefix}...  {state:<8}  {rpm:<10}  {used}  "
                      f"{escape(k.name)}", highlight=False)

    def set_enabled(key_id: int, config: str | None, enabled: bool, as_json: bool) -> None:
        st = store(config)
        try:
            info = st.set_key_enabled(key_id, enabled)
        finally:
            st.dispose()
        if info is None:
            raise fail(2, f"ID: no API key {key_id} (see `corlens keys list`)")
        if as_json:
            out.print_json(json.dumps(info.public()))
        else:
            out.print(f"key {info.id} ({escape(info.name)}) is "
                      f"{'enabled' if enabled else 'disabled'}", highlight=False)

    @keys_app.command("disable")
    def keys_disable(key_id: KeyIdArg, config: ConfigOpt = None, as_json: JsonOpt = False
                     ) -> None:
        """Disable a key: requests with it are refused (401)."""
        set_enabled(key_id, config, False, as_json)

    @keys_app.command("enable")
    def keys_enable(key_id: KeyIdArg, config: ConfigOpt = None, as_json: JsonOpt = False
                    ) -> None:
        """Enable a disabled key again."""
        set_enabled(key_id, config, True, as_json)
