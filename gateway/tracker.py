"""Build the capacity tracker the gateway's config asks for over its pools: in-process without
a Redis URL, shared through Redis with one."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.capacity.base import PoolTracker
from gateway.capacity.factory import make_tracker
from gateway.config import GatewayConfig
from gateway.pools import Pool


def make_gateway_tracker(
    cfg: GatewayConfig, pools: Mapping[str, Pool], redis_url: str | None, *, lease_prefix: str
) -> PoolTracker:
    return make_tracker(
        {m: list(p.slots) for m, p in pools.items()}, redis_url=redis_url,
        lease_ttl=cfg.lease_ttl, wait_timeout=cfg.wait_timeout,
        queue_max_depth=cfg.queue.max_depth, queue_timeout=cfg.queue.timeout,
        on_redis_failure=cfg.on_redis_failure, failure_threshold=cfg.cooldown.failures,
        cooldown_seconds=cfg.cooldown.seconds, redis_timeout=cfg.redis_timeout,
        key_prefix=cfg.redis_prefix, breaker_failures=cfg.breaker.failures,
        breaker_cooloff=cfg.breaker.cooloff, lease_prefix=lease_prefix,
    )
