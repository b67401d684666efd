"""Client authentication: bearer API keys (stored hashed) and per-key requests-per-minute.

A replica trusts a key lookup for ``key_cache_ttl`` seconds, so a key disabled through another
replica (or the CLI) is refused within that time; a key disabled through this replica's admin
route is refused at once. Requests that find the same key's entry expired share one lookup.
Rate limits are shared through Redis when there is one (a fixed one-minute window per key,
bounded by the Redis timeout), otherwise counted per replica (a sliding minute); a Redis failure
falls back to the local count for ``REDIS_BACKOFF`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import ApiError
from gateway.store import GatewayStore, KeyInfo, hash_key

REDIS_BACKOFF = 2.0  # seconds the limiter stays local after a Redis error
WINDOW = 60.0


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None.

    >>> bearer("Bearer abc")
    'abc'
    >>> bearer("Basic abc") is None
    True
    """
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class KeyAuth:
    def __init__(self, store: GatewayStore, cache_ttl: float) -> None:
        self.store = store
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, KeyInfo | None]] = {}
        self._lookups: dict[str, asyncio.Future[KeyInfo | None]] = {}

    async def authenticate(self, header: str | None) -> KeyInfo:
        token = bearer(header)
        if token is None:
            raise ApiError(401, "missing_api_key", "send Authorization: Bearer <api key>")
        digest = hash_key(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            info = hit[1]
        else:
            info = await self._lookup(digest, token)
        if info is None:
            raise ApiError(401, "invalid_api_key", "the API key is not valid")
        if not info.enabled:
            raise ApiError(401, "disabled_api_key", f"API key {info.prefix}... is disabled")
        return info

    async def _lookup(self, digest: str, token: str) -> KeyInfo | None:
        """One database lookup per key at a time: at a thousand requests a second, an expired
        entry would otherwise send every request arriving during the lookup to the database."""
        pending = self._lookups.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(digest, token))
            self._lookups[digest] = pending
            pending.add_done_callback(lambda _: self._lookups.pop(digest, None))
        return await asyncio.shield(pending)  # a waiter that leaves does not cancel the others'

    async def _fetch(self, digest: str, token: str) -> KeyInfo | None:
        info = await asyncio.to_thread(self.store.find_key, token)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + self.cache_ttl, info)
        return info

    def forget(self, key_id: int) -> None:
        """Drop cached lookups of one key (after this replica changed it)."""
        for digest, (_, info) in list(self._cache.items()):
            if info is not None and info.id == key_id:
                del self._cache[digest]


class RateLimiter:
    """Requests per minute per key; raises 429 with Retry-After when over the key's limit."""

    def __init__(self, redis: Redis | None, timeout: float) -> None:
        self.redis = redis
        self.timeout = timeout
        self._local: dict[int, deque[float]] = {}
        self._redis_down_until = 0.0
        self.redis_errors = 0

    async def check(self, key: KeyInfo) -> None:
        limit = key.rpm_limit
        if not limit:
            return
        now = time.time()
        if self.redis is not None and time.monotonic() >= self._redis_down_until:
            try:
                retry = await asyncio.wait_for(self._redis_check(key.id, limit, now), self.timeout)
            except (RedisError, OSError, TimeoutError):
                self.redis_errors += 1
                self._redis_down_until = time.monotonic() + REDIS_BACKOFF
            else:
                if retry is not None:
                    raise _limited(key, retry)
                return
        retry = self._local_check(key.id, limit, now)
        if retry is not None:
            raise _limited(key, retry)

    async def _redis_check(self, key_id: int, limit: int, now: float) -> float | None:
        assert self.redis is not None
        window = int(now // WINDOW)
        name = f"corlens:gw:rpm:{key_id}:{window}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(name)
        pipe.expire(name, int(WINDOW) + 1)
        count, _ = await pipe.execute()
        if int(count) > limit:
            return (window + 1) * WINDOW - now
        return None

    def _local_check(self, key_id: int, limit: int, now: float) -> float | None:
        times = self._local.setdefault(key_id, deque())
        while times and times[0] <= now - WINDOW:
            times.popleft()
        if len(times) >= limit:
            return times[0] + WINDOW - now
        times.append(now)
        return None


def _limited(key: KeyInfo, retry_after: float) -> ApiError:
    return ApiError(
        429, "rate_limited", f"API key {key.prefix}... is over its limit of "
        f"{key.rpm_limit} requests per minute", {"rpm_limit": key.rpm_limit},
        retry_after=max(retry_after, 1.0),
    )
