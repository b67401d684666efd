"""A small, fast synchronous client that sends transactions to anvil from unlocked accounts.

Raw JSON-RPC over one pooled ``httpx.Client``; calldata encoded by :mod:`devnet.abi` from the
ABI JSON in ``abis/``; no web3 contract machinery (its formatters dominate the
cost of a devnet run). A transaction that reverts raises :class:`TxReverted` carrying the
contract's revert reason.

    >>> chain = Chain(url)                                        # doctest: +SKIP
    >>> address, _ = chain.deploy(owner, "CorToken")              # doctest: +SKIP
    >>> chain.transact(owner, address, "CorToken", "mint", user, 10**18)   # doctest: +SKIP
    >>> chain.call(address, "CorToken", "balanceOf", user)        # doctest: +SKIP
    1000000000000000000

Addresses returned by this module are lowercase 0x-hex.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
from eth_abi.abi import encode

from devnet.abi import ABI_DIR, ContractAbi, Event, Function, Log, load_abi, revert_reason

__all__ = [
    "Chain", "ChainError", "ContractAbi", "Event", "Function", "Log", "Receipt", "TxReverted",
    "load_abi",
]

# With automine the receipt exists when eth_sendTransaction returns; with --block-time it may
# take one block, so poll for a bounded time.
RECEIPT_TIMEOUT_S = 30.0
RECEIPT_POLL_S = 0.02
# Every transaction carries this gas limit instead of an estimate: estimation costs a second
# execution, and an exact estimate runs out of gas when the mined block's timestamp differs
# from the one estimated against (SSTORE of block.timestamp costs more when it changes).
DEFAULT_GAS = 15_000_000


class ChainError(RuntimeError):
    """A JSON-RPC call failed."""


class TxReverted(ChainError):
    """A transaction or call reverted; ``reason`` is the contract's revert string."""

    def __init__(self, label: str, reason: str, tx_hash: str | None = None) -> None:
        super().__init__(f"{label} reverted: {reason}")
        self.label = label
        self.reason = reason
        self.tx_hash = tx_hash


@dataclass(frozen=True, slots=True)
class Receipt:
    tx_hash: str
    block_number: int
    sender: str
    to: str | None
    contract_address: str | None
    gas_used: int
    logs: tuple[Log, ...]

    def events(self, address: str, event: Event) -> list[tuple[Log, dict[str, Any]]]:
        """Logs of ``event`` emitted by ``address`` in this receipt, decoded, in log order."""
        address = address.lower()
        return [
            (log, event.decode(log))
            for log in self.logs
            if log.address == address and log.topic0 == event.topic0
        ]


class Chain:
    """JSON-RPC to one node; transactions from the node's unlocked accounts."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url
        self._client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=4))
        self._id = 0

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """One JSON-RPC call; a node error raises :class:`ChainError` (TxReverted for reverts)."""
        self._id += 1
        request = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": params or []}
        body = self._client.post(self.url, json=request).json()
        error = body.get("error")
        if error is None:
            return body["result"]
        message = str(error.get("message", error))
        if "revert" in message or error.get("code") == 3:
            raise TxReverted(method, revert_reason(error.get("data"), message or "reverted"))
        raise ChainError(f"{method}: {message}")

    def accounts(self) -> list[str]:
        return [a.lower() for a in self.rpc("eth_accounts")]

    def chain_id(self) -> int:
        return int(self.rpc("eth_chainId"), 16)

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def send(self, tx: dict[str, Any], label: str) -> Receipt:
        """Send a prepared transaction and wait for its receipt; raise TxReverted on failure.

        A reverting transaction is mined (as on a real chain) and raises with its tx hash;
        the reason comes from replaying it with eth_call on the parent block's state.
        """
        tx = {"gas": hex(DEFAULT_GAS), **tx}
        try:
            tx_hash = str(self.rpc("eth_sendTransaction", [tx]))
        except TxReverted as e:
            raise TxReverted(label, e.reason) from None
        receipt = self.receipt(tx_hash)
        if receipt["status"] != "0x1":
            block = hex(int(receipt["blockNumber"], 16) - 1)
            call = {k: v for k, v in tx.items() if k != "nonce"}
            try:
                self.rpc("eth_call", [call, block])
                reason = "reverted (reason unavailable)"
            except TxReverted as e:
                reason = e.reason
            raise TxReverted(label, reason, tx_hash)
        return _parse_receipt(receipt)

    def receipt(self, tx_hash: str) -> dict[str, Any]:
        deadline = time.monotonic() + RECEIPT_TIMEOUT_S
        while True:
            receipt = self.rpc("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                return dict(receipt)
            if time.monotonic() > deadline:
                raise ChainError(f"no receipt for {tx_hash} after {RECEIPT_TIMEOUT_S:.0f}s")
            time.sleep(RECEIPT_POLL_S)

    def transact(
        self,
        sender: str,
        to: str,
        contract: str,
        fn: str,
        *args: Any,
        value: int = 0,
        gas: int = DEFAULT_GAS,
    ) -> Receipt:
        """Call ``contract.fn(*args)`` at ``to`` in a transaction from ``sender``."""
        function = load_abi(contract).function(fn)
        tx = {"from": sender, "to": to, "data": function.encode_call(args), "gas": hex(gas)}
        if value:
            tx["value"] = hex(value)
        return self.send(tx, f"{contract}.{function.name}")

    def call(self, to: str, contract: str, fn: str, *args: Any, block: str = "latest") -> Any:
        """Run a view function and decode its result (a tuple when it returns several)."""
        function = load_abi(contract).function(fn)
        try:
            data = self.rpc("eth_call", [{"to": to, "data": function.encode_call(args)}, block])
        except TxReverted as e:
            raise TxReverted(f"{contract}.{function.name}", e.reason) from None
        return function.decode_output(str(data))

    def deploy(self, sender: str, contract: str, *args: Any) -> tuple[str, Receipt]:
        """Deploy ``abis/bin/<contract>.bin`` with constructor ``args``; return its address."""
        bytecode = (ABI_DIR / "bin" / f"{contract}.bin").read_text().strip()
        ctor = load_abi(contract).constructor_inputs
        data = "0x" + bytecode + (encode(list(ctor), list(args)).hex() if ctor else "")
        receipt = self.send({"from": sender, "data": data}, f"deploy {contract}")
        if receipt.contract_address is None:
            raise ChainError(f"deploy {contract}: no contract address in receipt")
        return receipt.contract_address, receipt

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Chain:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _parse_receipt(raw: dict[str, Any]) -> Receipt:
    block = int(raw["blockNumber"], 16)
    logs = tuple(
        Log(
            address=str(log["address"]).lower(),
            topics=tuple(str(t) for t in log["topics"]),
            data=str(log["data"]),
            log_index=int(log["logIndex"], 16),
            block_number=block,
        )
        for log in raw["logs"]
    )
    contract = raw.get("contractAddress")
    return Receipt(
        tx_hash=str(raw["transactionHash"]),
        block_number=block,
        sender=str(raw["from"]).lower(),
        to=str(raw["to"]).lower() if raw.get("to") else None,
        contract_address=str(contract).lower() if contract else None,
        gas_used=int(raw["gasUsed"], 16),
        logs=logs,
    )
