"""The committed contract artifacts are a fresh build, and the devnet contracts declare the
public Cortensor events with identical topic0 and indexed flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from eth_utils.crypto import keccak

from tests.conftest import SHARED_ABIS, unavailable

REPO = Path(__file__).resolve().parents[1]
ABIS = REPO / "abis"
PUBLIC = ("SessionV2", "SessionQueueV2", "CognitiveV1", "NodePool")
ASSUMED_PAYMENT_EVENTS = {
    "SessionDeposited(uint256,address,uint256)": (True, True, False),
    "NetworkPaid(uint256,uint256,uint256)": (True, True, False),
    "NodePaymentAllocated(uint256,uint256,address,uint256)": (True, True, True, False),
    "NodePaymentWithdrawn(address,address,uint256)": (True, True, False),
}


def _type(param: dict[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        return "(" + ",".join(_type(c) for c in param["components"]) + ")" + kind[5:]
    return kind


def _events(path: Path) -> dict[str, tuple[str, tuple[bool, ...]]]:
    """signature -> (topic0 recomputed from the signature, indexed flags)."""
    abi = json.loads(path.read_text())
    out: dict[str, tuple[str, tuple[bool, ...]]] = {}
    for entry in abi:
        if entry["type"] == "event":
            sig = f"{entry['name']}({','.join(_type(p) for p in entry['inputs'])})"
            flags = tuple(bool(p.get("indexed")) for p in entry["inputs"])
            out[sig] = ("0x" + keccak(text=sig).hex(), flags)
    return out


def test_artifacts_match_a_fresh_build(tmp_path: Path) -> None:
    solcjs = Path(os.environ.get("CORLENS_SOLCJS", REPO / "node_modules" / ".bin" / "solcjs"))
    if not solcjs.exists():
        unavailable("solcjs not installed: run `npm ci`")
    subprocess.run(
        [sys.executable, str(ABIS / "build.py"), "--out", str(tmp_path)], check=True,
        capture_output=True,
    )
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        [p.relative_to(ABIS) for p in ABIS.glob("*.json")]
        + [p.relative_to(ABIS) for p in (ABIS / "bin").glob("*.bin")]
        + [p.relative_to(ABIS) for p in (ABIS / "bin").glob("*.json")]
    )
    assert fresh == committed
    for rel in fresh:
        assert (tmp_path / rel).read_text() == (ABIS / rel).read_text(), f"abis/{rel} is stale"


def test_signature_hashes_are_the_keccak_of_their_signatures() -> None:
    """abis/bin/keccak.json holds every event and function signature of the committed ABIs
    with its keccak-256, so that indexing starts without loading a keccak backend; any other
    signature is hashed when asked."""
    from indexer.abi import KECCAK_CACHE, signature_hash

    cache = json.loads(KECCAK_CACHE.read_text())
    for sig, h in cache.items():
        assert h == "0x" + keccak(text=sig).hex(), sig
    for path in ABIS.glob("*.json"):
        for entry in json.loads(path.read_text()):
            if entry["type"] in ("event", "function"):
                assert f"{entry['name']}({','.join(_type(p) for p in entry['inputs'])})" in cache
    other = "NotInAnyAbi(uint8,(address,bytes32)[])"
    assert other not in cache
    assert signature_hash(other) == "0x" + keccak(text=other).hex()
    # Topics of every committed ABI come from the cache: no keccak backend is loaded.
    probe = ("import sys; from indexer.abi import ABI_DIR, events_of, load_abi; "
             "[s.topic0 for p in sorted(ABI_DIR.glob('*.json')) "
             "for s in events_of(p.stem, load_abi(p))]; "
             "print(sorted(m for m in sys.modules if m.startswith(('eth_hash', 'Crypto'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("name", PUBLIC)
def test_public_events_have_identical_topics(name: str) -> None:
    public_path = SHARED_ABIS / f"{name}.json"
    if not public_path.exists():
        unavailable(f"public ABIs not found at {SHARED_ABIS} (set CORLENS_SHARED_ABIS)")
    public = _events(public_path)
    ours = _events(ABIS / f"{name}.json")
    assert public, f"no events in {public_path}"
    missing = sorted(set(public) - set(ours))
    assert not missing, f"abis/{name}.json lacks public events {missing}"
    for sig, (topic0, flags) in public.items():
        assert ours[sig] == (topic0, flags), f"{name}.{sig}: indexed flags differ"
    # Event names are unique per contract, so no devnet event shadows a public one.
    assert len({sig.split("(")[0] for sig in ours}) == len(ours)


def test_session_payment_declares_the_assumed_events() -> None:
    ours = _events(ABIS / "SessionPayment.json")
    assert {sig: flags for sig, (_, flags) in ours.items()} == ASSUMED_PAYMENT_EVENTS
