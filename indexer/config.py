"""corlens settings: one YAML file, ``CORLENS_*`` environment overrides, ``${ENV}`` secrets.

Built once by :func:`load_settings` and passed in explicitly; nothing reads configuration at
import time. Every problem is raised as :class:`~indexer.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from indexer.errors import ConfigError, redact_url

ENV_PREFIX = "CORLENS_"
DEFAULT_CONFIG = "corlens.yaml"
ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
# Ids and block numbers are BIGINT columns (the API's bounds too).
MAX_ID = 2**63 - 1
ENV_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

ExplorerKind = Literal["etherscan", "blockscout", "corlens"]


class Preset(BaseModel):
    """Facts about a known chain, filled in unless the config says otherwise."""

    chain_id: int
    parent_chain_id: int | None = None
    explorer_url: str | None = None
    explorer_kind: ExplorerKind = "corlens"
    dashboard_url: str | None = None
    finality: Literal["tags", "depth"] = "tags"


PRESETS: dict[str, Preset] = {
    # Arbitrum Sepolia, Cortensor's "Mainnet Lite" path.
    "testnet0": Preset(
        chain_id=421614,
        explorer_url="https://sepolia.arbiscan.io",
        explorer_kind="etherscan",
        dashboard_url="https://dashboard-testnet0.cortensor.network",
    ),
    # Arbitrum Orbit L3 on Arbitrum Sepolia; its Blockscout explorer URL is the user's to set.
    "testnet1a": Preset(chain_id=18964747554, parent_chain_id=421614, explorer_kind="blockscout"),
    # anvil; links point at corlens's own transaction view.
    "local": Preset(chain_id=31337, explorer_kind="corlens"),
}

CONTRACT_NAMES = ("SessionV2", "SessionQueueV2", "CognitiveV1", "SessionPayment", "NodePool")


class EventMap(BaseModel):
    """How an event of a user-supplied ABI maps onto the event corlens expects."""

    model_config = ConfigDict(extra="forbid")
    event: str
    args: dict[str, str] = Field(default_factory=dict)


class ContractConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str | None = None
    start_block: int | None = Field(default=None, ge=0, le=MAX_ID)
    abi: str | None = None  # path to an ABI JSON file; default abis/<name>.json
    events: dict[str, EventMap] = Field(default_factory=dict)  # corlens event name -> ABI's

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None and not ADDRESS_RE.match(v):
            raise ValueError(f"not a 20-byte hex address: {v!r}")
        return v.lower() if v else v


class ChainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    preset: Literal["testnet0", "testnet1a", "local"] | None = None
    chain_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    parent_chain_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    rpc_urls: list[str] = Field(min_length=1)
    explorer_url: str | None = None
    explorer_kind: ExplorerKind | None = None
    dashboard_url: str | None = None
    finality: Literal["tags", "depth"] | None = None
    # the depth fallback when tags are missing
    confirmations: int = Field(default=64, ge=0, le=MAX_ID)
    max_reorg_depth: int = Field(default=256, ge=1, le=MAX_ID)
    start_block: int = Field(default=0, ge=0, le=MAX_ID)
    max_block_range: int = Field(default=10_000, ge=1, le=MAX_ID)
    poll_interval: float = Field(default=2.0, gt=0, le=86_400)  # seconds
    rpc_timeout: float = Field(default=20.0, gt=0, le=3_600)
    # Read the sender of router/client step transactions (one batched call per range), so every
    # lifecycle step names its actor; off saves those calls on a bulk backfill.
    resolve_actors: bool = True
    contracts: dict[str, ContractConfig] = Field(default_factory=dict)

    @field_validator("rpc_urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")):
                raise ValueError(
                    f"RPC URL must start with http:// or https:// (got {url[:8]!r}...)"
                )
            try:
                parts = urlsplit(url)
                parts.port  # noqa: B018  (raises on a port that is not a number in range)
            except ValueError as e:
                raise ValueError(f"not a valid URL ({e}): {redact_url(url)}") from None
            if not parts.hostname or any(c.isspace() for c in url):
                raise ValueError(f"not a valid URL (no host, or spaces): {redact_url(url)}")
        return v

    @model_validator(mode="after")
    def _apply_preset(self) -> ChainConfig:
        preset = PRESETS.get(self.preset) if self.preset else None
        if preset is not None:
            self.chain_id = self.chain_id or preset.chain_id
            self.parent_chain_id = self.parent_chain_id or preset.parent_chain_id
            self.explorer_url = self.explorer_url or preset.explorer_url
            self.dashboard_url = self.dashboard_url or preset.dashboard_url
            self.finality = self.finality or preset.finality
            if self.explorer_kind is None:
                self.explorer_kind = preset.explorer_kind
        if self.chain_id is None:
            raise ValueError("chain_id is required when no preset is given")
        self.finality = self.finality or "tags"
        if self.explorer_kind is None:
            self.explorer_kind = "etherscan" if self.explorer_url else "corlens"
        unknown = set(self.contracts) - set(CONTRACT_NAMES)
        if unknown:
            raise ValueError(
                f"unknown contract {sorted(unknown)[0]!r}; known: {', '.join(CONTRACT_NAMES)}"
            )
        return self

    def start_for(self, contract: str) -> int:
        c = self.contracts.get(contract)
        return c.start_block if c and c.start_block is not None else self.start_block


class AuditConfig(BaseModel):
    """The payout audit's knobs."""

    model_config = ConfigDict(extra="forbid")
    # An ended task with committers but no allocation is a finding this many blocks later.
    unpaid_after_blocks: int = Field(default=50, ge=0)


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )
    database_url: str = "sqlite:///corlens.db"
    redis_url: str | None = None
    admin_token: str | None = None
    chains: list[ChainConfig] = Field(default_factory=list)
    gateway: dict[str, Any] = Field(default_factory=dict)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    public_url: str | None = None  # corlens's own base URL for links (default: the request's)
    ready_max_lag_blocks: int = Field(default=50, ge=0)  # /ready fails above this lag
    config_path: str | None = None

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        usage = "use sqlite:///PATH, sqlite:// (in memory) or postgresql+psycopg://USER@HOST/DB"
        if not v.startswith(("sqlite://", "postgresql+psycopg://", "postgresql://")):
            raise ValueError(usage)
        if v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v[len("postgresql://") :]
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(v)
            url.port  # noqa: B018  (parsed lazily: a port that is not a number raises here)
        except (ArgumentError, ValueError) as e:
            raise ValueError(f"{usage} ({e})") from None
        if v.startswith("sqlite") and (url.host or url.port or url.username):
            # sqlite://host/x.db: SQLite has no host; three slashes start a path.
            raise ValueError(f"a SQLite URL names no host: {usage}")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("use redis://HOST:PORT/DB, rediss://... (TLS) or unix://PATH")
        return v

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018  (raises on a port that is not a number in range)
        except ValueError as e:
            raise ValueError(f"not a valid URL ({e}): {redact_url(v)}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"must be an absolute http:// or https:// URL, e.g. https://corlens.example.org "
                f"(got {v[:60]!r})"
            )
        if any(c.isspace() for c in v) or parts.query or parts.fragment:
            raise ValueError(f"must be a base URL with no spaces, query or fragment: {v[:60]!r}")
        return v

    @model_validator(mode="after")
    def _unique_chains(self) -> Settings:
        names = [c.name for c in self.chains]
        for n in names:
            if names.count(n) > 1:
                raise ValueError(f"chain name {n!r} is used twice")
        return self

    def chain(self, name: str) -> ChainConfig:
        for c in self.chains:
            if c.name == name:
                return c
        raise ConfigError("chains", f"no chain named {name!r} (configured: {self.chain_names()})")

    def chain_names(self) -> str:
        return ", ".join(c.name for c in self.chains) or "none"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The loader merges file and environment itself (so per-chain env overrides work).
        del settings_cls, env_settings, dotenv_settings, file_secret_settings
        return (init_settings,)


def expand_env_refs(
    value: Any, env: dict[str, str], loc: tuple[Any, ...] = (), root: Any = None
) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in strings; a missing variable is an error
    naming the key as validation errors do (``chains[local].rpc_urls[0]``)."""
    root = value if root is None else root
    if isinstance(value, dict):
        return {k: expand_env_refs(v, env, (*loc, k), root) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env_refs(v, env, (*loc, i), root) for i, v in enumerate(value)]
    if isinstance(value, str):
        key = _format_loc(loc, root)

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(key, f"refers to ${{{name}}} but the environment variable is not set")

        return ENV_REF_RE.sub(sub, value)
    return value


def _env_value(raw: str, text: bool) -> Any:
    """A variable's value: as it is for a text setting (a token of digits, an address, which
    YAML would read as numbers), else parsed as YAML (numbers, lists, booleans)."""
    if text:
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _is_text_setting(path: list[str]) -> bool:
    """Whether a variable's path (lowercased, chain and contract names included) ends at a
    setting whose type is text: walks Settings, ChainConfig and ContractConfig."""
    model: type[BaseModel] = Settings
    parts = list(path)
    while parts:
        part = parts.pop(0)
        field = next((f for n, f in model.model_fields.items() if n.lower() == part), None)
        if field is None:
            return False
        if not parts:
            return field.annotation in (str, str | None)
        if part in ("chains", "contracts"):
            parts.pop(0)  # the chain's or the contract's name
            model = ChainConfig if part == "chains" else ContractConfig
        else:
            return False
    return False


def _key(node: dict[str, Any], part: str, parent: str) -> str:
    """The key of ``node`` that the lowercased ``part`` of a variable's name means: an existing
    key in any case, a contract by its name, else ``part``."""
    for k in node:
        if str(k).lower() == part:
            return str(k)
    if parent == "contracts":
        for name in CONTRACT_NAMES:
            if name.lower() == part:
                return name
    return part


def apply_env_overrides(data: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Apply ``CORLENS_A__B__C=value`` onto the nested config; ``CHAINS__<name>__KEY`` targets
    one chain by name (or index). Values are parsed as YAML, so lists and numbers work."""
    for var, raw in sorted(env.items()):
        if not var.upper().startswith(ENV_PREFIX) or var.upper() == ENV_PREFIX + "CONFIG":
            continue
        path = [p.lower() for p in var[len(ENV_PREFIX) :].split("__") if p]
        node: Any = data
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, list):
                match = [
                    c
                    for j, c in enumerate(node)
                    if isinstance(c, dict)
                    and (str(c.get("name", "")).lower() == part or str(j) == part)
                ]
                if not match and (i == 1 and path[0] == "chains"):
                    raise ConfigError(var, f"no chain named {part!r} to override")
                if not match:
                    raise ConfigError(var, "names an item of a list: set the whole list, e.g. "
                                      f"{ENV_PREFIX}...__{path[i - 1].upper()}='[...]'")
                node = match[0]
                if last:
                    raise ConfigError(var, "names a chain; add the key to set, e.g. __RPC_URLS")
                continue
            key = _key(node, part, path[i - 1] if i else "")
            if last:
                node[key] = _env_value(raw, _is_text_setting(path))
            else:  # the chains list exists even when no file gave one (names then match none)
                node = node.setdefault(key, [] if (i, key) == (0, "chains") else {})
                if not isinstance(node, dict | list):
                    raise ConfigError(var, f"{part} is not a section")
    return data


def _format_loc(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    parts: list[str] = []
    node: Any = data
    for p in loc:
        if isinstance(p, int) and isinstance(node, list) and p < len(node):
            item = node[p]
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(f"[{name}]" if name else f"[{p}]")
            node = item
        else:
            parts.append(("." if parts else "") + str(p))
            node = node.get(p) if isinstance(node, dict) else None
    return "".join(parts)


def load_settings(
    path: str | Path | None = None,
    *,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    require_file: bool = False,
) -> Settings:
    """Read the YAML file (``path``, else ``CORLENS_CONFIG``, else ./corlens.yaml if present),
    expand ``${ENV}`` references, apply ``CORLENS_*`` overrides, validate."""
    env = dict(os.environ if env is None else env)
    chosen = path or env.get(ENV_PREFIX + "CONFIG")
    data: dict[str, Any] = {}
    file: Path | None = Path(chosen) if chosen else Path(DEFAULT_CONFIG)
    if file is not None and file.exists():
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(str(file), f"is not valid YAML: {e}") from e
        except UnicodeDecodeError:
            raise ConfigError(str(file), "is not UTF-8 text: give the YAML config file") from None
        except OSError as e:
            raise ConfigError(str(file), f"cannot be read: {e.strerror}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(str(file), "must hold a mapping at the top level")
        data = loaded
        data["config_path"] = str(file)
    elif chosen or require_file:
        source = "--config" if path or not chosen else ENV_PREFIX + "CONFIG"
        raise ConfigError(source, f"file {file} does not exist")
    data = expand_env_refs(data, env)
    data = apply_env_overrides(data, env)
    data.update(overrides or {})
    try:
        return Settings(**data)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(_format_loc(tuple(err["loc"]), data), err["msg"]) from None
