"""Deploy and wire the devnet contracts on an anvil chain.

:func:`deploy_all` deploys CorToken, NodePool, SessionV2, SessionQueueV2, SessionPayment and
CognitiveV1 from ``abis/bin``, wires them (SessionV2 knows the queue, payment and pool, so its
public getters return them; the queue and SessionV2 operate the pool; the payment contract asks
SessionV2 who routes a session), registers the oracles and miners, mints COR to the users and
approves SessionPayment for them.

Accounts come from anvil's default mnemonic, by index (anvil must run with >= 20 accounts):

    0 owner | 1-3 routers | 4-5 oracles | 6-8 users | 9-18 miners | 19 outsider (no role)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from devnet.abi import load_abi
from devnet.chain import Chain, Receipt
from devnet.ledger import LogRecord, TxRecord

CONTRACTS = ("CorToken", "NodePool", "SessionV2", "SessionQueueV2", "SessionPayment", "CognitiveV1")
ACCOUNTS_NEEDED = 20
COR = 10**18
USER_MINT = 1_000_000 * COR  # far more than any scenario spends
MAX_UINT256 = 2**256 - 1
NETWORK_MINERS_PER_ROUND = 3  # CognitiveV1.thresholdMiner


@dataclass(frozen=True)
class Roles:
    owner: str
    routers: list[str]
    oracles: list[str]
    users: list[str]
    miners: list[str]
    outsider: str  # no role anywhere: for tests of access control

    @property
    def oracle(self) -> str:
        """The oracle that requests, starts and ends network rounds."""
        return self.oracles[0]

    @classmethod
    def from_accounts(cls, accounts: list[str]) -> Roles:
        if len(accounts) < ACCOUNTS_NEEDED:
            raise ValueError(f"need {ACCOUNTS_NEEDED} unlocked accounts, node has {len(accounts)}")
        return cls(
            owner=accounts[0],
            routers=accounts[1:4],
            oracles=accounts[4:6],
            users=accounts[6:9],
            miners=accounts[9:19],
            outsider=accounts[19],
        )


@dataclass
class Deployment:
    addresses: dict[str, str]  # contract name -> lowercase address
    accounts: Roles
    start_block: int  # block of the first deployment transaction
    chain_id: int
    txs: list[TxRecord] = field(default_factory=list)  # setup transactions, before any scenario

    def to_dict(self) -> dict[str, Any]:
        return {
            "addresses": dict(self.addresses),
            "accounts": asdict(self.accounts),
            "start_block": self.start_block,
            "chain_id": self.chain_id,
            "txs": [asdict(t) for t in self.txs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deployment:
        txs = [
            TxRecord(**{**t, "logs": [LogRecord(**log) for log in t["logs"]]})
            for t in data.get("txs", [])
        ]
        return cls(
            addresses=dict(data["addresses"]),
            accounts=Roles(**data["accounts"]),
            start_block=int(data["start_block"]),
            chain_id=int(data["chain_id"]),
            txs=txs,
        )


def event_names(addresses: dict[str, str]) -> dict[tuple[str, str], str]:
    """(address, topic0) -> "<Contract>.<Event>" for every event of the deployed contracts."""
    names: dict[tuple[str, str], str] = {}
    for contract, address in addresses.items():
        for event in load_abi(contract).events.values():
            names[(address.lower(), event.topic0)] = f"{contract}.{event.name}"
    return names


def tx_record(receipt: Receipt, function: str, names: dict[tuple[str, str], str]) -> TxRecord:
    """The ledger's view of one receipt."""
    return TxRecord(
        tx_hash=receipt.tx_hash,
        block_number=receipt.block_number,
        sender=receipt.sender,
        to=receipt.to or receipt.contract_address,
        function=function,
        logs=[
            LogRecord(
                address=log.address,
                topic0=log.topic0,
                log_index=log.log_index,
                block_number=log.block_number,
                event=names.get((log.address, log.topic0), ""),
            )
            for log in receipt.logs
        ],
    )


def deploy_all(url: str) -> Deployment:
    """Deploy and wire every devnet contract on the node at ``url``."""
    with Chain(url) as chain:
        roles = Roles.from_accounts(chain.accounts())
        owner = roles.owner
        addresses: dict[str, str] = {}
        receipts: list[tuple[Receipt, str]] = []
        for contract in CONTRACTS:
            args = (addresses["CorToken"],) if contract == "SessionPayment" else ()
            addresses[contract], receipt = chain.deploy(owner, contract, *args)
            receipts.append((receipt, f"deploy {contract}"))

        def setup(contract: str, fn: str, *args: Any, sender: str = owner) -> None:
            receipt = chain.transact(sender, addresses[contract], contract, fn, *args)
            receipts.append((receipt, f"{contract}.{fn}"))

        setup("SessionV2", "setSessionQueue", addresses["SessionQueueV2"])
        setup("SessionV2", "setSessionPayment", addresses["SessionPayment"])
        setup("SessionV2", "setNodePool", addresses["NodePool"])
        setup("SessionQueueV2", "setSession", addresses["SessionV2"])
        setup("SessionQueueV2", "setNodePool", addresses["NodePool"])
        setup("SessionQueueV2", "setSessionPayment", addresses["SessionPayment"])
        setup("SessionPayment", "setSession", addresses["SessionV2"])
        setup("NodePool", "setOperator", addresses["SessionV2"], True)
        setup("NodePool", "setOperator", addresses["SessionQueueV2"], True)
        for oracle in roles.oracles:
            setup("CognitiveV1", "addOracle", oracle)
        setup("CognitiveV1", "setMiners", roles.miners)
        setup("CognitiveV1", "setThresholdMiner", NETWORK_MINERS_PER_ROUND)
        for miner in roles.miners:
            setup("NodePool", "add", miner)
        for user in roles.users:
            setup("CorToken", "mint", user, USER_MINT)
            setup("CorToken", "approve", addresses["SessionPayment"], MAX_UINT256, sender=user)
        names = event_names(addresses)
        return Deployment(
            addresses=addresses,
            accounts=roles,
            start_block=receipts[0][0].block_number,
            chain_id=chain.chain_id(),
            txs=[tx_record(r, label, names) for r, label in receipts],
        )
