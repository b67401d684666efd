"""ABI encoding and decoding for the devnet driver: pure functions over the ABI JSON in abis/.

Function selectors and calldata (``eth_abi``), event topic0 and log decoding, revert reasons.
Decoders are plain objects built once per ABI; nothing here talks to a node.

    >>> fn = load_abi("CorToken").function("balanceOf")
    >>> fn.signature, fn.selector.hex()
    ('balanceOf(address)', '70a08231')
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_abi.abi import decode, encode
from eth_utils.crypto import keccak

ABI_DIR = Path(__file__).resolve().parent.parent / "abis"
ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)


@dataclass(frozen=True, slots=True)
class Log:
    address: str
    topics: tuple[str, ...]
    data: str
    log_index: int
    block_number: int

    @property
    def topic0(self) -> str:
        return self.topics[0] if self.topics else ""


def type_str(param: dict[str, Any]) -> str:
    """Canonical ABI type of one parameter, tuples expanded: ``(uint256,string)[]``."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        return "(" + ",".join(type_str(c) for c in param["components"]) + ")" + kind[5:]
    return kind


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(self.inputs)})"

    def encode_call(self, args: Sequence[Any]) -> str:
        return "0x" + (self.selector + encode(list(self.inputs), list(args))).hex()

    def decode_output(self, data: str) -> Any:
        """The single return value, or a tuple when the function returns several."""
        values = decode(list(self.outputs), bytes.fromhex(data.removeprefix("0x")))
        return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    topic0: str
    params: tuple[tuple[str, str, bool], ...]  # (name, type, indexed)

    def decode(self, log: Log) -> dict[str, Any]:
        """Arguments by name; indexed dynamic values stay as their topic hash."""
        data_types = [t for _, t, indexed in self.params if not indexed]
        data_values = iter(decode(data_types, bytes.fromhex(log.data.removeprefix("0x"))))
        topics = iter(log.topics[1:])
        out: dict[str, Any] = {}
        for name, kind, indexed in self.params:
            if not indexed:
                out[name] = next(data_values)
            elif kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("("):
                out[name] = next(topics)
            else:
                out[name] = decode([kind], bytes.fromhex(next(topics).removeprefix("0x")))[0]
        return {name: _lower_addresses(kind, out[name]) for name, kind, _ in self.params}


def _lower_addresses(kind: str, value: Any) -> Any:
    """Lowercase decoded addresses (eth_abi returns them checksummed)."""
    if kind == "address":
        return str(value).lower()
    if kind == "address[]":
        return [str(v).lower() for v in value]
    return value


class ContractAbi:
    """Functions and events of one ABI, looked up by name (or by signature if overloaded)."""

    def __init__(self, name: str, abi: list[dict[str, Any]]) -> None:
        self.name = name
        self.functions: dict[str, Function] = {}
        self.events: dict[str, Event] = {}
        self.constructor_inputs: tuple[str, ...] = ()
        names: dict[str, list[Function]] = {}
        for entry in abi:
            inputs = tuple(type_str(p) for p in entry.get("inputs", []))
            if entry["type"] == "constructor":
                self.constructor_inputs = inputs
            elif entry["type"] == "function":
                sig = f"{entry['name']}({','.join(inputs)})"
                outputs = tuple(type_str(p) for p in entry.get("outputs", []))
                fn = Function(entry["name"], keccak(text=sig)[:4], inputs, outputs)
                self.functions[sig] = fn
                names.setdefault(fn.name, []).append(fn)
            elif entry["type"] == "event":
                sig = f"{entry['name']}({','.join(inputs)})"
                params = tuple(
                    (p["name"], type_str(p), bool(p.get("indexed"))) for p in entry["inputs"]
                )
                topic0 = "0x" + keccak(text=sig).hex()
                self.events[entry["name"]] = Event(entry["name"], topic0, params)
        for fn_name, fns in names.items():
            if len(fns) == 1:
                self.functions[fn_name] = fns[0]

    def function(self, name: str) -> Function:
        try:
            return self.functions[name]
        except KeyError:
            raise KeyError(
                f"{self.name} has no function {name!r} (overloaded? use its signature)"
            ) from None


@cache
def load_abi(name: str, abi_dir: Path = ABI_DIR) -> ContractAbi:
    """The ABI of ``abis/<name>.json`` (parsed once per process)."""
    return ContractAbi(name, json.loads((abi_dir / f"{name}.json").read_text()))


def revert_reason(data: str | None, fallback: str) -> str:
    """Decode Error(string)/Panic(uint256) revert data; ``fallback`` when there is none."""
    raw = bytes.fromhex((data or "0x").removeprefix("0x"))
    if raw[:4] == ERROR_SELECTOR:
        return str(decode(["string"], raw[4:])[0])
    if raw[:4] == PANIC_SELECTOR:
        return f"panic 0x{decode(['uint256'], raw[4:])[0]:02x}"
    return fallback.removeprefix("execution reverted: ").removeprefix("execution reverted")
