"""The Redis edge of capacity tracking: bounded calls, a breaker, a subscription.

Lua scripts (every admission decision, release and renewal) go over one pipelined connection
(:mod:`gateway.capacity.resp`); reads, drain changes, pings and the subscription use redis-py.

Every call is bounded by the socket timeouts and an outer guard, so no caller waits on Redis
longer than :attr:`RedisLink.bound`; a connection error, a timeout or an open breaker all
surface as :class:`~gateway.capacity.admission.BackendDown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.capacity.admission import BackendDown
from gateway.capacity.breaker import CircuitBreaker
from gateway.capacity.resp import RespClient, Script

log = logging.getLogger(__name__)

# What counts as "Redis is unreachable" (a script error is a bug and propagates instead).
LINK_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
GUARD_SLACK = 0.05  # seconds above connect + read timeouts before the outer guard cancels a call
RESUBSCRIBE_DELAY = 0.5  # seconds between attempts to re-subscribe while Redis is away
LISTEN_POLL = 5.0  # seconds a subscription read may idle before it loops (no traffic is sent)
CANCEL_RETRY = 0.1  # seconds to wait for a cancelled task before cancelling it again
MAX_CONNECTIONS = 32  # a script takes well under a millisecond: 32 connections carry thousands
# of decisions a second, and a burst of requests queues for them instead of opening a
# connection each (a connect storm that times out is not a Redis outage)


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task and wait until it has stopped, cancelling again if a library
    swallowed the cancellation (Python 3.11's ``asyncio.timeout`` can, racing its deadline)."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_RETRY)
    if not task.cancelled() and task.exception() is not None:
        log.debug("background task ended with %r", task.exception())


class RedisLink:
    """A Redis client with short timeouts and no retries (the breaker decides, not redis-py)."""

    def __init__(self, url: str, *, timeout: float, breaker: CircuitBreaker, channel: str,
                 counters: Counter[str], on_message: Callable[[str], None],
                 on_down: Callable[[], None]) -> None:
        pool = BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=None, socket_timeout=timeout,
            socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), decode_responses=True,
            health_check_interval=0)
        self.client: Redis = Redis.from_pool(pool)
        self.resp = RespClient(url, connect_timeout=timeout)
        self.timeout = timeout
        self.bound = 2 * timeout + GUARD_SLACK  # connect, then one read
        self.breaker = breaker
        self.channel = channel
        self.reachable: bool | None = None
        self.ping_ms: float | None = None
        self._counters = counters
        self._on_message = on_message
        self._on_down = on_down
        self._scripts: dict[str, Script] = {}
        self._listener: asyncio.Task[None] | None = None

    @property
    def usable(self) -> bool:
        """Worth a best-effort call: the breaker is closed and the last call did not fail."""
        return self.breaker.allows() and self.reachable is not False

    async def run(self, source: str, keys: Sequence[str], args: Sequence[str | int | float],
                  *, probe: bool = False) -> Any:
        """Run a Lua script (EVALSHA, loading it again after a Redis restart)."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = Script(source)
        return await self.call(lambda: self.resp.evalsha(script, list(keys), list(args)),
                               probe=probe)

    async def call(self, make: Callable[[], Any], *, probe: bool = False) -> Any:
        """Await ``make()`` against Redis within :attr:`bound`; BackendDown when it cannot."""
        if not probe and not self.breaker.allows():
            raise BackendDown("Redis circuit is open")
        try:
            async with asyncio.timeout(self.bound):
                result = await make()
        except LINK_ERRORS as e:
            if isinstance(e, TimeoutError | RedisTimeoutError):
                self.resp.drop()  # a connection that stopped answering may be dead
            self.failed(e)
            raise BackendDown(f"Redis unreachable: {type(e).__name__}") from e
        self.reachable = True
        self.breaker.success()
        return result

    def failed(self, error: BaseException) -> None:
        self._counters["redis_errors"] += 1
        self.reachable = False
        if self.breaker.failure():
            log.warning("Redis circuit opened after %s: %s", type(error).__name__, error)
            self._on_down()

    async def ping(self, *, probe: bool = False) -> bool:
        """Measure a round trip (the breaker's half-open probe when ``probe``)."""
        start = time.perf_counter()
        try:
            await self.call(self.client.ping, probe=probe)
        except BackendDown:
            return False
        self.ping_ms = (time.perf_counter() - start) * 1000.0
        return True

    def start(self) -> None:
        """Subscribe to wake-ups (idempotent; needs a running loop)."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def restart_listener(self) -> None:
        """Subscribe afresh (after an outage a half-dead connection may never error)."""
        await self._stop_listener()
        self.start()

    async def _stop_listener(self) -> None:
        task, self._listener = self._listener, None
        await cancel(task)

    async def _listen(self) -> None:
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self._on_message("*")  # anything published while unsubscribed is lost
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=LISTEN_POLL)
                    if msg is not None:
                        self._on_message(str(msg["data"]))
            except LINK_ERRORS:
                self._on_message("*")  # waiters look now: Redis may be gone (fallback)
                await asyncio.sleep(RESUBSCRIBE_DELAY)
            finally:
                with contextlib.suppress(*LINK_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        await self._stop_listener()
        self.resp.drop()
        await self.client.aclose()
