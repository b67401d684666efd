"""indexer.rpc against a real anvil, through the real fault proxy, plus pure tables.

Log-emitting contracts are assembled by hand from raw bytecode, so no compiler is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest

from devnet.anvil import Anvil, free_port
from indexer.errors import ConfigError, LogsTimeout, RpcError, RpcUnavailable
from indexer.ranges import FORGET_REFUSAL_AFTER, LogRangePlanner, prepared_ranges, range_error
from indexer.rpc import RpcClient, RpcStats, fetch_logs, redact_url
from tests.conftest import collector_off
from tests.faultproxy import FaultProxy, Faults

TOPIC = "0x" + "2a".rjust(64, "0")
EMITTER = "602a60006000a100"  # PUSH1 0x2a, PUSH1 0, PUSH1 0, LOG1, STOP: one log per call
REVERTER = "60006000fd"  # PUSH1 0, PUSH1 0, REVERT
# Retries in milliseconds, not seconds.
FAST: dict[str, Any] = {"backoff_base": 0.01, "backoff_max": 0.05}


def deploy(node: Anvil, runtime: str) -> str:
    """Deploy ``runtime`` behind init code that CODECOPYs it into memory and RETURNs it."""
    n = f"{len(runtime) // 2:02x}"
    init = f"60{n}600c600039" + f"60{n}6000f3" + runtime  # 12 bytes of init, then the runtime
    sender = node.rpc("eth_accounts")[0]
    tx = node.rpc("eth_sendTransaction", [{"from": sender, "data": "0x" + init}])
    for _ in range(100):  # anvil 1.7 may answer before the receipt of the mined tx is readable
        receipt = node.rpc("eth_getTransactionReceipt", [tx])
        if receipt is not None:
            return str(receipt["contractAddress"])
        time.sleep(0.01)
    raise AssertionError(f"no receipt for {tx}")


def make_logs(node: Anvil, calls: int = 40) -> str:
    """An emitter with ``calls`` logs spread over a few hundred blocks, some sharing a block."""
    emitter = deploy(node, EMITTER)
    sender = node.rpc("eth_accounts")[0]
    for i in range(calls):
        if i % 10 == 9:  # three logs in one block
            node.rpc("evm_setAutomine", [False])
            for _ in range(3):
                node.rpc("eth_sendTransaction", [{"from": sender, "to": emitter}])
            node.rpc("evm_mine")
            node.rpc("evm_setAutomine", [True])
        else:
            node.rpc("eth_sendTransaction", [{"from": sender, "to": emitter}])
        node.rpc("anvil_mine", [hex(i * 7 % 13 + 1)])
    return emitter


def direct_logs(node: Anvil, emitter: str, lo: int, hi: int) -> Any:
    return node.rpc("eth_getLogs", [{"fromBlock": hex(lo), "toBlock": hex(hi), "address": [emitter],
                                     "topics": [TOPIC]}])


async def workload(rpc: RpcClient, emitter: str) -> dict[str, Any]:
    """A little of everything the indexer asks."""
    head = await rpc.block_number()
    return {
        "chain": await rpc.chain_id(),
        "head": head,
        "blocks": await rpc.get_blocks(range(head + 1)),
        "latest": await rpc.get_block("latest"),
        "logs": await rpc.get_logs(
            addresses=[emitter], topics=[TOPIC], from_block=0, to_block=head
        ),
    }


def expected(node: Anvil, emitter: str) -> dict[str, Any]:
    head = int(node.rpc("eth_blockNumber"), 16)
    return {
        "chain": 31337,
        "head": head,
        "blocks": [node.rpc("eth_getBlockByNumber", [hex(n), False]) for n in range(head + 1)],
        "latest": node.rpc("eth_getBlockByNumber", ["latest", False]),
        "logs": direct_logs(node, emitter, 0, head),
    }


def test_answers_equal_direct_anvil(anvil: Anvil) -> None:
    emitter = make_logs(anvil, calls=5)
    tx = anvil.rpc("eth_getBlockByNumber", ["0x2", False])["transactions"][0]

    async def go() -> tuple[dict[str, Any], list[Any], RpcStats]:
        async with RpcClient([anvil.url], max_batch=7) as rpc:
            got = await workload(rpc, emitter)
            extra = [await rpc.get_receipt(tx), await rpc.get_transaction(tx),
                     await rpc.eth_call(emitter, "0x"), await rpc.get_block(3, full=True),
                     await rpc.batch([("eth_chainId", []), ("eth_getCode", [emitter, "latest"])]),
                     await rpc.get_blocks([1, 10**6])]
            return got, extra, rpc.stats()

    got, extra, stats = asyncio.run(go())
    assert got == expected(anvil, emitter)
    assert len(got["logs"]) == 5
    assert extra == [anvil.rpc("eth_getTransactionReceipt", [tx]),
                     anvil.rpc("eth_getTransactionByHash", [tx]), "0x",
                     anvil.rpc("eth_getBlockByNumber", ["0x3", True]),
                     ["0x7a69", "0x" + EMITTER],
                     [anvil.rpc("eth_getBlockByNumber", ["0x1", False]), None]]  # not mined yet
    assert stats.requests["eth_getBlockByNumber"] == got["head"] + 5  # + latest, 3, 1, 10**6
    assert stats.errors == {} and stats.retries == 0 and stats.failovers == 0


def test_batch_pick_keeps_only_what_it_picks(anvil: Anvil) -> None:
    """``pick`` maps each result as its chunk is parsed (here a receipt to its sender), leaves
    null results null, and keeps what it picked across the re-sends of a faulty connection."""
    make_logs(anvil, calls=9)
    head = int(anvil.rpc("eth_blockNumber"), 16)
    txs = [t for n in range(1, head + 1)
           for t in anvil.rpc("eth_getBlockByNumber", [hex(n), False])["transactions"]]
    calls = [("eth_getTransactionReceipt", [t]) for t in txs]
    calls.insert(3, ("eth_getTransactionReceipt", ["0x" + "ab" * 32]))  # no such transaction
    want = [anvil.rpc("eth_getTransactionReceipt", list(p))["from"] if p[0] != "0x" + "ab" * 32
            else None for _, p in calls]
    assert len(calls) > 9 and want.count(None) == 1

    async def go(url: str) -> list[Any]:
        async with RpcClient([url], timeout=0.5, max_batch=4, **FAST) as rpc:
            return await rpc.batch(calls, pick=lambda r: ("picked", r["from"]))

    assert asyncio.run(go(anvil.url)) == [w and ("picked", w) for w in want]
    with FaultProxy(anvil.url, Faults(http_429_every=2, truncate_every=3)) as proxy:
        assert asyncio.run(go(proxy.url)) == [w and ("picked", w) for w in want]
    assert proxy.counts["http_429"] >= 1


FAULT_KINDS = {
    "http_429": Faults(http_429_every=2),
    "http_502": Faults(http_502_every=2),
    "http_503": Faults(http_503_every=3),
    "truncated": Faults(truncate_every=2),
    "cut": Faults(cut_every=2),
    "dropped": Faults(drop_every=2),
    "timeout": Faults(timeout_every=3, delay=1.0),
    # A throttling JSON-RPC error; on a batch the proxy answers one error object, not a list.
    "error": Faults(error_every=2, error=(-32005, "request rate limited")),
}


@pytest.mark.parametrize("kind", list(FAULT_KINDS))
def test_each_fault_is_survived_and_counted(anvil: Anvil, kind: str) -> None:
    emitter = make_logs(anvil, calls=3)

    async def go(url: str) -> tuple[dict[str, Any], Any]:
        async with RpcClient([url], timeout=0.5, max_batch=4, **FAST) as rpc:
            return await workload(rpc, emitter), rpc.stats()

    with FaultProxy(anvil.url, FAULT_KINDS[kind]) as proxy:
        got, stats = asyncio.run(go(proxy.url))
    assert got == expected(anvil, emitter)
    assert proxy.counts[kind] >= 2
    assert stats.retries == proxy.counts[kind]
    assert sum(stats.errors.values()) >= proxy.counts[kind]
    assert stats.failovers == 0


def test_combined_faults_still_give_the_same_answers(anvil: Anvil) -> None:
    emitter = make_logs(anvil, calls=3)
    faults = Faults(http_429_every=3, truncate_every=4, drop_every=5)

    async def go(proxy: FaultProxy) -> dict[str, Any]:
        async with RpcClient([proxy.url], max_batch=4, **FAST) as rpc:
            got = await workload(rpc, emitter) | {"logs": []}
            proxy.faults = replace(faults, max_log_blocks=4)  # from now on, refuse ranges too
            async for _, _, logs in fetch_logs(rpc, LogRangePlanner(initial=100), start=0,
                                               end=got["head"], addresses=[emitter], topics=None):
                got["logs"] += logs
            return got

    with FaultProxy(anvil.url, faults) as proxy:
        got = asyncio.run(go(proxy))
    assert got == expected(anvil, emitter)
    assert all(proxy.counts[k] for k in ("http_429", "truncated", "dropped", "range_refused"))


@pytest.mark.parametrize("limit", [Faults(max_log_blocks=50), Faults(max_logs=4)])
def test_fetch_logs_through_refusing_proxy_equals_one_direct_get_logs(
    anvil: Anvil, limit: Faults
) -> None:
    emitter = make_logs(anvil)
    head = int(anvil.rpc("eth_blockNumber"), 16)

    async def go(url: str) -> list[tuple[int, int, list[Any]]]:
        async with RpcClient([url]) as rpc:
            return [c async for c in fetch_logs(rpc, LogRangePlanner(), addresses=[emitter],
                                                topics=[[TOPIC]], start=0, end=head)]

    with FaultProxy(anvil.url, limit) as proxy:
        chunks = asyncio.run(go(proxy.url))
    assert proxy.counts["range_refused"] > 0
    assert [lo for lo, _, _ in chunks] == [0] + [hi + 1 for _, hi, _ in chunks[:-1]]
    assert chunks[-1][1] == head
    assert [log for _, _, logs in chunks for log in logs] == direct_logs(anvil, emitter, 0, head)
    assert max(hi - lo + 1 for lo, hi, _ in chunks) <= (limit.max_log_blocks or head + 1)


def test_proxy_faults_only_the_methods_asked(anvil: Anvil) -> None:
    faults = Faults(http_503_every=1, only_methods=frozenset({"eth_getLogs"}))

    async def go(url: str) -> None:
        async with RpcClient([url], max_retries=1, **FAST) as rpc:
            assert await rpc.chain_id() == 31337
            await rpc.get_logs(addresses=[], topics=None, from_block=0, to_block=0)

    with FaultProxy(anvil.url, faults) as proxy, pytest.raises(RpcUnavailable, match="HTTP 503"):
        asyncio.run(go(proxy.url))
    assert proxy.counts == {"requests": 3, "forwarded": 1, "http_503": 2}
    proxy.reset()
    assert not proxy.counts and not proxy.methods


@pytest.mark.parametrize("faults", [None, Faults(cut_every=2, http_429_every=3)],
                         ids=["direct", "cut-and-429"])
def test_answers_are_freed_by_reference_counting(anvil: Anvil, faults: Faults | None) -> None:
    """Every HTTP response (and the body it holds) is freed once its answer is parsed, without
    the cycle collector: the indexing processes run it rarely (indexer.gc_tuning), and bodies
    left for it made a long backfill's memory grow with its length. httpx binds a response's
    stream back to the response; RpcClient breaks that cycle, also for an answer refused with
    429 and for a body cut off halfway (through the fault proxy)."""
    emitter = make_logs(anvil, calls=8)
    responses: list[weakref.ref[httpx.Response]] = []

    async def keep(resp: httpx.Response) -> None:
        responses.append(weakref.ref(resp))

    async def go(url: str) -> int:
        async with httpx.AsyncClient(event_hooks={"response": [keep]}) as client:
            rpc = RpcClient([url], client=client, **FAST)
            logs = await rpc.get_logs(addresses=[emitter], topics=None, from_block=0,
                                      to_block=await rpc.block_number())
            await rpc.get_blocks([0, 1, 2])
            with pytest.raises(RpcError):  # an error answer is freed too
                await rpc.call("eth_noSuchMethod")
            return len(logs)

    with collector_off():
        if faults is None:
            assert asyncio.run(go(anvil.url)) == 8
        else:
            with FaultProxy(anvil.url, faults) as proxy:
                assert asyncio.run(go(proxy.url)) == 8
            assert proxy.counts["cut"] > 0 and proxy.counts["http_429"] > 0
        alive = sum(r() is not None for r in responses)
    assert len(responses) >= 4
    assert alive == 0, f"{alive} of {len(responses)} responses wait for the cycle collector"


def test_a_failed_range_leaves_nothing_to_the_cycle_collector(anvil: Anvil) -> None:
    """When a range fails, the pipeline's ranges are freed by reference counting once the
    error is handled: the raised exception's traceback must not form a cycle with the frames
    that hold the ranges (the follower handles such errors tick after tick, and the cycle
    collector runs rarely in the indexing processes)."""
    emitter = make_logs(anvil, calls=40)
    kept: list[weakref.ref[Prepared]] = []

    class Prepared:
        def __init__(self, logs: list[dict[str, Any]]) -> None:
            self.logs = logs

    async def prepare(_a: int, _b: int, logs: list[dict[str, Any]]) -> Prepared:
        p = Prepared(logs)
        kept.append(weakref.ref(p))
        return p

    async def go(url: str) -> str:
        async with RpcClient([url], **FAST) as rpc:
            head = await rpc.block_number()
            ranges = prepared_ranges(rpc, LogRangePlanner(initial=20, maximum=20), [emitter],
                                     0, head, 8, prepare)
            try:
                async with contextlib.aclosing(ranges) as it:
                    async for _a, task in it:
                        assert (await task).logs
            except RpcError as e:
                return e.message
        return "no error"

    faults = Faults(error_every=3, only_methods=frozenset({"eth_getLogs"}),
                    error=(-32601, "the method eth_getLogs is not available"))
    with collector_off(), FaultProxy(anvil.url, faults) as proxy:
        assert "not available" in asyncio.run(go(proxy.url))
        alive = sum(r() is not None for r in kept)
    assert len(kept) == 2  # two ranges prepared before the third eth_getLogs failed
    assert alive == 0, f"{alive} prepared ranges wait for the cycle collector"


def test_failover_from_a_dead_url_and_remembers_the_healthy_one(anvil: Anvil) -> None:
    async def go() -> Any:
        async with RpcClient([f"http://127.0.0.1:{free_port()}/v2/key", anvil.url]) as rpc:
            assert await rpc.chain_id() == 31337
            assert await rpc.block_number() == 0
            return rpc.stats()

    stats = asyncio.run(go())
    assert stats.failovers == 1 and stats.retries == 0
    assert stats.errors == {"eth_chainId": 1}


def test_failover_after_a_url_exhausts_its_retries(anvil: Anvil) -> None:
    async def go(url: str) -> Any:
        async with RpcClient([url, anvil.url], max_retries=2, **FAST) as rpc:
            assert await rpc.chain_id() == 31337
            return rpc.stats()

    with FaultProxy(anvil.url, Faults(http_503_every=1)) as proxy:
        stats = asyncio.run(go(proxy.url))
    assert proxy.counts["http_503"] == 3
    assert (stats.retries, stats.failovers) == (2, 1)


def test_all_urls_dead_raises_unavailable_with_redacted_urls() -> None:
    urls = [f"http://127.0.0.1:{free_port()}/v2/SECRET", f"http://127.0.0.1:{free_port()}?k=SECRET"]

    async def go() -> None:
        async with RpcClient(urls, max_retries=2, **FAST) as rpc:
            await rpc.block_number()

    with pytest.raises(RpcUnavailable) as info:
        asyncio.run(go())
    message = str(info.value)
    assert "SECRET" not in message
    assert all(redact_url(u) in message for u in urls)
    assert "connection failed" in message


@pytest.mark.parametrize(
    ("method", "params"),
    [("eth_call", "reverter"), ("eth_getBlockByNumber", ["nope", False])],
)
def test_final_json_rpc_error_raises_at_once(anvil: Anvil, method: str, params: Any) -> None:
    if params == "reverter":
        params = [{"to": deploy(anvil, REVERTER), "data": "0x"}, "latest"]

    async def go(url: str) -> None:
        async with RpcClient([url], **FAST) as rpc:
            await rpc.call(method, params)

    with FaultProxy(anvil.url) as proxy, pytest.raises(RpcError) as info:
        asyncio.run(go(proxy.url))
    assert proxy.methods[method] == 1
    assert info.value.method == method and info.value.url == proxy.url


def test_final_error_inside_a_batch_names_its_item(anvil: Anvil) -> None:
    async def go() -> None:
        async with RpcClient([anvil.url]) as rpc:
            await rpc.batch([("eth_chainId", []), ("eth_getBlockByNumber", ["nope", False])])

    with pytest.raises(RpcError) as info:
        asyncio.run(go())
    assert info.value.method == "eth_getBlockByNumber"


# -- httpx.MockTransport: exact control of what the "node" answers ------------------------------


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def answer(request: httpx.Request, result: Callable[[dict[str, Any]], Any]) -> httpx.Response:
    body = json.loads(request.content)
    items = body if isinstance(body, list) else [body]
    out = [{"jsonrpc": "2.0", "id": c["id"], "result": result(c)} for c in items]
    return httpx.Response(200, json=out if isinstance(body, list) else out[0])


def test_retry_after_is_honoured_and_capped() -> None:
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        if len(seen) % 2:
            return httpx.Response(429, headers={"retry-after": "0.3" if len(seen) == 1 else "600"})
        return answer(request, lambda _: "0x1")

    async def go() -> None:
        async with mock_client(handler) as client:
            rpc = RpcClient(["http://node"], client=client, backoff_base=0.0, backoff_max=0.5)
            assert await rpc.block_number() == 1  # waits the 0.3 s asked for
            assert await rpc.block_number() == 1  # 600 s asked for, capped at backoff_max
            assert rpc.stats().retries == 2

    asyncio.run(go())
    assert 0.3 <= seen[1] - seen[0] < 3  # no jitter to hide behind: backoff_base is 0
    assert 0.5 <= seen[3] - seen[2] < 5


def test_batch_matches_ids_and_resends_only_missing_items() -> None:
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls = json.loads(request.content)
        sent.append(len(calls))
        out = [{"jsonrpc": "2.0", "id": c["id"], "result": c["params"][0]} for c in calls]
        return httpx.Response(200, json=out[::-1][: 3 if len(sent) == 1 else None])

    async def go() -> list[Any]:
        async with mock_client(handler) as client:
            rpc = RpcClient(["http://node"], client=client, max_batch=5, **FAST)
            return await rpc.batch([("echo", [i]) for i in range(8)])

    assert asyncio.run(go()) == list(range(8))
    # The first chunk lost 2 items, which alone are re-sent; chunks go out concurrently.
    assert sent[0] == 5 and sorted(sent[1:]) == [2, 3]


def test_batch_rejected_with_one_error_object_raises_rpc_error() -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        error = {"code": -32600, "message": "batch requests are not supported"}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": None, "error": error})

    async def go() -> None:
        async with mock_client(handler) as client:
            await RpcClient(["http://node"], client=client).batch([("eth_chainId", [])])

    with pytest.raises(RpcError, match="batch requests are not supported"):
        asyncio.run(go())


def test_unauthorised_url_fails_over_at_once() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "bad":
            return httpx.Response(401, text="invalid API key")
        return answer(request, lambda _: "0x5")

    async def go() -> Any:
        async with mock_client(handler) as client:
            rpc = RpcClient(["http://bad/KEY", "http://good"], client=client, **FAST)
            assert await rpc.block_number() == 5
            return rpc.stats()

    stats = asyncio.run(go())
    assert (stats.retries, stats.failovers) == (0, 1)


def slow_node(max_span: int) -> tuple[Callable[[httpx.Request], httpx.Response], list[int]]:
    """A node whose eth_getLogs times out above ``max_span`` blocks; one log per block."""
    spans: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        flt = json.loads(request.content)["params"][0]
        lo, hi = int(flt["fromBlock"], 16), int(flt["toBlock"], 16)
        spans.append(hi - lo + 1)
        if hi - lo + 1 > max_span:
            raise httpx.ReadTimeout("slow", request=request)
        return answer(request, lambda _: [{"blockNumber": hex(b)} for b in range(lo, hi + 1)])

    return handler, spans


def test_get_logs_timeout_after_one_retry_is_logs_timeout() -> None:
    handler, spans = slow_node(10)

    async def go() -> None:
        async with mock_client(handler) as client:
            rpc = RpcClient(["http://node"], client=client, **FAST)
            await rpc.get_logs(addresses=[], topics=None, from_block=0, to_block=99)

    with pytest.raises(LogsTimeout):
        asyncio.run(go())
    assert spans == [100, 100]


def test_fetch_logs_shrinks_on_timeouts_and_covers_the_range_once() -> None:
    handler, spans = slow_node(100)

    async def go() -> list[tuple[int, int, list[Any]]]:
        async with mock_client(handler) as client:
            rpc = RpcClient(["http://node"], client=client, **FAST)
            return [c async for c in fetch_logs(rpc, LogRangePlanner(initial=1000), addresses=[],
                                                topics=None, start=5, end=2000)]

    chunks = asyncio.run(go())
    blocks = [int(log["blockNumber"], 16) for _, _, logs in chunks for log in logs]
    assert blocks == list(range(5, 2001))
    assert max(hi - lo + 1 for lo, hi, _ in chunks) <= 100
    assert spans[:3] == [1000, 1000, 500]  # one retry, then halve


# -- pure tables ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "suggested_to"),
    [
        ("logs matched by query exceeds limit of 10000", None),  # Arbitrum Nitro
        ("query returned more than 10000 results", None),  # geth, Infura
        ("query returned more than 10000 results. Try with this block range [0x1A, 0x2f].", 0x2F),
        ("Log response size exceeded. You can make eth_getLogs requests with up to a 2K block "
         "range and no limit on the response size, or you can request any block range with a cap "
         "of 10K logs in the response. Based on your parameters, this block range should work: "
         "[0x10, 0x7df]", 0x7DF),  # Alchemy
        ("block range too large", None),  # QuickNode
        ("eth_getLogs is limited to a 10,000 range", None),  # QuickNode
        ("exceed maximum block range: 5000", None),
        ("limit exceeded", None),  # Infura, code -32005
        ("response size exceeded", None),
        ("invalid params: block range is too wide", None),  # code -32602
    ],
)
def test_range_errors_are_recognised(message: str, suggested_to: int | None) -> None:
    error = range_error(message)
    assert error is not None and error.suggested_to == suggested_to


@pytest.mark.parametrize(
    "message",
    ["execution reverted", "rate limit exceeded", "invalid params", "header not found",
     "daily request count exceeded, request rate limited"],
)
def test_other_errors_are_not_range_errors(message: str) -> None:
    assert range_error(message) is None


def planner_after(events: list[tuple[str, int | None]], **kw: Any) -> LogRangePlanner:
    p = LogRangePlanner(**kw)
    for event, value in events:
        p.next_range(1000, 10**9)
        if event == "ok":
            p.on_success(value or 0)
        elif event == "big":
            p.on_too_large(value)
        else:
            p.on_timeout()
    return p


@pytest.mark.parametrize(
    ("kw", "events", "size"),
    [
        ({}, [], 2000),
        ({}, [("ok", 0)], 4000),  # grows
        ({}, [("ok", 10)] * 10, 100_000),  # but not past maximum
        ({"initial": 10, "grow": 1.5}, [("ok", 0)], 15),
        ({}, [("ok", 2600)], 2000),  # near the target of 5000 logs: hold
        ({}, [("ok", 20_000)], 500),  # past it: shrink in proportion
        ({}, [("big", None)], 1000),  # halves
        ({}, [("timeout", None)], 1000),
        ({}, [("big", 1000 + 199)], 200),  # the provider's suggested end
        ({}, [("big", 5000)], 1000),  # a suggestion that does not shrink: halve
        ({"initial": 4, "minimum": 3}, [("big", None)] * 3, 3),  # never below minimum
        ({}, [("big", None), ("ok", 0)], 1500),  # grows halfway back towards the refused size
        # halfway steps creep up to 1999, then the refusal is forgotten and doubling resumes
        ({}, [("big", None)] + [("ok", 0)] * FORGET_REFUSAL_AFTER, 3998),
    ],
)
def test_planner_sizes(kw: dict[str, Any], events: list[Any], size: int) -> None:
    assert planner_after(events, **kw).size == size


def test_planner_next_range_stays_within_head() -> None:
    p = LogRangePlanner(initial=100)
    assert p.next_range(0, 1000) == (0, 99)
    assert p.next_range(950, 1000) == (950, 1000)
    with pytest.raises(ValueError):
        p.next_range(1001, 1000)
    with pytest.raises(ConfigError, match="log_range"):
        LogRangePlanner(initial=10, minimum=20)


def test_planner_covers_a_range_exactly_once_against_a_refusing_provider() -> None:
    p, cursor, covered = LogRangePlanner(initial=3000, minimum=1), 7, list[int]()
    while cursor <= 20_000:
        lo, hi = p.next_range(cursor, 20_000)
        if hi - lo + 1 > 37 + lo % 50:  # the limit wanders along the chain
            p.on_too_large(lo + 20 if lo % 3 == 0 else None)
            continue
        p.on_success(hi - lo)
        covered += range(lo, hi + 1)
        cursor = hi + 1
    assert covered == list(range(7, 20_001))


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("http://localhost:8547/", "http://localhost:8547/"),
        ("https://arb-mainnet.g.alchemy.com/v2/abcKEY", "https://arb-mainnet.g.alchemy.com/***"),
        ("https://arbitrum-mainnet.infura.io/v3/KEY?x=1", "https://arbitrum-mainnet.infura.io/***"),
        ("https://rpc.example.org?apikey=KEY", "https://rpc.example.org/***"),
        ("wss://x.quiknode.pro/TOKEN/", "wss://x.quiknode.pro/***"),
        ("https://user:KEY@rpc.example.org", "https://***@rpc.example.org"),
        ("not a url", "***"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
