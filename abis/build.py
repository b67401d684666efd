"""Compile the devnet contracts in abis/src with the pinned solcjs and write their artifacts.

    python abis/build.py              # rewrite abis/<Contract>.json, abis/bin/<Contract>.bin
                                      # and abis/bin/keccak.json (their signatures' hashes)
    python abis/build.py --check      # exit 1 listing artifacts that differ from a fresh build
    python abis/build.py --out DIR    # write DIR/<Contract>.json and DIR/bin/<Contract>.bin

Each file abis/src/X.sol yields the artifacts of its contract X (helper files whose name
matches no deployable contract, such as Owned.sol and Interfaces.sol, yield none). The compiler runs
through solc's standard-JSON interface with fixed settings and source names relative to
abis/src, and the ABI entries are sorted, so the output depends only on the sources.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ABIS_DIR = Path(__file__).resolve().parent
SRC_DIR = ABIS_DIR / "src"
REPO_ROOT = ABIS_DIR.parent
SOLCJS = Path(os.environ.get("CORLENS_SOLCJS", REPO_ROOT / "node_modules" / ".bin" / "solcjs"))

SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "viaIR": False,
    "evmVersion": "cancun",
    # No metadata hash: bytecode must not change when only comments or paths change.
    "metadata": {"bytecodeHash": "none", "appendCBOR": False},
}
# A source carrying this line compiles through the IR pipeline (its stack limit is not the
# legacy one: SessionV2.create takes 13 parameters). IR is about 3x slower, so only where needed.
VIA_IR_MARKER = "// corlens-build: via-ir"
OUTPUTS = ["abi", "evm.bytecode.object"]
# ABI entry kinds in output order; anything else sorts last.
KIND_ORDER = {"constructor": 0, "event": 1, "error": 2, "function": 3, "fallback": 4, "receive": 5}


def _type_str(param: dict[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        return "(" + ",".join(_type_str(c) for c in param["components"]) + ")" + kind[5:]
    return kind


def _sort_key(entry: dict[str, Any]) -> tuple[int, str, str]:
    signature = ",".join(_type_str(p) for p in entry.get("inputs", []))
    return KIND_ORDER.get(entry["type"], 9), entry.get("name", ""), signature


def _solcjs(sources: dict[str, Any], selected: list[str], via_ir: bool) -> dict[str, Any]:
    """One standard-JSON compilation of `selected` (all sources visible for imports)."""
    selection = {f: {"*": OUTPUTS} for f in selected}
    settings = {**SETTINGS, "viaIR": via_ir, "outputSelection": selection}
    request = json.dumps({"language": "Solidity", "sources": sources, "settings": settings})
    # stdout goes to a file: node truncates large output written to a pipe when solcjs exits.
    with tempfile.TemporaryFile() as out_file:
        proc = subprocess.run(
            [str(SOLCJS), "--standard-json"], input=request.encode(), stdout=out_file,
            stderr=subprocess.PIPE, check=False,
        )
        out_file.seek(0)
        text = out_file.read().decode()
    # solcjs may print notices before the JSON document.
    out: dict[str, Any] = json.loads(text[text.index("{"):]) if "{" in text else {}
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    if proc.returncode != 0 or errors or "contracts" not in out:
        detail = "\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors)
        raise SystemExit(f"solcjs failed ({proc.returncode}):\n{detail or proc.stderr.decode()}")
    for warning in out.get("errors", []):
        print(warning.get("formattedMessage", warning.get("message")), file=sys.stderr)
    return out


def compile_sources(src_dir: Path = SRC_DIR) -> dict[str, tuple[list[Any], str]]:
    """Return {contract: (sorted ABI, deploy bytecode hex)} for every X.sol defining X."""
    if not SOLCJS.exists():
        raise SystemExit(f"solcjs not found at {SOLCJS}: run `npm ci` in {REPO_ROOT}")
    sources = {p.name: {"content": p.read_text()} for p in sorted(src_dir.glob("*.sol"))}
    groups: dict[bool, list[str]] = {True: [], False: []}
    for file_name, source in sources.items():
        groups[VIA_IR_MARKER in source["content"]].append(file_name)
    # Two compilations side by side: the IR one dominates the wall time.
    with ThreadPoolExecutor(max_workers=2) as pool:
        modes = [via for via in (True, False) if groups[via]]
        outputs = list(pool.map(lambda via: _solcjs(sources, groups[via], via), modes))
    built: dict[str, tuple[list[Any], str]] = {}
    for out in outputs:
        for file_name, contracts in out["contracts"].items():
            name = Path(file_name).stem
            # Abstract contracts (Owned) have no bytecode and no artifact.
            if name in contracts and contracts[name]["evm"]["bytecode"]["object"]:
                abi = sorted(contracts[name]["abi"], key=_sort_key)
                built[name] = (abi, contracts[name]["evm"]["bytecode"]["object"])
    return dict(sorted(built.items()))


def render(built: dict[str, tuple[list[Any], str]]) -> dict[str, str]:
    """Artifact text keyed by path relative to the output directory."""
    from eth_hash.auto import keccak

    files: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for name, (abi, bytecode) in built.items():
        files[f"{name}.json"] = json.dumps(abi, indent=2, sort_keys=True) + "\n"
        files[f"bin/{name}.bin"] = bytecode + "\n"
        for entry in abi:
            if entry["type"] in ("event", "function"):
                sig = f"{entry['name']}({','.join(_type_str(p) for p in entry['inputs'])})"
                hashes[sig] = "0x" + keccak(sig.encode()).hex()
    # The keccak-256 of every event and function signature, for indexer.abi.signature_hash.
    files["bin/keccak.json"] = json.dumps(hashes, indent=1, sort_keys=True) + "\n"
    return files


def stale_files(files: dict[str, str], out_dir: Path) -> list[str]:
    """Artifacts under out_dir that are missing or differ from `files`."""
    return sorted(
        rel for rel, text in files.items()
        if not (out_dir / rel).exists() or (out_dir / rel).read_text() != text
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if artifacts are stale")
    parser.add_argument("--out", type=Path, default=ABIS_DIR, help="output directory")
    args = parser.parse_args(argv)
    files = render(compile_sources())
    stale = stale_files(files, args.out)
    if args.check:
        for rel in stale:
            print(f"stale: {args.out / rel}")
        return 1 if stale else 0
    for rel in stale:
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text := files[rel])
        print(f"wrote {path} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
