"""Decoding: the fast path equals eth-abi on every type the Cortensor events use (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_abi.abi import encode

from indexer.abi import EventSpec, Param, events_of
from indexer.decode import EventDecoder, Registry
from indexer.errors import DecodeError
from tests.conftest import public_abi

ADDR = "0x" + "ab" * 20
CASES = [
    ("uint256", 2**256 - 1),
    ("uint8", 7),
    ("int256", -5),
    ("int64", -(2**63)),
    ("address", ADDR),
    ("bool", True),
    ("bytes32", "0x" + "11" * 32),
    ("string", "héllo, cortensor"),
    ("string", ""),
    ("bytes", "0xdeadbeef"),
    ("address[]", [ADDR, "0x" + "cd" * 20]),
    ("bytes32[]", ["0x" + "22" * 32]),
    ("uint256[]", []),
    ("string[]", ["a", "bb", ""]),
]


def _abi_value(typ: str, v: object) -> object:
    if typ in ("bytes32", "bytes"):
        return bytes.fromhex(str(v)[2:])
    if typ == "bytes32[]":
        return [bytes.fromhex(x[2:]) for x in v]  # type: ignore[attr-defined]
    return v


@pytest.mark.parametrize(("typ", "value"), CASES)
def test_fast_decoder_matches_eth_abi(typ: str, value: object) -> None:
    spec = EventSpec(
        "C", "E", "E", (Param("id", "uint256", True), Param("x", typ, False),
                        Param("y", "uint256", False)))
    dec = EventDecoder(spec)
    assert dec.use_fast
    data = "0x" + encode([typ, "uint256"], [_abi_value(typ, value), 42]).hex()
    topics = [spec.topic0, "0x" + (9).to_bytes(32, "big").hex()]
    args = dec.decode(topics, data)
    assert args == {"id": 9, "x": value, "y": 42}
    assert dec.decode_generic(topics, data) == args  # the generated code equals its loop


def test_generated_decoder_reads_indexed_values_like_the_loop() -> None:
    """Indexed address, signed int and hashed string; the data part empty."""
    spec = EventSpec("C", "E", "E", (Param("who", "address", True), Param("n", "int64", True),
                                     Param("s", "string", True)))
    dec = EventDecoder(spec)
    hashed = "0x" + "5e" * 32
    topics = [spec.topic0, "0x" + "00" * 12 + "ab" * 20, "0x" + "ff" * 32, hashed]
    want = {"who": ADDR, "n": -1, "s": hashed}
    assert dec.decode(topics, "0x") == want == dec.decode_generic(topics, "0x")
    bad = [spec.topic0, "0x" + "01" * 32, "0x" + "ff" * 32, hashed]  # address high bytes set
    for fn in (dec.decode, dec.decode_generic):
        with pytest.raises(DecodeError, match="non-zero high bytes"):
            fn(bad, "0x")


def test_fallback_for_tuple_types() -> None:
    spec = EventSpec("C", "E", "E", (Param("t", "tuple", False,
                                           (Param("a", "uint256", False),
                                            Param("b", "string", False))),))
    dec = EventDecoder(spec)
    assert not dec.use_fast
    data = "0x" + encode(["(uint256,string)"], [(5, "x")]).hex()
    assert dec.decode([spec.topic0], data) == {"t": [5, "x"]}


@pytest.mark.parametrize(
    ("topics_extra", "data", "reason"),
    [
        ([], "0x" + "00" * 64, "topics"),
        (["0x" + "00" * 32], "0x" + "00" * 31, "data is 31 bytes"),
        (["0x" + "00" * 32], "0x" + "00" * 31 + "40" + "00" * 32, "past the end"),
    ],
)
def test_malformed_logs_are_recorded_not_raised(topics_extra: list[str], data: str,
                                                reason: str) -> None:
    spec = EventSpec("C", "E", "E", (Param("id", "uint256", True), Param("s", "string", False),
                                     Param("n", "uint256", False)))
    reg = Registry()
    reg.add(ADDR, [spec])
    log = {"address": ADDR, "topics": [spec.topic0, *topics_extra], "data": data,
           "blockNumber": "0x1", "blockHash": "0x" + "00" * 32, "transactionHash": "0x01",
           "transactionIndex": "0x0", "logIndex": "0x3"}
    unknown = dict(log, topics=["0x" + "99" * 32])
    out = reg.decode_logs([log, unknown])
    assert out.events == [] and out.unknown == 1
    assert len(out.malformed) == 1 and reason in out.malformed[0].reason
    with pytest.raises(DecodeError, match=out.malformed[0].reason):  # the loop says the same
        EventDecoder(spec).decode_generic(log["topics"], data)  # type: ignore[arg-type]


def test_same_event_name_on_two_contracts_decodes_by_address() -> None:
    """TaskAssigned exists on SessionV2 (bytes32[] nodeIds) and SessionQueueV2 (address[])."""
    v2 = public_abi("SessionV2")
    q2 = public_abi("SessionQueueV2")
    reg = Registry()
    a_v2, a_q = "0x" + "01" * 20, "0x" + "02" * 20
    reg.add(a_v2, events_of("SessionV2", v2))
    reg.add(a_q, events_of("SessionQueueV2", q2))
    sig_v2 = next(s for s in events_of("SessionV2", v2) if s.name == "TaskAssigned")
    sig_q = next(s for s in events_of("SessionQueueV2", q2) if s.name == "TaskAssigned")
    assert sig_v2.topic0 != sig_q.topic0
    base = {"blockNumber": "0x1", "blockHash": "0x" + "00" * 32, "transactionHash": "0x01",
            "transactionIndex": "0x0"}
    logs = [
        dict(base, address=a_v2, topics=[sig_v2.topic0], logIndex="0x0",
             data="0x" + encode(["uint256", "uint256", "bytes32[]"],
                                [1, 2, [b"\x01" * 32]]).hex()),
        dict(base, address=a_q, topics=[sig_q.topic0], logIndex="0x1",
             data="0x" + encode(["uint256", "uint256", "address[]"], [1, 2, [ADDR]]).hex()),
        # The queue's topic at SessionV2's address is not an event corlens knows.
        dict(base, address=a_v2, topics=[sig_q.topic0], logIndex="0x2", data="0x"),
    ]
    out = reg.decode_logs(logs)
    assert [(e.contract, e.args) for e in out.events] == [
        ("SessionV2", {"sessionId": 1, "taskId": 2, "nodeIds": ["0x" + "01" * 32]}),
        ("SessionQueueV2", {"sessionId": 1, "taskId": 2, "miners": [ADDR]}),
    ]
    assert out.unknown == 1


def test_event_rename_maps_a_replacement_abi() -> None:
    """A user's real SessionPayment ABI with other names maps onto corlens's names."""
    abi = [{"type": "event", "name": "Allocated", "anonymous": False, "inputs": [
        {"name": "sid", "type": "uint256", "indexed": True},
        {"name": "tid", "type": "uint256", "indexed": True},
        {"name": "miner", "type": "address", "indexed": True},
        {"name": "value", "type": "uint256", "indexed": False}]}]
    (spec,) = events_of("SessionPayment", abi, {"NodePaymentAllocated": {
        "event": "Allocated",
        "args": {"sessionId": "sid", "taskId": "tid", "node": "miner", "amount": "value"}}})
    assert spec.name == "NodePaymentAllocated" and spec.abi_name == "Allocated"
    dec = EventDecoder(spec)
    args = dec.decode([spec.topic0, "0x" + "00" * 31 + "01", "0x" + "00" * 31 + "02",
                       "0x" + "00" * 12 + ADDR[2:]], "0x" + encode(["uint256"], [10]).hex())
    assert args == {"sessionId": 1, "taskId": 2, "node": ADDR, "amount": 10}


def test_unusable_abi_files_are_named(tmp_path: Path) -> None:
    """An ABI path that is a directory, a file that is not UTF-8, or an event without a name:
    a config error naming the file, not a traceback at start."""
    from indexer.abi import load_abi
    from indexer.errors import ConfigError

    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe[]")
    nameless = tmp_path / "nameless.json"
    nameless.write_text('[{"type": "event", "inputs": []}]')
    for path, problem in ((tmp_path, "cannot be read"), (binary, "not UTF-8"),
                          (nameless, r"ABI entry 0 \(event\) has no name")):
        with pytest.raises(ConfigError, match=problem) as ei:
            load_abi(path)
        assert ei.value.key == str(path)
