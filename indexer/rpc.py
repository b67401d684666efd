"""The indexer's JSON-RPC edge: the only module that talks to the chain.

Raw JSON-RPC over one pooled :class:`httpx.AsyncClient` (web3.py's result formatters cost about
10x on eth_getLogs). Transport failures, HTTP 429/5xx, invalid bodies and throttling JSON-RPC
errors are retried with exponential backoff and full jitter, failing over between URLs; what is
left is translated once into :mod:`indexer.errors`. URLs in messages are redacted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import httpx
import orjson

from indexer.errors import (
    ConfigError,
    LogsTimeout,
    RangeTooLarge,
    RpcError,
    RpcUnavailable,
    redact_url,
)
from indexer.ranges import LogRangePlanner, fetch_logs, range_error

__all__ = ["LogRangePlanner", "RpcClient", "RpcStats", "fetch_logs", "redact_url"]

T = TypeVar("T")
# Enough parallel requests for an indexer plus its head follower; providers throttle above this.
POOL = httpx.Limits(max_connections=20, max_keepalive_connections=20, keepalive_expiry=30.0)
# A dead host should fail over quickly even when a slow eth_getLogs may take the full timeout.
CONNECT_TIMEOUT_S = 5.0
BLOCK_TAGS = frozenset({"latest", "safe", "finalized", "earliest", "pending"})
_HEADERS = {"content-type": "application/json"}
# JSON-RPC errors that mean "not now" rather than "never": throttling and load-balancer lag.
_TRANSIENT_CODES = frozenset({429, -32005})
_TRANSIENT_TEXT = re.compile(
    r"rate limit|too many requests|capacity|header not found|timed? ?out|temporarily|try again"
    r"|busy",
    re.IGNORECASE,
)


# JSON-RPC batch requests in flight at once for one large batch() call.
BATCH_CONCURRENCY = 4


class _Transient(Exception):
    """One attempt failed in a way that another attempt (maybe at another URL) may not."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        timeout: bool = False,
        next_url: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.timeout = timeout
        self.next_url = next_url  # this URL looks unusable: fail over at once if another remains


@dataclass(frozen=True)
class RpcStats:
    """Counters for metrics. ``requests``/``errors`` are by JSON-RPC method, batch items counted
    one by one and every attempt included; ``errors`` counts attempts that failed for any reason."""

    requests: dict[str, int]
    errors: dict[str, int]
    retries: int
    failovers: int


class RpcClient:
    """Async JSON-RPC client over one or more URLs of the same chain.

    Each URL gets ``max_retries`` retries; a URL that refuses connections is left at once when
    another remains. The last URL that answered is tried first next time. Pass ``client`` to
    share a pool or swap the transport in tests; it is then not closed by :meth:`aclose`.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 20.0,
        max_retries: int = 5,
        backoff_base: float = 0.25,
        backoff_max: float = 8.0,
        max_batch: int = 100,
    ) -> None:
        if isinstance(urls, str) or not urls:
            raise ConfigError("rpc.urls", "give a non-empty list of RPC URLs")
        if max_retries < 0 or max_batch < 1 or timeout <= 0:
            raise ConfigError("rpc", "need max_retries >= 0, max_batch >= 1 and timeout > 0")
        self._urls = list(urls)
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S))
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(limits=POOL, timeout=self._timeout)
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_batch = max_batch
        self._healthy = 0
        self._ids = itertools.count(1)
        self._requests: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._retries = 0
        self._failovers = 0

    async def call(self, method: str, params: list[Any] | None = None) -> Any:
        """One JSON-RPC call; its ``result``, or :class:`RpcError` / :class:`RpcUnavailable`."""
        return await self._call(method, params or [])

    async def batch(
        self,
        calls: Sequence[tuple[str, list[Any]]],
        pick: Callable[[Any], Any] | None = None,
    ) -> list[Any]:
        """Results of ``calls`` in order, sent as JSON-RPC batches of at most ``max_batch``.

        Items that fail transiently are re-sent; a final error raises :class:`RpcError` for it.
        ``pick`` maps each non-null result as soon as its chunk is parsed, so that only what
        it keeps outlives the chunk (a receipt's sender rather than the receipt and its logs).
        """
        chunks = [calls[lo : lo + self._max_batch] for lo in range(0, len(calls), self._max_batch)]
        if len(chunks) == 1:
            return await self._batch_chunk(chunks[0], pick)
        # Chunks go out concurrently (bounded), so a large lookup costs a few round trips.
        sem = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def one(chunk: Sequence[tuple[str, list[Any]]]) -> list[Any]:
            async with sem:
                return await self._batch_chunk(chunk, pick)

        parts = await asyncio.gather(*(one(c) for c in chunks))
        return [r for part in parts for r in part]

    async def chain_id(self) -> int:
        return int(await self.call("eth_chainId"), 16)

    async def block_number(self) -> int:
        return int(await self.call("eth_blockNumber"), 16)

    async def get_block(self, block: int | str, full: bool = False) -> dict[str, Any] | None:
        """A block by number, hex quantity or tag (``latest``, ``safe``, ``finalized``...)."""
        block_id = hex(block) if isinstance(block, int) else block
        if isinstance(block, str) and block not in BLOCK_TAGS and not block.startswith("0x"):
            raise ValueError(f"not a block number or tag: {block!r}")
        result: dict[str, Any] | None = await self.call("eth_getBlockByNumber", [block_id, full])
        return result

    async def get_blocks(self, numbers: Sequence[int]) -> list[dict[str, Any] | None]:
        """Headers (no transactions) of ``numbers`` in order, batched; ``None`` where the node has
        no such block (it is behind, or a reorg shortened the chain)."""
        return await self.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])

    async def get_logs(
        self, *, addresses: Sequence[str], topics: list[Any] | None, from_block: int, to_block: int
    ) -> list[dict[str, Any]]:
        """Raw logs of ``[from_block, to_block]`` (all contracts when ``addresses`` is empty).

        Raises :class:`RangeTooLarge` when the provider refuses the range, and its subclass
        :class:`LogsTimeout` when the request timed out on its retry too.
        """
        flt: dict[str, Any] = {"fromBlock": hex(from_block), "toBlock": hex(to_block)}
        if addresses:
            flt["address"] = list(addresses)
        if topics is not None:
            flt["topics"] = topics
        logs: list[dict[str, Any]] = await self._call("eth_getLogs", [flt], max_timeouts=2)
        return logs

    async def eth_call(self, to: str, data: str, block: int | str = "latest") -> str:
        block_id = hex(block) if isinstance(block, int) else block
        result: str = await self.call("eth_call", [{"to": to, "data": data}, block_id])
        return result

    async def get_receipt(self, tx_hash: str) -> dict[str, Any] | None:
        receipt: dict[str, Any] | None = await self.call("eth_getTransactionReceipt", [tx_hash])
        return receipt

    async def get_transaction(self, tx_hash: str) -> dict[str, Any] | None:
        tx: dict[str, Any] | None = await self.call("eth_getTransactionByHash", [tx_hash])
        return tx

    def stats(self) -> RpcStats:
        return RpcStats(dict(self._requests), dict(self._errors), self._retries, self._failovers)

    async def aclose(self) -> None:
        """Close the HTTP pool if this client created it."""
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _call(self, method: str, params: list[Any], max_timeouts: int | None = None) -> Any:
        body = json.dumps(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        ).encode()

        async def attempt(url: str) -> Any:
            data = await self._post(url, body, [method])
            if isinstance(data, dict) and "error" in data:
                self._errors[method] += 1
                raise self._error(method, data["error"], url)
            if not isinstance(data, dict) or "result" not in data:
                self._errors[method] += 1
                raise _Transient("answer is not a JSON-RPC response")
            return data["result"]

        return await self._retrying(method, attempt, max_timeouts)

    async def _batch_chunk(
        self, calls: Sequence[tuple[str, list[Any]]], pick: Callable[[Any], Any] | None = None
    ) -> list[Any]:
        ids = [next(self._ids) for _ in calls]
        done: dict[int, Any] = {}  # position in `calls` -> result, kept across retries

        async def attempt(url: str) -> list[Any]:
            todo = [i for i in range(len(calls)) if i not in done]
            methods = [calls[i][0] for i in todo]
            payload = [
                {"jsonrpc": "2.0", "id": ids[i], "method": calls[i][0], "params": list(calls[i][1])}
                for i in todo
            ]
            data = await self._post(url, json.dumps(payload).encode(), methods)
            if not isinstance(data, list):  # some providers answer a whole batch with one error
                self._errors.update(methods)
                error = data.get("error") if isinstance(data, dict) else None
                raise self._error(f"batch({methods[0]}, ...)", error or "not a list", url)
            by_id = {item.get("id"): item for item in data if isinstance(item, dict)}
            failed: list[str] = []
            for i in todo:
                item = by_id.get(ids[i], {})
                if "result" in item:
                    result = item["result"]
                    done[i] = pick(result) if pick is not None and result is not None else result
                    continue
                self._errors[calls[i][0]] += 1
                exc = (
                    self._error(calls[i][0], item["error"], url)
                    if "error" in item
                    else _Transient("no answer for an item")
                )
                if not isinstance(exc, _Transient):
                    raise exc
                failed.append(exc.reason)
            if failed:
                raise _Transient(f"{len(failed)} of {len(todo)} batch items failed: {failed[0]}")
            return [done[i] for i in range(len(calls))]

        return await self._retrying(f"batch of {len(calls)}", attempt) if calls else []

    async def _post(self, url: str, body: bytes, methods: list[str]) -> Any:
        """POST one request body; the parsed JSON answer, or :class:`_Transient`."""
        self._requests.update(methods)
        try:
            request = self._client.build_request(
                "POST", url, content=body, headers=_HEADERS, timeout=self._timeout
            )
            resp = await self._client.send(request, stream=True)
            try:
                await resp.aread()
            finally:  # also when the body fails halfway: nothing is left for the collector
                await resp.aclose()
                _unbind(resp)
            if resp.status_code == 429 or resp.status_code >= 500:
                raise _Transient(f"HTTP {resp.status_code}", retry_after=_retry_after(resp))
            try:
                # orjson: a third of json's time on eth_getLogs answers. Ethereum's JSON-RPC
                # sends quantities as hex strings, so no JSON number here needs more than 64
                # bits (orjson would read a wider one as a float).
                return orjson.loads(resp.content)
            except ValueError:
                if resp.status_code != 200:  # 401/403/404: this URL will not work
                    raise _Transient(f"HTTP {resp.status_code}", next_url=True) from None
                raise _Transient(f"invalid JSON body ({len(resp.content)} bytes)") from None
        except httpx.TimeoutException as e:
            self._errors.update(methods)
            raise _Transient(f"timeout ({type(e).__name__})", timeout=True) from None
        except httpx.ConnectError as e:
            self._errors.update(methods)
            raise _Transient(_scrub(f"connection failed: {e}", url), next_url=True) from None
        except httpx.TransportError as e:
            self._errors.update(methods)
            raise _Transient(_scrub(f"{type(e).__name__}: {e}", url)) from None
        except _Transient:
            self._errors.update(methods)
            raise

    def _error(self, method: str, error: Any, url: str) -> RpcError | RangeTooLarge | _Transient:
        """Translate a JSON-RPC ``error`` member into what the caller should do with it."""
        code = error.get("code") if isinstance(error, dict) else None
        message = str(error.get("message", error) if isinstance(error, dict) else error)
        data = error.get("data") if isinstance(error, dict) else None
        text = f"{message} {data}" if isinstance(data, str) else message
        too_large = range_error(text) if method == "eth_getLogs" else None
        if too_large is not None:
            return too_large
        code = code if isinstance(code, int) else None
        if code in _TRANSIENT_CODES or _TRANSIENT_TEXT.search(text):
            return _Transient(f"JSON-RPC error {code}: {message}")
        return RpcError(code, _scrub(text, url), method, url)

    async def _retrying(
        self, label: str, attempt: Callable[[str], Awaitable[T]], max_timeouts: int | None = None
    ) -> T:
        """``attempt(url)`` until it succeeds, retrying and failing over on :class:`_Transient`."""
        n = len(self._urls)
        last, timeouts = "no attempt", 0
        for k in range(n):
            index = (self._healthy + k) % n
            url = self._urls[index]
            self._failovers += k > 0
            for retry in range(self._max_retries + 1):
                try:
                    result = await attempt(url)
                except _Transient as t:
                    last = f"{label} at {redact_url(url)}: {t.reason}"
                    timeouts += t.timeout
                    if max_timeouts is not None and timeouts >= max_timeouts:
                        raise LogsTimeout(None, f"{label} timed out {timeouts} times") from None
                    if retry == self._max_retries or (t.next_url and k < n - 1):
                        break
                    self._retries += 1
                    await asyncio.sleep(self._delay(retry, t.retry_after))
                    continue
                self._healthy = index
                return result
        raise RpcUnavailable(self._urls, last)

    def _delay(self, retry: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff; a server's Retry-After wins, capped at backoff_max."""
        if retry_after is not None:
            return min(retry_after, self._backoff_max)
        return random.uniform(0, min(self._backoff_max, self._backoff_base * 2**retry))


def _unbind(resp: httpx.Response) -> None:
    """Break the reference cycle between a closed response and its stream (httpx 0.28 binds
    each response's stream back to the response), so that reference counting frees the response
    and its body as soon as it is parsed. Left to the cycle collector, which the indexing
    processes run rarely (indexer.gc_tuning), the bodies piled up: a 300,000-event backfill's
    peak RSS grew with its length, to 280-400 MB, against 150-160 MB with the cycle broken.
    (An httpx without the back-reference makes this unnecessary; replacing the stream of a
    closed response loses nothing corlens reads.)"""
    resp.stream = httpx.ByteStream(b"")


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds from a numeric Retry-After header (the HTTP-date form is left to backoff)."""
    try:
        return max(0.0, float(resp.headers.get("retry-after", "")))
    except ValueError:
        return None


def _scrub(text: str, url: str) -> str:
    """``text`` with ``url`` redacted, for exception texts that may quote it."""
    return text.replace(url, redact_url(url))
