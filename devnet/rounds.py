"""Drive CognitiveV1 network-task rounds: oracles request, create, prepare and start a round,
the selected miners precommit and commit, an oracle ends it.

Order of a round (each step's transaction is recorded in the ledger's NetworkTaskRecord):
request (oracle; logs NewSessionRequest + NewSessionRequestAssigned naming the creator) ->
created (that creator; SessionPrepareAssigned names the preparer) -> prepared (preparer) ->
started (oracle; SessionStarted lists the selected miners) -> precommitted (the tx that logs
SessionAllPrecommitted: the last precommit, or the oracle's endPrecommit when a miner stays
silent) -> committed (the tx that logs SessionAllCommitted) -> ended (oracle; forced when not
every precommitter committed).
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils.crypto import keccak

from devnet.ledger import NetworkMinerSteps, NetworkTaskRecord
from devnet.lifecycle import Net


def run_network_round(
    net: Net,
    *,
    domain: str,
    subdomain: str,
    challenges: Sequence[str],
    silent_precommit: int = 0,
    silent_commit: int = 0,
) -> NetworkTaskRecord:
    """One full round. CognitiveV1 selects the miners; the last ``silent_precommit`` of them
    never precommit, and of the rest the last ``silent_commit`` precommit but never commit."""
    oracle = net.deployment.accounts.oracle
    receipt = net.send(oracle, "CognitiveV1", "request")
    assigned = net.events(receipt, "CognitiveV1", "NewSessionRequestAssigned")[0]
    round_ = NetworkTaskRecord(network_task_id=assigned["id"], creator=assigned["addr"])
    net.ledger.network_tasks[round_.network_task_id] = round_
    rid = round_.network_task_id
    round_.reach("request", receipt.tx_hash)

    receipt = net.send(round_.creator, "CognitiveV1", "create", domain, subdomain)
    round_.preparer = net.events(receipt, "CognitiveV1", "SessionPrepareAssigned")[0]["addr"]
    round_.reach("created", receipt.tx_hash)
    receipt = net.send(round_.preparer, "CognitiveV1", "prepare", rid, list(challenges), b"", 0)
    round_.reach("prepared", receipt.tx_hash)
    receipt = net.send(oracle, "CognitiveV1", "start", rid)
    selected = net.events(receipt, "CognitiveV1", "SessionStarted")[0]["addrs"]
    round_.participants = {m: NetworkMinerSteps() for m in selected}
    round_.reach("started", receipt.tx_hash)
    precommitting = selected[: len(selected) - silent_precommit]
    committing = precommitting[: len(precommitting) - silent_commit]

    completions = {m: f"network completion {rid} by {m}" for m in selected}
    for miner in precommitting:
        digest = keccak(text=completions[miner])
        receipt = net.send(miner, "CognitiveV1", "precommit", rid, digest, b"", 0)
        round_.participants[miner].precommit = receipt.tx_hash
        if net.events(receipt, "CognitiveV1", "SessionAllPrecommitted"):
            round_.reach("precommitted", receipt.tx_hash)
    if "precommitted" not in round_.steps:
        receipt = net.send(oracle, "CognitiveV1", "endPrecommit", rid)
        round_.reach("precommitted", receipt.tx_hash)

    for miner in committing:
        receipt = net.send(miner, "CognitiveV1", "commit", rid, completions[miner], b"", 0)
        round_.participants[miner].commit = receipt.tx_hash
        if net.events(receipt, "CognitiveV1", "SessionAllCommitted"):
            round_.reach("committed", receipt.tx_hash)
    round_.force_ended = "committed" not in round_.steps
    receipt = net.send(oracle, "CognitiveV1", "end", rid, round_.force_ended)
    round_.reach("ended", receipt.tx_hash)
    return round_
