"""The tracker's pipelined Redis connection (gateway.capacity.resp) against a real Redis:
replies matched in order under concurrency, NOSCRIPT after a script flush, URL parsing, a
lost connection failing what is in flight and the next command connecting again."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from gateway.capacity.resp import RespClient, Script, encode, parse_url
from tests.conftest import unavailable
from tests.gateway_helpers import RedisServer

ECHO = Script("return {tonumber(ARGV[1]), redis.call('INCR', KEYS[1])}")


def test_encode_and_parse_url() -> None:
    assert encode(["SET", "k", 1.5, b"\x00"]) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n1.5\r\n$1\r\n\x00\r\n")
    assert parse_url("redis://127.0.0.1:6390/3") == {
        "tls": False, "host": "127.0.0.1", "port": 6390, "username": None, "password": None,
        "db": 3}
    assert parse_url("rediss://u:p%40ss@h")["password"] == "p@ss"
    assert parse_url("unix:///run/redis.sock?db=2")["path"] == "/run/redis.sock"
    with pytest.raises(ValueError, match="redis://"):
        parse_url("http://127.0.0.1:6379")


def test_concurrent_scripts_get_their_own_replies(redis_url: str) -> None:
    key = f"corlens:test:resp:{uuid.uuid4().hex}"

    async def scenario() -> None:
        client = RespClient(redis_url, connect_timeout=1.0)
        try:
            replies = await asyncio.gather(*(client.evalsha(ECHO, [key], [i])
                                             for i in range(200)))
            assert [r[0] for r in replies] == list(range(200))
            assert sorted(r[1] for r in replies) == list(range(1, 201))
            await client.execute("SCRIPT", "FLUSH")  # as after a Redis restart
            assert (await client.evalsha(ECHO, [key], [7]))[0] == 7
            with pytest.raises(ResponseError):
                await client.execute("NOSUCHCOMMAND")
            assert await client.execute("DEL", key) == 1
        finally:
            client.drop()

    asyncio.run(scenario())


def test_lost_connection_fails_in_flight_then_reconnects() -> None:
    if not RedisServer.available():
        unavailable("redis-server is not installed")
    server = RedisServer().start()
    port = server.port

    async def scenario() -> None:
        client = RespClient(server.url, connect_timeout=0.5)
        try:
            assert await client.execute("PING") == b"PONG"
            slow = asyncio.ensure_future(client.execute("BLPOP", "never", 5))
            await asyncio.sleep(0.1)
            server.stop()
            with pytest.raises(RedisConnectionError):
                await asyncio.wait_for(slow, 5)
            with pytest.raises(RedisConnectionError):
                await client.execute("PING")
            restarted = RedisServer()
            restarted.port, restarted.url = port, server.url
            restarted.start()
            try:
                assert await client.execute("PING") == b"PONG"
            finally:
                restarted.stop()
        finally:
            client.drop()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_url_database_is_selected(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    key = f"corlens:test:resp:{uuid.uuid4().hex}"

    async def scenario() -> None:
        client = RespClient(f"{base}/5", connect_timeout=1.0)
        try:
            await client.execute("SET", key, "x", "EX", 30)
        finally:
            client.drop()

    asyncio.run(scenario())
    check = redis.Redis.from_url(f"{base}/5")
    try:
        assert check.get(key) == b"x"
        check.delete(key)
    finally:
        check.close()
