"""ABI files and the event registry.

Each configured contract has an ABI JSON file (``abis/<Contract>.json`` unless the config names
another). The registry maps (address, topic0) to an :class:`EventSpec`; events are keyed by both
because ``TaskAssigned`` and ``SessionCreated`` exist on two contracts with different signatures.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.errors import ConfigError

ABI_DIR = Path(__file__).resolve().parent.parent / "abis"
# Signature -> keccak-256 of every event and function of the ABIs in abis/, written by
# abis/build.py (tests/test_abis.py checks each value).
KECCAK_CACHE = ABI_DIR / "bin" / "keccak.json"


@functools.cache
def _known_hashes() -> dict[str, str]:
    try:
        return dict(json.loads(KECCAK_CACHE.read_text()))
    except (OSError, ValueError, TypeError):  # no cache: every hash is computed
        return {}


def signature_hash(signature: str) -> str:
    """The keccak-256 of an event or function signature, as 0x hex.

    Read from :data:`KECCAK_CACHE` for the signatures of corlens's own ABIs, computed for any
    other: the first hash computed loads the keccak backend, whose first load runs ``file`` on
    the Python binary (pycryptodome checks the architecture), 70 ms of every ``corlens index``
    start before its first request."""
    h = _known_hashes().get(signature)
    if h is None:
        from eth_hash.auto import keccak  # eth_utils' own keccak, without eth_utils' import

        h = "0x" + keccak(signature.encode()).hex()
    return h


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    indexed: bool
    components: tuple[Param, ...] = ()

    def canonical_type(self) -> str:
        if self.type.startswith("tuple"):
            inner = ",".join(c.canonical_type() for c in self.components)
            return f"({inner}){self.type[len('tuple') :]}"
        return self.type


@dataclass(frozen=True)
class EventSpec:
    """One event of one contract, under the name corlens projects it by.

    ``arg_names`` maps corlens's argument names to the names in the ABI (identity by default).
    """

    contract: str
    name: str
    abi_name: str
    inputs: tuple[Param, ...]
    arg_names: dict[str, str] = field(default_factory=dict)

    @property
    def signature(self) -> str:
        return f"{self.abi_name}({','.join(p.canonical_type() for p in self.inputs)})"

    @property
    def topic0(self) -> str:
        return signature_hash(self.signature)


def param_of(raw: dict[str, Any]) -> Param:
    return Param(
        name=raw.get("name", ""),
        type=raw["type"],
        indexed=bool(raw.get("indexed", False)),
        components=tuple(param_of(c) for c in raw.get("components", [])),
    )


def load_abi(path: Path) -> list[dict[str, Any]]:
    """The ABI array of a JSON file (a bare array or an artifact with an ``abi`` key)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), "ABI file not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(str(path), f"is not valid JSON: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "is not UTF-8 text: give an ABI JSON file") from None
    except OSError as e:
        raise ConfigError(str(path), f"cannot be read as an ABI file: {e.strerror}") from None
    abi = data.get("abi") if isinstance(data, dict) else data
    if not isinstance(abi, list) or not all(isinstance(item, dict) for item in abi):
        raise ConfigError(str(path), "holds no ABI array (a list of objects)")
    for i, item in enumerate(abi):
        if item.get("type") in ("event", "function") and not (
            isinstance(item.get("name"), str) and isinstance(item.get("inputs", []), list)
        ):
            raise ConfigError(str(path), f"ABI entry {i} ({item.get('type')}) has no name")
    return abi


def events_of(
    contract: str, abi: list[dict[str, Any]], rename: dict[str, Any] | None = None
) -> list[EventSpec]:
    """Event specs of one ABI. ``rename`` maps corlens event names to {event, args} of this ABI."""
    by_abi_name: dict[str, tuple[str, dict[str, str]]] = {}
    for ours, mapping in (rename or {}).items():
        ev = mapping["event"] if isinstance(mapping, dict) else mapping.event
        args = mapping.get("args", {}) if isinstance(mapping, dict) else mapping.args
        by_abi_name[ev] = (ours, dict(args))
    specs = []
    for item in abi:
        if item.get("type") != "event" or item.get("anonymous"):
            continue
        ours, args = by_abi_name.get(item["name"], (item["name"], {}))
        specs.append(
            EventSpec(
                contract,
                ours,
                item["name"],
                tuple(param_of(p) for p in item.get("inputs", [])),
                args,
            )
        )
    return specs


def function_selector(abi: list[dict[str, Any]], name: str) -> tuple[str, dict[str, Any]]:
    """(selector hex, ABI item) of the first function called ``name``."""
    for item in abi:
        if item.get("type") == "function" and item.get("name") == name:
            sig = f"{name}({','.join(param_of(p).canonical_type() for p in item['inputs'])})"
            return signature_hash(sig)[:10], item
    raise KeyError(name)


def abi_path(contract: str, configured: str | None, base: Path | None = None) -> Path:
    if configured:
        p = Path(configured)
        return p if p.is_absolute() or base is None else base / p
    return ABI_DIR / f"{contract}.json"
