"""Dashboard and explorer links: pure functions of the chain's configuration.

Etherscan-style and Blockscout-style explorers share the ``/tx/``, ``/address/``, ``/block/``
paths; a chain without a public explorer (``corlens`` kind: local, and testnet1a until its
explorer URL is set) links to corlens's own transaction and node views instead.

>>> from indexer.config import ChainConfig, ExplorerKind
>>> c = ChainConfig(name="t0", preset="testnet0", rpc_urls=["http://x"])
>>> Links(c, "http://localhost:8000").tx("0xab")
'https://sepolia.arbiscan.io/tx/0xab'
>>> Links(c, "http://localhost:8000").task_dashboard(3, 7)
'https://dashboard-testnet0.cortensor.network/session/3/7'
"""

from __future__ import annotations

from indexer.config import ChainConfig, ExplorerKind


def explorer_kind_used(chain: ChainConfig) -> ExplorerKind:
    """The kind of the links corlens builds: ``corlens`` (its own views) whenever the chain has
    no explorer URL, whatever kind the config or preset names.

    >>> explorer_kind_used(ChainConfig(name="t1", preset="testnet1a", rpc_urls=["http://x"]))
    'corlens'
    """
    return chain.explorer_kind or "corlens" if chain.explorer_url else "corlens"


class Links:
    """Links for one chain; ``api_base`` is corlens's own public base URL."""

    def __init__(self, chain: ChainConfig, api_base: str) -> None:
        self.chain = chain
        self.api = api_base.rstrip("/") + f"/api/v1/chains/{chain.name}"
        self.kind = explorer_kind_used(chain)
        url = chain.explorer_url if self.kind != "corlens" else None
        self.explorer = url.rstrip("/") if url else None

    def tx(self, tx_hash: str) -> str:
        if self.explorer:
            return f"{self.explorer}/tx/{tx_hash}"
        return f"{self.api}/tx/{tx_hash}"

    def address(self, address: str) -> str:
        if self.explorer:
            return f"{self.explorer}/address/{address}"
        return f"{self.api}/nodes/{address}"

    def block(self, number: int) -> str | None:
        return f"{self.explorer}/block/{number}" if self.explorer else None

    def session_dashboard(self, session_id: int) -> str | None:
        d = self.chain.dashboard_url
        return f"{d.rstrip('/')}/session/{session_id}" if d else None

    def task_dashboard(self, session_id: int, task_id: int) -> str | None:
        d = self.chain.dashboard_url
        return f"{d.rstrip('/')}/session/{session_id}/{task_id}" if d else None

    def task(self, session_id: int, task_id: int) -> str:
        return f"{self.api}/sessions/{session_id}/tasks/{task_id}"

    def verify(self, session_id: int, task_id: int) -> str:
        return f"{self.task(session_id, task_id)}/verify"
