"""One pipelined Redis connection for the tracker's Lua scripts (EVALSHA), on an asyncio
protocol with hiredis's reply parser.

Why not redis-py here: on the gateway bench its per-call work (pool checkout and return, retry
wrapper, command packing, observability hooks) cost about as much CPU as the rest of a request's
capacity bookkeeping. Scripts are the whole hot path (acquire, release, renew), so this client
does just that: commands issued in one event-loop turn leave in one write (automatic
pipelining) and replies are matched to their callers in order, so one connection carries
every decision of a replica. Each script still runs atomically in Redis.

Failures surface as redis-py's exception types, so :class:`~gateway.capacity.redis_link.RedisLink`
treats both clients alike: ``ConnectionError`` when the connection is lost (every command in
flight fails with it; the next command connects again), ``ResponseError`` for an error reply.
After a Redis restart its script cache is empty: a ``NOSCRIPT`` reply is answered by sending
the script's source once (``EVAL``, which caches it again).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

Arg = str | int | float | bytes


def encode(args: tuple[Arg, ...] | list[Arg]) -> bytes:
    """One command in the Redis protocol.

    >>> encode(["GET", "k", 1])
    b'*3\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n$1\\r\\n1\\r\\n'
    """
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def parse_url(url: str) -> dict[str, Any]:
    """Where and how to connect, from a ``redis://``, ``rediss://`` or ``unix://`` URL.

    >>> parse_url("redis://:pw@10.0.0.1:6380/2")
    {'tls': False, 'host': '10.0.0.1', 'port': 6380, 'username': None, 'password': 'pw', 'db': 2}
    """
    u = urlsplit(url)
    if u.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"Redis URL must be redis://, rediss:// or unix://, got {u.scheme}://")
    query = parse_qs(u.query)
    db = query["db"][0] if "db" in query else (u.path.strip("/") if u.scheme != "unix" else "")
    out: dict[str, Any] = {"tls": u.scheme == "rediss"}
    if u.scheme == "unix":
        out["path"] = unquote(u.path)
    else:
        out["host"], out["port"] = u.hostname or "localhost", u.port or 6379
    out["username"] = unquote(u.username) if u.username else None
    out["password"] = unquote(u.password) if u.password else None
    out["db"] = int(db or 0)
    return out


class Script:
    """A Lua script known by its SHA-1 (what EVALSHA names)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (Redis's own id)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, data: bytes) -> asyncio.Future[Any]:
        """Queue one command; the first in a loop turn schedules the write of them all."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(data)
        self.waiting.append(fut)
        return fut

    def _flush(self) -> None:
        data, self._out = b"".join(self._out), []
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError:
                self.close()
                return
            if reply is False:
                return
            if not self.waiting:  # a reply nobody asked for: the stream cannot be trusted
                self.close()
                return
            fut = self.waiting.popleft()
            if fut.done():  # its caller gave up (timeout, cancellation)
                continue
            if isinstance(reply, ResponseError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiting, self.waiting = self.waiting, deque()
        for fut in waiting:
            if not fut.done():
                fut.set_exception(RedisConnectionError(f"Redis connection lost ({exc})"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()  # connection_lost fails what is in flight
        self.closed = True


class RespClient:
    """Commands over one lazily (re)connected connection to the Redis at ``url``."""

    def __init__(self, url: str, *, connect_timeout: float) -> None:
        self.params: dict[str, Any] = parse_url(url)
        self.connect_timeout = connect_timeout
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _Protocol:
        proto = self._proto
        if proto is not None and not proto.closed:
            return proto
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._proto is None or self._proto.closed:
                self._proto = await self._connect()
            return self._proto

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        p = self.params
        try:
            async with asyncio.timeout(self.connect_timeout):
                if "path" in p:
                    _, proto = await loop.create_unix_connection(_Protocol, p["path"])
                else:
                    tls = ssl.create_default_context() if p["tls"] else None
                    _, proto = await loop.create_connection(_Protocol, p["host"], p["port"],
                                                            ssl=tls)
        except (OSError, TimeoutError) as e:
            raise RedisConnectionError(f"cannot connect to Redis ({type(e).__name__})") from e
        try:
            async with asyncio.timeout(self.connect_timeout):
                if p["password"]:
                    auth = [p["username"]] if p["username"] else []
                    await proto.send(encode(["AUTH", *auth, p["password"]]))
                if p["db"]:
                    await proto.send(encode(["SELECT", p["db"]]))
        except ResponseError as e:  # AUTH or SELECT refused: as redis-py, a connection error
            proto.close()
            raise RedisConnectionError(f"Redis refused the connection setup: {e}") from e
        except BaseException as e:  # timed out, lost or cancelled half-way: not kept
            proto.close()
            if isinstance(e, TimeoutError):
                raise RedisConnectionError("Redis connection setup timed out") from e
            raise
        return proto

    async def execute(self, *args: Arg) -> Any:
        proto = await self._connection()
        return await proto.send(encode(args))

    async def evalsha(self, script: Script, keys: list[str], args: list[Arg]) -> Any:
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except ResponseError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    def drop(self) -> None:
        """Close the connection (after a timeout its state is unknown); the next command
        connects again."""
        proto, self._proto = self._proto, None
        if proto is not None:
            proto.close()
