"""Build the tracker the configuration asks for: in-process without a Redis URL, else Redis."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from gateway.capacity.admission import CapacityConfig
from gateway.capacity.base import PoolTracker, SessionSlot
from gateway.capacity.memory import MemoryTracker
from gateway.capacity.redis_tracker import RedisTracker


def make_tracker(
    pools: Mapping[str, Sequence[SessionSlot]], *, redis_url: str | None, lease_ttl: float,
    wait_timeout: float, queue_max_depth: int, queue_timeout: float,
    on_redis_failure: Literal["local", "reject"], failure_threshold: int = 3,
    cooldown_seconds: float = 30.0, redis_timeout: float = 0.25,
    key_prefix: str = "corlens:gw:", breaker_failures: int = 3, breaker_cooloff: float = 2.0,
    lease_prefix: str = "",
) -> PoolTracker:
    """A tracker over ``pools`` (model alias -> ordered sessions). Synchronous: nothing
    connects until first use, so it can be built outside an event loop; ``aclose()`` it.

    ``redis_url`` None gives a :class:`MemoryTracker` (exact, one replica); a URL gives a
    :class:`RedisTracker` shared by every replica using the same ``key_prefix``. ``lease_prefix``
    starts every lease id (e.g. a replica id, to tell whose lease is whose).
    """
    config = CapacityConfig(
        lease_ttl=lease_ttl, wait_timeout=wait_timeout, queue_max_depth=queue_max_depth,
        queue_timeout=queue_timeout, failure_threshold=failure_threshold,
        cooldown_seconds=cooldown_seconds)
    if redis_url is None:
        return MemoryTracker(pools, config, lease_prefix=lease_prefix)
    return RedisTracker(
        pools, config, redis_url=redis_url, on_redis_failure=on_redis_failure,
        redis_timeout=redis_timeout, key_prefix=key_prefix, breaker_failures=breaker_failures,
        breaker_cooloff=breaker_cooloff, lease_prefix=lease_prefix)
