"""Session snapshots: read ``getSession`` at a block and turn it into a ``session`` row.

SessionV2's events do not carry everything a dashboard shows (model identifier, routers, node
lists), so after a range that touched a session the indexer reads the contract's own view of it
at the range's last block. Router and dedicated-node events do not name their session either;
the session comes from the transaction's call data (first argument of the SessionV2 call).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from indexer.abi import function_selector, param_of
from indexer.errors import DecodeError, RpcError
from indexer.rpc import RpcClient

# SessionV2 calls whose first argument is the session id, for events that do not name it.
SESSION_CALLS = (
    "addRouter",
    "updateRouter",
    "removeRouter",
    "addDedicatedNode",
    "removeDedicatedNode",
    "resetAllRouters",
    "deactivateSession",
    "update",
)


class SessionReader:
    """Reads snapshots through the SessionV2 ABI (ours or a user-supplied one)."""

    def __init__(self, chain_id: int, address: str, abi: list[dict[str, Any]]) -> None:
        self.chain_id = chain_id
        self.address = address
        try:
            self.selector, item = function_selector(abi, "getSession")
            self.out_types = [param_of(o).canonical_type() for o in item["outputs"]]
            self.out_fields = [c.name for c in param_of(item["outputs"][0]).components]
        except KeyError:
            self.selector = ""
        self.call_selectors: dict[str, str] = {}
        for name in SESSION_CALLS:
            try:
                sel, _ = function_selector(abi, name)
                self.call_selectors[sel] = name
            except KeyError:
                continue

    def session_from_input(self, tx: dict[str, Any] | None) -> int | None:
        """The session id a SessionV2 transaction acted on, from its call data."""
        if not tx or str(tx.get("to", "")).lower() != self.address:
            return None
        data = str(tx.get("input") or tx.get("data") or "")
        if data[:10] not in self.call_selectors or len(data) < 74:
            return None
        return int(data[10:74], 16)

    async def snapshots(
        self, rpc: RpcClient, session_ids: Sequence[int], block: int
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """(rows, missing): rows for sessions that exist at ``block``, ids of those that do not."""
        if not self.selector or not session_ids:
            return [], []
        calls = [
            (
                "eth_call",
                [
                    {
                        "to": self.address,
                        "data": self.selector + f"{sid:064x}",  # one uint256 argument
                    },
                    hex(block),
                ],
            )
            for sid in session_ids
        ]
        try:
            results: list[Any] = await rpc.batch(calls)
        except RpcError:  # one session reverted (not there yet): ask one by one
            results = []
            for call in calls:
                try:
                    results.append(await rpc.call(*call))
                except RpcError:
                    results.append(None)
        rows, missing = [], []
        for sid, result in zip(session_ids, results, strict=True):
            try:
                if result is None:
                    raise DecodeError("getSession reverted")
                rows.append(self._row(sid, result, block))
            except DecodeError:
                missing.append(sid)
        return rows, missing

    def _row(self, sid: int, result: str, block: int) -> dict[str, Any]:
        raw = bytes.fromhex(result[2:] if result.startswith("0x") else result)
        if not raw:
            raise DecodeError("empty getSession result")
        from eth_abi.abi import decode as abi_decode  # loaded on first use, not at start

        try:
            (tup,) = abi_decode(self.out_types, raw)
        except Exception as e:  # eth-abi raises many types for one bad input
            raise DecodeError(f"getSession: {e}") from None
        s = dict(zip(self.out_fields, tup, strict=True))
        if int(str(s.get("owner", "0x0")), 16) == 0:
            raise DecodeError("session does not exist")
        routers = [
            {"address": str(a).lower(), "info": str(i)}
            for a, i in zip(
                s.get("routerAddresses", []), s.get("routerMetadatas", []), strict=False
            )
        ]
        return {
            "chain_id": self.chain_id,
            "session_id": sid,
            "sid": "0x" + bytes(s["sid"]).hex() if "sid" in s else None,
            "name": s.get("name"),
            "owner": str(s.get("owner", "")).lower() or None,
            "model_identifier": str(s["modelIdentifier"]) if "modelIdentifier" in s else None,
            "state": s.get("state"),
            "redundant": s.get("redundant"),
            "min_nodes": s.get("minNumOfNodes"),
            "max_nodes": s.get("maxNumOfNodes"),
            "mode": s.get("mode"),
            "ephemeral_nodes": [str(a).lower() for a in s.get("ephemeralNodes", [])],
            "dedicated_nodes": [str(a).lower() for a in s.get("dedicatedNodes", [])],
            "routers": routers,
            "snapshot_block": block,
        }
