"""What the API's routes depend on, built once per app and injected (``Annotated`` aliases)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, Path, Request

from api.errors import not_found
from api.lifecycle import PgLifecycles
from api.links import Links
from indexer.config import ChainConfig, Settings
from indexer.rpc import RpcClient

# Origins (chain, scheme, server, Host, root paths) whose Links are kept; cleared when full.
LINKS_CACHE = 64
# Latency samples kept per route for the p50/p99 in /metrics.
LATENCY_WINDOW = 2048


@dataclass
class Metrics:
    """Counters the API keeps for /metrics (the indexer's live in the database and RPC stats)."""

    latency: dict[str, list[float]] = field(default_factory=dict)  # route -> recent seconds
    counts: dict[str, int] = field(default_factory=dict)

    def observe(self, route: str, seconds: float) -> None:
        samples = self.latency.setdefault(route, [])
        samples.append(seconds)
        if len(samples) > LATENCY_WINDOW:
            del samples[: len(samples) - LATENCY_WINDOW]
        self.counts[route] = self.counts.get(route, 0) + 1


@dataclass
class AppState:
    settings: Settings
    engine: sa.Engine
    chains: dict[str, ChainConfig]
    rpcs: dict[str, RpcClient]
    public_url: str | None
    metrics: Metrics = field(default_factory=Metrics)
    extra: dict[str, Any] = field(default_factory=dict)
    lifecycles: PgLifecycles | None = None  # the hot route's async reads, on PostgreSQL
    _links: dict[tuple[Any, ...], Links] = field(default_factory=dict)

    def links(self, chain: ChainConfig, request: Request) -> Links:
        """Links for ``chain`` as seen by this request, reused per origin: building the
        request's base URL took 3x as long as this lookup (the lifecycle route's hot path)."""
        scope = request.scope
        host = next((v for k, v in scope["headers"] if k == b"host"), None)
        server = tuple(scope.get("server") or ())  # a list under some servers
        origin = (chain.name, scope.get("scheme"), server, host) + tuple(
            scope.get(k) for k in ("root_path", "app_root_path")
        )
        hit = self._links.get(origin)
        if hit is None:
            if len(self._links) >= LINKS_CACHE:  # Host is the client's to choose: stay bounded
                self._links.clear()
            hit = self._links[origin] = Links(chain, self.public_url or str(request.base_url))
        return hit

    def chain(self, name: str) -> ChainConfig:
        """A configured chain, or a 404 naming the configured ones."""
        c = self.chains.get(name)
        if c is None:
            raise not_found("chain", chain=name, configured=sorted(self.chains))
        return c


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.corlens
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_conn(state: StateDep) -> Iterator[sa.Connection]:
    with state.engine.connect() as conn:
        yield conn


ConnDep = Annotated[sa.Connection, Depends(get_conn)]


CHAIN_NAME_MAX = 64
ChainName = Annotated[
    str, Path(description="A configured chain name", max_length=CHAIN_NAME_MAX)
]


async def get_chain(state: StateDep, chain: ChainName) -> ChainConfig:
    return state.chain(chain)


ChainDep = Annotated[ChainConfig, Depends(get_chain)]
