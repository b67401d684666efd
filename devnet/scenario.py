"""A deterministic devnet scenario: sessions, user tasks, network rounds, payments, pool changes.

:func:`run_scenario` drives real lifecycles from distinct accounts and returns the
:class:`~devnet.ledger.Ledger` an index is compared against. ``random.Random(seed)`` picks
models, redundancy, nodes, miners, prompts and amounts; the same seed on a fresh deployment
gives the same ledger (transaction hashes and blocks aside).

What a default run (seed 1, 2 sessions x 4 tasks) contains, in order:

1. pool churn: a miner is removed from the NodePool and added again;
2. sessions, each with a model, redundancy 2-3, ephemeral nodes (session 0: reserved by
   SessionV2.create itself; others: assigned by the network owner), one dedicated node, a
   router whose routerInfo is its endpoint URL, and a COR deposit by the session owner;
   session 0 also gains a second router (added with a stale URL, then updated) and a third
   router that is added and removed;
3. network round 0 (every selected miner precommits and commits);
4. tasks, round-robin over sessions, client references ``req-<seed>-<n>``; task k (counting
   across sessions) is: k=1 a miner that acks and precommits but never commits (the task
   ends and that miner gets no allocation), k=2 force-ended after the acks (no payment),
   the last task (when there are >= 4) left in flight after the acks, the rest happy and paid;
5. network round 1 (one selected miner never precommits: the oracle closes precommit) and
   round 2 (one miner precommits but never commits: the oracle force-ends it);
6. withdrawals (the paid miner with the lowest address withdraws half of its pending payment,
   the others all of theirs);
7. session 0 loses its dedicated node; the last session is deactivated (its nodes released).
"""

from __future__ import annotations

import random

from devnet.chain import Chain
from devnet.deploy import COR, Deployment
from devnet.ledger import NODE_STATUSES, Ledger, SessionRecord
from devnet.lifecycle import (
    Net,
    add_router,
    deactivate_session,
    deposit,
    drive_task,
    open_session,
    remove_dedicated_node,
    remove_router,
    submit_task,
    update_router,
    withdraw,
)
from devnet.rounds import run_network_round

# Model identifiers the devnet sessions choose from (SessionV2.modelIdentifier is a uint256).
MODELS = (1, 2, 3, 5, 8)
PROMPTS = (
    "Summarise the Cortensor whitepaper in one paragraph.",
    "Write a haiku about decentralized inference.",
    "Explain proof of inference to a five-year-old.",
    "List three uses of an on-chain task ledger.",
    "Translate 'redundant miners agree' into French.",
    "What is the capital of Arbitrum Orbit?",
)
DEFAULT_ROUTER_PORT = 18100  # default router URLs: http://127.0.0.1:<port + router index>


def default_router_urls(routers: list[str]) -> dict[str, str]:
    return {r: f"http://127.0.0.1:{DEFAULT_ROUTER_PORT + i}" for i, r in enumerate(routers)}


def run_scenario(
    url: str,
    deployment: Deployment,
    *,
    seed: int = 1,
    sessions: int = 2,
    tasks_per_session: int = 4,
    router_urls: dict[str, str] | None = None,
) -> Ledger:
    """Drive the scenario described in the module docstring on the node at ``url``.

    ``router_urls`` maps router addresses to the endpoint URL each session records as the
    router's routerInfo (default ``http://127.0.0.1:18100 + router index``).
    """
    if sessions < 1 or tasks_per_session < 1:
        raise ValueError("need at least one session and one task per session")
    rng = random.Random(seed)
    roles = deployment.accounts
    given = {router.lower(): url for router, url in (router_urls or {}).items()}
    urls = {**default_router_urls(roles.routers), **given}
    with Chain(url) as chain:
        net = Net(chain, deployment, Ledger(chain_id=chain.chain_id(), seed=seed))
        churn = rng.choice(roles.miners)
        net.send(roles.owner, "NodePool", "remove", churn)
        net.send(roles.owner, "NodePool", "add", churn)
        opened = [_open(net, rng, i, urls) for i in range(sessions)]
        run_network_round(
            net, domain="general", subdomain="qa", challenges=rng.sample(PROMPTS, 2)
        )
        _run_tasks(net, rng, opened, tasks_per_session)
        _late_rounds(net, rng)
        _withdrawals(net)
        if opened[0].dedicated:
            remove_dedicated_node(net, opened[0], opened[0].dedicated[0])
        deactivate_session(net, opened[-1])
        net.ledger.nodes = _node_statuses(net)
        return net.ledger


def _open(net: Net, rng: random.Random, index: int, urls: dict[str, str]) -> SessionRecord:
    roles = net.deployment.accounts
    reserved = {n for s in net.ledger.sessions.values() for n in s.dedicated}
    ephemeral: list[str] | None = None
    if index > 0:
        ephemeral = sorted(rng.sample([m for m in roles.miners if m not in reserved], 3))
    main_router = roles.routers[index % len(roles.routers)]
    session = open_session(
        net,
        owner=roles.users[index % len(roles.users)],
        name=f"devnet-session-{index}",
        model_identifier=rng.choice(MODELS),
        redundant=rng.choice((2, 3)),
        routers={main_router: urls[main_router]},
        ephemeral=ephemeral,
    )
    in_use = reserved | set(session.ephemeral) | _ephemeral_anywhere(net)
    free = [m for m in roles.miners if m not in in_use]
    if free:
        node = rng.choice(free)
        net.send(session.owner, "SessionV2", "addDedicatedNode", session.session_id, node)
        session.dedicated.append(node)
    if index == 0 and len(roles.routers) >= 3:
        second, temporary = roles.routers[1], roles.routers[2]
        add_router(net, session, second, urls[second] + "/stale")
        update_router(net, session, second, urls[second])
        add_router(net, session, temporary, urls[temporary])
        remove_router(net, session, temporary)
    amount = rng.randint(50, 150) * COR
    deposit(net, session_id=session.session_id, depositor=session.owner, amount=amount)
    return session


def _ephemeral_anywhere(net: Net) -> set[str]:
    return {n for s in net.ledger.sessions.values() for n in s.ephemeral}


def _run_tasks(net: Net, rng: random.Random, opened: list[SessionRecord], per_session: int) -> None:
    total = len(opened) * per_session
    seed = net.ledger.seed
    for k in range(total):
        session = opened[k % len(opened)]
        router = next(iter(session.routers))
        task = submit_task(
            net, session_id=session.session_id, sender=router,
            task_data=rng.choice(PROMPTS), client_reference=f"req-{seed}-{k}",
        )
        nodes = sorted(session.ephemeral + session.dedicated)
        miners = rng.sample(nodes, session.redundant)
        payment = rng.randint(2, 6) * COR
        if k == 1:
            drive_task(net, task, router=router, miners=miners, skip_commit={miners[-1]},
                       payment=payment)
        elif k == 2:
            drive_task(net, task, router=router, miners=miners, force_end_after="acked")
        elif k == total - 1 and total >= 4:
            drive_task(net, task, router=router, miners=miners, stop_after="acked")
        else:
            drive_task(net, task, router=router, miners=miners, payment=payment)


def _late_rounds(net: Net, rng: random.Random) -> None:
    """Round 1: a selected miner never precommits. Round 2: one never commits."""
    for silent_precommit, silent_commit in ((1, 0), (0, 1)):
        run_network_round(
            net, domain="general", subdomain=f"topic-{rng.randrange(1000)}",
            challenges=rng.sample(PROMPTS, 2),
            silent_precommit=silent_precommit, silent_commit=silent_commit,
        )


def _withdrawals(net: Net) -> None:
    pending = {node: amount for node, amount in sorted(net.ledger.pending().items()) if amount > 0}
    for i, (node, amount) in enumerate(pending.items()):
        withdraw(net, node=node, amount=amount // 2 if i == 0 else amount)


def _node_statuses(net: Net) -> dict[str, str]:
    """Every miner's NodePool status at the end of the run, read from the chain."""
    statuses: dict[str, str] = {}
    for miner in net.deployment.accounts.miners:
        entry = net.call("NodePool", "get", miner)
        statuses[miner] = NODE_STATUSES[entry[6]]
    return statuses
