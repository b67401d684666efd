"""Generated decoders: one straight-line Python function per event, built once.

:class:`~indexer.decode.EventDecoder` describes how each argument is read (a topic, a head word,
a dynamic tail); for the common case (elementary types and one-level arrays of them) this module
turns that description into the source of one function without loops, so decoding a log is a
handful of slices and ``int(..., 16)`` calls. The checks and error messages are those of the
generic path. Names and messages reach the generated code as bound constants, never as source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from indexer.errors import DecodeError

Decode = Callable[[list[str], str], dict[str, Any]]


def generate(
    topic_decoders: list[tuple[str, Callable[[str], Any] | None]],
    body: list[tuple[str, Callable[[str], Any] | None, Callable[[str, int], Any] | None]],
    uint: Callable[[str], int],
) -> Decode:
    """A decoder for an event with ``topic_decoders`` (name, word decoder or None for a hashed
    dynamic value) and ``body`` (name, static word decoder, dynamic decoder): the generic
    path's semantics, one function call per log."""
    ns: dict[str, Any] = {"DecodeError": DecodeError}
    n_topics = 1 + len(topic_decoders)
    ns["m_topics"] = f"expected {n_topics} topics, got "
    src = [
        "def decode(topics, data):",
        f"    if len(topics) != {n_topics}:",
        "        raise DecodeError(m_topics + str(len(topics)))",
    ]
    values: list[tuple[int, str]] = []  # (position in the names list, expression)
    names: list[str] = []
    for i, (name, dec) in enumerate(topic_decoders, start=1):
        ns[f"m_t{i}"] = f"topic for {name} is not 32 bytes"
        src += [
            f"    t{i} = topics[{i}]",
            f"    if len(t{i}) != 66:",
            f"        raise DecodeError(m_t{i})",
        ]
        if dec is None:  # indexed dynamic values are stored as their keccak hash
            expr = f"t{i}"
        elif dec is uint:
            expr = f"int(t{i}, 16)"
        else:
            ns[f"td{i}"] = dec
            expr = f"td{i}(t{i}[2:])"
        values.append((len(names), expr))
        names.append(name)
    ns["m_len"] = f"not a whole ABI encoding of {len(body)} values"
    src += [
        "    d = data[2:] if data[:2] == '0x' else data",
        "    n = len(d)",
        f"    if n < {64 * len(body)} or n % 64:",
        "        raise DecodeError(f'data is {n // 2} bytes, ' + m_len)",
    ]
    for j, (name, static, dyn) in enumerate(body):
        word = f"d[{64 * j}:{64 * (j + 1)}]"
        if static is uint:
            expr = f"int({word}, 16)"
        elif static is not None:
            ns[f"s{j}"] = static
            expr = f"s{j}({word})"
        else:
            ns[f"y{j}"] = dyn
            ns[f"m_o{j}"] = f"offset of {name} points past the end of data"
            src += [
                f"    o{j} = 2 * int({word}, 16)",
                f"    if o{j} + 64 > n:",
                f"        raise DecodeError(m_o{j})",
            ]
            expr = f"y{j}(d, o{j})"
        values.append((len(names), expr))
        names.append(name)
    ns["names"] = names
    src.append("    return {" + ", ".join(f"names[{k}]: {e}" for k, e in values) + "}")
    exec("\n".join(src), ns)  # noqa: S102 (source built above from fixed templates)
    fn: Decode = ns["decode"]
    return fn
