"""Verification against the chain: the pure comparison table-driven, then the route and the CLI
against a real anvil devnet on SQLite and PostgreSQL (true history, tampered rows, a reorg,
finality, an unreachable RPC, bad ids)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.cli_verify import register
from api.routes_verify import router
from api.verify import (
    Difference,
    StepCheck,
    StoredLog,
    StoredStep,
    Tags,
    VerifyCache,
    check_step,
    least_final,
    overall,
    pick_log,
    verify_steps,
)
from api.verify_load import load_steps
from devnet.anvil import Anvil, AnvilNotFound, anvil_path, free_port
from devnet.deploy import deploy_all
from devnet.ledger import Ledger
from devnet.scenario import run_scenario
from indexer.config import ChainConfig, Settings
from indexer.finality import finality_of
from indexer.rpc import RpcClient
from tests.conftest import unavailable
from tests.indexing import devnet_settings, index, write_config

# ---- the pure core: fake receipts as dicts, no I/O -------------------------------------------

A, T0, T1, D = "0x" + "aa" * 20, "0x" + "01" * 32, "0x" + "02" * 32, "0x" + "00" * 31 + "07"
H9, H8, TX = "0x" + "99" * 32, "0x" + "88" * 32, "0x" + "ab" * 32
LOG = StoredLog(1, 9, A, (T0, T1), D, H9, "TaskEnded", 1, 2, None)
STEP = StoredStep("step", "ended", "TaskEnded", None, 1, 2, TX, 9, 1, 100, LOG)
FINAL, SAFE, LATEST = Tags(20, 15, 10), Tags(20, 9, 5), Tags(20, 8, 5)


def receipt(**kw: Any) -> dict[str, Any]:
    logs = [{"logIndex": "0x0", "address": A, "topics": [T1], "data": "0x"},
            {"logIndex": "0x1", "address": A.upper().replace("0X", "0x"), "topics": [T0, T1],
             "data": D}]
    return {"blockNumber": "0x9", "blockHash": H9, "logs": logs, **kw}


HEADERS = {9: {"hash": H9, "timestamp": "0x64"}, 8: {"hash": H8, "timestamp": "0x60"}}


def log_(**kw: Any) -> StoredStep:
    return dataclasses.replace(STEP, log=dataclasses.replace(LOG, **kw))


def logs_with(**kw: Any) -> dict[str, Any]:
    r = receipt()
    r["logs"][1] = {**r["logs"][1], **kw}
    return r


CASES: list[tuple[str, StoredStep, dict[str, Any] | None, Any, Tags, str, list[str]]] = [
    ("final", STEP, receipt(), HEADERS, FINAL, "verified", []),
    ("safe", STEP, receipt(), HEADERS, SAFE, "pending", []),
    ("latest", STEP, receipt(), HEADERS, LATEST, "pending", []),
    ("no receipt", STEP, None, HEADERS, FINAL, "reorged", []),
    ("receipt block not canonical", STEP, receipt(), {9: {"hash": H8}}, FINAL, "reorged", []),
    ("block beyond head", STEP, receipt(), {9: None}, FINAL, "reorged", []),
    ("stored hash gone", log_(block_hash=H8), receipt(), HEADERS, FINAL, "reorged",
     ["block_hash"]),
    ("tx moved", dataclasses.replace(log_(block_number=8, block_hash="0x77"), block_number=8),
     receipt(), HEADERS, FINAL, "reorged", ["block_hash"]),
    ("step block_number", dataclasses.replace(STEP, block_number=8), receipt(), HEADERS, FINAL,
     "mismatch", ["block_number"]),
    ("data", log_(data="0xdead"), receipt(), HEADERS, FINAL, "mismatch", ["data"]),
    ("topics", log_(topics=(T0,)), receipt(), HEADERS, FINAL, "mismatch", ["topics"]),
    ("address", STEP, logs_with(address="0x" + "bb" * 20), HEADERS, FINAL, "mismatch",
     ["address"]),
    ("step log_index", dataclasses.replace(STEP, log_index=5), receipt(), HEADERS, FINAL,
     "mismatch", ["log_index"]),
    ("event row log_index", log_(log_index=4), receipt(), HEADERS, FINAL, "mismatch",
     ["log_index"]),
    ("no log at index", log_(data="0x01"), {**receipt(), "logs": []}, HEADERS, FINAL,
     "mismatch", ["log_index"]),
    ("no stored log", dataclasses.replace(STEP, log=None), receipt(), HEADERS, FINAL,
     "mismatch", ["log"]),
    ("other event", log_(event="TaskQueued"), receipt(), HEADERS, SAFE, "mismatch", ["event"]),
    ("other task", log_(task_id=3), receipt(), HEADERS, FINAL, "mismatch", ["task"]),
]


@pytest.mark.parametrize(("name", "step", "rcpt", "headers", "tags", "verdict", "fields"),
                         CASES, ids=[c[0] for c in CASES])
def test_check_step(name: str, step: StoredStep, rcpt: dict[str, Any] | None, headers: Any,
                    tags: Tags, verdict: str, fields: list[str]) -> None:
    got = check_step(step, rcpt, headers, tags)
    assert (got.verdict, [d.field for d in got.differences]) == (verdict, fields), (name, got)
    if verdict in ("verified", "pending", "mismatch"):
        assert got.finality == finality_of(9, tags.safe, tags.finalized)
        assert got.block_time == 100
    else:
        assert got.finality is None


def test_check_step_names_the_values() -> None:
    got = check_step(log_(data="0xdead"), receipt(), HEADERS, FINAL)
    assert got.differences == (Difference(field="data", stored="0xdead", chain=D),)
    got = check_step(dataclasses.replace(STEP, log_index=5), receipt(), HEADERS, FINAL)
    assert got.differences == (Difference(field="log_index", stored=5, chain=1),)
    assert "not finalized" in check_step(STEP, receipt(), HEADERS, SAFE).reason


def test_pick_log_prefers_the_steps_own_event() -> None:
    queued = dataclasses.replace(LOG, log_index=0, event="TaskQueued")
    assert pick_log(STEP, [queued, LOG]) is LOG
    assert pick_log(dataclasses.replace(STEP, log_index=0), [queued, LOG]) is LOG
    assert pick_log(dataclasses.replace(STEP, event="TaskAcked"), [queued, LOG]) is LOG
    assert pick_log(STEP, []) is None
    ack = StoredStep("miner_action", "ack", "TaskAcked", "0xm", 1, 2, TX, 9, 0, None, None)
    mine = dataclasses.replace(LOG, log_index=0, event="TaskAcked", miner="0xm")
    other = dataclasses.replace(mine, log_index=1, miner="0xn")
    assert pick_log(ack, [other, mine]) is mine


def test_overall_finality_and_cache() -> None:
    assert overall(["verified", "pending"]) == "pending"
    assert overall(["pending", "mismatch", "verified"]) == "mismatch"
    assert overall(["mismatch", "reorged"]) == "reorged"
    assert overall([]) == "pending"
    assert least_final(["finalized", "safe", None]) == "safe"
    assert least_final([None]) is None
    cache = VerifyCache(size=2)
    ok = StepCheck("verified", "finalized", 1, "ok")
    cache.put((1, STEP), StepCheck("pending", "safe", 1, "not yet"))
    assert len(cache) == 0  # only final results are kept
    cache.put((1, STEP), ok)
    assert cache.get((1, STEP)) is ok
    assert cache.get((1, log_(data="0xdead"))) is None  # an edited row misses
    assert cache.get((2, STEP)) is None
    for i in (10, 11):  # the least recently used goes first
        cache.put((1, dataclasses.replace(STEP, log_index=i)), ok)
    assert len(cache) == 2 and cache.get((1, STEP)) is None


class FakeNode:
    """A JSON-RPC node over httpx.MockTransport: canned receipts and headers, batches counted."""

    def __init__(self, receipts: dict[str, Any], headers: dict[int, Any],
                 tags: bool = True) -> None:
        self.receipts, self.headers, self.tags = receipts, headers, tags
        self.batches: list[list[str]] = []

    def answer(self, call: dict[str, Any]) -> dict[str, Any]:
        method, params = call["method"], call["params"]
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": call["id"]}
        if method == "eth_blockNumber":
            return {**out, "result": "0x14"}
        if method == "eth_getTransactionReceipt":
            return {**out, "result": self.receipts.get(params[0])}
        if params[0] in ("safe", "finalized"):
            if not self.tags:
                return {**out, "error": {"code": -32602, "message": "invalid block tag"}}
            return {**out, "result": {"number": "0xf" if params[0] == "safe" else "0xa"}}
        return {**out, "result": self.headers.get(int(params[0], 16))}

    def handle(self, request: httpx.Request) -> httpx.Response:
        calls = json.loads(request.content)
        self.batches.append([c["method"] for c in calls])
        return httpx.Response(200, json=[self.answer(c) for c in calls])


def run_fake(node: FakeNode, steps: list[StoredStep], **chain: Any) -> set[str]:
    c = ChainConfig(name="t", chain_id=1, rpc_urls=["http://node"], **chain)

    async def run() -> set[str]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(node.handle)) as http:
            rpc = RpcClient(c.rpc_urls, client=http, max_retries=0)
            v = await verify_steps(rpc, c, steps, VerifyCache())
        return {x.verdict for _, x, _ in v.results}

    return asyncio.run(run())


def test_round_trips_and_tag_fallbacks() -> None:
    node = FakeNode({TX: receipt()}, HEADERS)
    assert run_fake(node, [STEP]) == {"verified"} and len(node.batches) == 1
    assert node.batches[0] == ["eth_blockNumber", "eth_getBlockByNumber", "eth_getBlockByNumber",
                               "eth_getTransactionReceipt", "eth_getBlockByNumber"]
    # The receipt names a block not fetched yet: one more round trip, for that header only.
    moved = dataclasses.replace(STEP, block_number=7, log=dataclasses.replace(
        LOG, block_number=7, block_hash="0x77"))
    node = FakeNode({TX: receipt()}, {**HEADERS, 7: {"hash": "0x77"}})
    assert run_fake(node, [moved]) == {"mismatch"}
    assert node.batches[1] == ["eth_getBlockByNumber"] and len(node.batches) == 2
    # A node that refuses the tags: asked again without them; the depth stands in (64 > head).
    node = FakeNode({TX: receipt()}, HEADERS, tags=False)
    assert run_fake(node, [STEP]) == {"pending"} and len(node.batches) == 2
    # Depth finality: no tags asked; finalized = head - confirmations = 20 - 4.
    node = FakeNode({TX: receipt()}, HEADERS)
    assert run_fake(node, [STEP], finality="depth", confirmations=4) == {"verified"}
    assert node.batches == [["eth_blockNumber", "eth_getTransactionReceipt",
                             "eth_getBlockByNumber"]]


# ---- against the devnet ----------------------------------------------------------------------

URL = "/api/v1/chains/local/sessions/{}/tasks/{}/verify"


@contextmanager
def devnet(store_url: str, **anvil: Any) -> Iterator[tuple[Anvil, Settings, Ledger]]:
    """One session with one paid task (two miners) on a fresh anvil, indexed."""
    try:
        anvil_path()
    except AnvilNotFound as e:
        unavailable(str(e))
    with Anvil(**anvil) as node:
        dep = deploy_all(node.url)
        ledger = run_scenario(node.url, dep, seed=4, sessions=1, tasks_per_session=1)
        if anvil:
            node.rpc("anvil_mine", ["0x3"])
        settings = devnet_settings(node.url, dep.addresses, store_url,
                                   start_block=dep.start_block)
        index(settings)
        yield node, settings, ledger


def client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings, extra_routers=[router]))


def sql(settings: Settings, statement: str, **params: Any) -> None:
    engine = sa.create_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)
    engine.dispose()


def step_of(body: dict[str, Any], step: str, kind: str = "step") -> dict[str, Any]:
    return next(s for s in body["steps"] if s["step"] == step and s["kind"] == kind)


def cli(*args: str) -> Any:
    app = typer.Typer()
    register(app)
    app.command("noop", hidden=True)(lambda: None)  # keep `verify` a sub-command
    return CliRunner().invoke(app, ["verify", "task", *args])


def round_trips(settings: Settings, cache: VerifyCache) -> tuple[int, set[str]]:
    """HTTP requests one verification makes, and its verdicts, through a counting client."""
    chain = settings.chains[0]
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:
        steps = load_steps(conn, 31337, 0, 0)
    engine.dispose()
    sent: list[httpx.Request] = []

    async def run() -> set[str]:
        async def hook(request: httpx.Request) -> None:
            sent.append(request)

        async with httpx.AsyncClient(event_hooks={"request": [hook]}) as http:
            v = await verify_steps(RpcClient(chain.rpc_urls, client=http), chain, steps, cache)
        return {c.verdict for _, c, _ in v.results}

    verdicts = asyncio.run(run())
    return len(sent), verdicts


def test_true_history_verified_tampered_rows_mismatch_and_rpc_down(
    store_url: str, tmp_path: Path
) -> None:
    with devnet(store_url, slots_in_an_epoch=1) as (node, settings, ledger):
        (key, task), = ledger.tasks.items()
        with client(settings) as c:
            r = c.get(URL.format(*key))
            body = r.json()
            assert r.status_code == 200 and body["verdict"] == "verified", body
            assert body["finality"] == "finalized"
            assert {s["verdict"] for s in body["steps"]} == {"verified"}
            assert {s["step"] for s in body["steps"] if s["kind"] == "step"} == \
                set(task.steps) | {"acked"}
            assert {s["step"] for s in body["steps"] if s["kind"] == "payment"} == \
                {"network", "allocation"}
            for s in body["steps"]:
                want = (task.steps.get(s["step"]) if s["kind"] == "step" else
                        None if s["kind"] == "payment" else
                        getattr(task.miners[s["actor"]], s["step"]))
                if s["step"] != "acked" and s["kind"] != "payment":
                    assert s["tx_hash"] == want, s
                assert s["explorer_url"] == \
                    f"http://testserver/api/v1/chains/local/tx/{s['tx_hash']}"
                view = c.get(s["explorer_url"].removeprefix("http://testserver")).json()
                assert any(e["log_index"] == s["log_index"] and e["event"] == s["event"]
                           for e in view["events"])
            assert not any(s["cached"] for s in body["steps"])
            assert all(s["cached"] for s in c.get(URL.format(*key)).json()["steps"])

            # A tampered log is not masked by the cache; putting it back hits the cache again.
            ended = step_of(body, "ended")
            where = "tx_hash = :h AND log_index = :i"
            args = {"h": ended["tx_hash"], "i": ended["log_index"]}
            sql(settings, f"UPDATE event SET data = '0xdead' WHERE {where}", **args)
            got = c.get(URL.format(*key)).json()
            assert got["verdict"] == "mismatch"
            bad = step_of(got, "ended")
            assert bad["verdict"] == "mismatch" and not bad["cached"]
            (diff,) = bad["differences"]
            assert diff["field"] == "data" and diff["stored"] == "0xdead"
            assert diff["chain"].startswith("0x") and diff["chain"] != "0xdead"
            assert {s["verdict"] for s in got["steps"] if s is not bad} == {"verified"}
            sql(settings, f"UPDATE event SET data = :d WHERE {where}", d=diff["chain"], **args)
            again = c.get(URL.format(*key)).json()
            assert again["verdict"] == "verified" and step_of(again, "ended")["cached"]

            sql(settings, "UPDATE task_step SET log_index = log_index + 1 WHERE step = 'ended'")
            miner = sorted(task.miners)[0]
            sql(settings, "UPDATE task_miner SET commit_log_index = 7 WHERE miner = :m", m=miner)
            got = c.get(URL.format(*key)).json()
            assert got["verdict"] == "mismatch"
            assert step_of(got, "ended")["differences"] == [
                {"field": "log_index", "stored": ended["log_index"] + 1,
                 "chain": ended["log_index"]}]
            commit = next(s for s in got["steps"] if s["step"] == "commit"
                          and s["actor"] == miner)
            assert [d["field"] for d in commit["differences"]] == ["log_index"]
            assert commit["differences"][0]["stored"] == 7

            assert c.get(URL.format(0, 99)).json()["error"]["details"]["what"] == "task"
            assert c.get(URL.format(42, 0)).json()["error"]["details"]["what"] == "session"

            # RPC down: 503 with Retry-After, naming what failed.
            state = c.app.state.corlens  # type: ignore[attr-defined]
            live, dead = state.rpcs["local"], RpcClient([f"http://127.0.0.1:{free_port()}"],
                                                        max_retries=0)
            state.rpcs["local"] = dead
            try:
                r = c.get(URL.format(*key))
            finally:
                state.rpcs["local"] = live
                c.portal.call(dead.aclose)  # type: ignore[union-attr]
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            err = r.json()["error"]
            assert err["code"] == "rpc_unavailable"
            assert "connection failed" in err["details"]["failed"] and "local" in err["message"]


        # The CLI on the same database: the tampered task fails, the restored one passes.
        addresses = {n: str(c.address) for n, c in settings.chains[0].contracts.items()}
        cfg = write_config(tmp_path / "c.yaml", node.url, addresses, settings.database_url)
        res = cli("local", "0", "0", "--config", cfg)
        assert res.exit_code == 1, res.output
        assert "mismatch" in res.stdout and "log_index: stored" in res.stdout
        sql(settings, "UPDATE task_step SET log_index = log_index - 1 WHERE step = 'ended'")
        sql(settings, "UPDATE task_miner SET commit_log_index = :i WHERE miner = :m",
            i=0, m=miner)
        res = cli("local", "0", "0", "--config", cfg)
        assert res.exit_code == 0, res.output
        assert "overall: verified" in res.stdout
        assert f"/api/v1/chains/local/tx/{ended['tx_hash']}" in res.stdout
        res = cli("local", "0", "0", "--config", cfg, "--json")
        assert res.exit_code == 0 and json.loads(res.stdout)["verdict"] == "verified"
        assert json.loads(res.stdout).keys() == body.keys()
        cache = VerifyCache()  # tags, receipts and headers in one batch; then only the tags
        assert round_trips(settings, cache) == round_trips(settings, cache) == (1, {"verified"})
        assert len(cache) == len(body["steps"])

    # anvil stopped: the CLI says the RPC failed, exit 1; bad usage is exit 2.
    res = cli("local", "0", "0", "--config", cfg)
    assert res.exit_code == 1 and "RPC" in res.stderr, res.output
    res = cli("nope", "0", "0", "--config", cfg)
    assert res.exit_code == 2 and "configured: local" in res.stderr, res.output
    assert cli("local", "-1", "0", "--config", cfg).exit_code == 2
    res = cli("local", "0", "5", "--config", cfg)
    assert res.exit_code == 1 and "task not in the index" in res.stderr, res.output


def test_pending_until_final_and_reorged_before_reindex(store_url: str) -> None:
    with devnet(store_url) as (node, settings, ledger):  # finalized = head - 64
        key = next(iter(ledger.tasks))

        def verify(c: TestClient) -> dict[str, Any]:
            r = c.get(URL.format(*key))
            assert r.status_code == 200, r.text
            return dict(r.json())

        def mine(n: int) -> None:
            node.rpc("anvil_mine", [hex(n)])

        with client(settings) as c:
            body = verify(c)
            assert body["verdict"] == "pending" and body["finality"] == "latest"
            assert {s["verdict"] for s in body["steps"]} == {"pending"}
            blocks = [s["block_number"] for s in body["steps"]]
            mine(max(blocks) + 32 - body["head_block"])  # safe = head - 32 reaches the last step
            body = verify(c)
            assert {(s["verdict"], s["finality"]) for s in body["steps"]} == {("pending", "safe")}
            assert "safe, not finalized" in body["steps"][0]["reason"]
            mine(64)
            body = verify(c)
            assert body["verdict"] == "verified" and body["finality"] == "finalized"

        ended = step_of(body, "ended")["block_number"]
        node.rpc("anvil_reorg", [body["head_block"] - ended + 1, []])
        with client(settings) as c:  # a fresh cache: anvil can reorg even finalized blocks
            body = verify(c)
        assert body["verdict"] == "reorged"
        for s in body["steps"]:
            gone = s["block_number"] >= ended
            assert s["verdict"] == ("reorged" if gone else "verified"), s
            if gone:
                assert "not on the canonical chain" in s["reason"] and s["finality"] is None


def test_unknown_chain_and_bad_ids(store_url: str) -> None:
    settings = devnet_settings("http://127.0.0.1:9", {"SessionV2": "0x" + "11" * 20,
                                                      "CognitiveV1": "0x" + "22" * 20}, store_url)
    checks: list[tuple[str, int, Callable[[dict[str, Any]], bool]]] = [
        ("/api/v1/chains/nope/sessions/0/tasks/0/verify", 404,
         lambda e: e["details"]["configured"] == ["local"]),
        (URL.format(0, 0), 404, lambda e: e["details"]["what"] == "session"),
        (URL.format(-1, 0), 422, lambda e: e["details"]["field"] == "session_id"),
        (URL.format(0, "x"), 422, lambda e: e["details"]["field"] == "task_id"),
        (URL.format(2**63, 0), 422, lambda e: e["details"]["field"] == "session_id"),
    ]
    with client(settings) as c:
        for path, status, ok in checks:
            r = c.get(path)
            assert r.status_code == status and ok(r.json()["error"]), (path, r.text)
        op = c.get("/openapi.json").json()["paths"][URL.format("{session_id}", "{task_id}")
                                                     .replace("local", "{chain}")]["get"]
        assert {"200", "404", "422", "503"} <= set(op["responses"])
        assert "Retry-After" in op["responses"]["503"]["headers"]


# ---- tampered rows verify used to pass: actor, block_time, payments, deleted rows, bad hash ---

def tampered(store_url: str, *statements: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The task's verification before (true history) and after ``statements`` ran on its rows."""
    with devnet(store_url, slots_in_an_epoch=1) as (_, settings, ledger), client(settings) as c:
        url = URL.format(*next(iter(ledger.tasks)))
        before = c.get(url).json()
        assert before["verdict"] == "verified", before
        for statement in statements:
            sql(settings, statement)
        r = c.get(url)
        assert r.status_code == 200, r.text
        yield before, r.json()


def diffs(body: dict[str, Any], verdict: str = "mismatch") -> list[tuple[str, str, str]]:
    """(step, actor, field) of every difference; the task's verdict is ``verdict``."""
    assert body["verdict"] == verdict, body
    return [(s["step"], s["actor"], d["field"]) for s in body["steps"] for d in s["differences"]]


TASK0 = "session_id = 0 AND task_id = 0"


def test_tampered_actor_is_a_mismatch(store_url: str) -> None:
    nobody = "0x" + "00" * 19 + "01"
    for before, got in tampered(
        store_url,
        f"UPDATE task_step SET actor = '{nobody}' WHERE {TASK0} AND step IN ('ended', 'acked')",
    ):
        ended, acked = step_of(before, "ended"), step_of(before, "acked")
        assert sorted(diffs(got)) == [("acked", nobody, "actor"), ("ended", nobody, "actor")]
        (d,) = step_of(got, "ended")["differences"]
        assert d == {"field": "actor", "stored": nobody, "chain": ended["actor"]}
        assert step_of(got, "acked")["differences"][0]["chain"] == acked["actor"]


def test_tampered_miner_of_an_action_is_a_mismatch(store_url: str) -> None:
    nobody = "0x" + "00" * 19 + "02"
    for before, got in tampered(
        store_url, f"UPDATE task_miner SET miner = '{nobody}' WHERE {TASK0} AND miner = "
        f"(SELECT MIN(miner) FROM task_miner WHERE {TASK0})",
    ):
        miner = min(s["actor"] for s in before["steps"] if s["kind"] == "miner_action")
        got_diffs = diffs(got)
        for act in ("ack", "precommit", "commit"):
            assert (act, nobody, "actor") in got_diffs
        # ... and the miner the chain assigned has no row: reported, not passed over.
        assert ("assigned", miner, "row") in got_diffs


def test_tampered_block_time_is_a_mismatch(store_url: str) -> None:
    for before, got in tampered(
        store_url, f"UPDATE task_step SET block_time = 1 WHERE {TASK0} AND step = 'committed'"
    ):
        assert diffs(got) == [("committed", step_of(before, "committed")["actor"], "block_time")]
        (d,) = step_of(got, "committed")["differences"]
        assert d == {"field": "block_time", "stored": 1,
                     "chain": step_of(before, "committed")["block_time"]}


def test_tampered_payment_is_a_mismatch(store_url: str) -> None:
    for before, got in tampered(
        store_url,
        "UPDATE payment SET amount = amount || '000' "
        f"WHERE {TASK0} AND kind = 'allocation' AND node = (SELECT MIN(node) FROM payment "
        f"WHERE {TASK0} AND kind = 'allocation')",
    ):
        pays = [s for s in before["steps"] if s["kind"] == "payment" and s["step"] == "allocation"]
        assert len(pays) == 2 and {s["verdict"] for s in pays} == {"verified"}
        node = min(str(s["actor"]) for s in pays)
        assert diffs(got) == [("allocation", node, "amount")]
        (bad,) = [s for s in got["steps"] if s["differences"]]
        (d,) = bad["differences"]
        assert int(d["stored"]) == 1000 * int(d["chain"]) > 0  # the amount x1000


def test_deleted_rows_are_reported(store_url: str) -> None:
    for before, got in tampered(
        store_url,
        f"DELETE FROM task_step WHERE {TASK0} AND step = 'committed'",
        f"DELETE FROM task_miner WHERE {TASK0} AND miner = "
        f"(SELECT MAX(miner) FROM task_miner WHERE {TASK0})",
        f"DELETE FROM payment WHERE {TASK0} AND kind = 'network'",
    ):
        committed = step_of(before, "committed")
        miner = max(s["actor"] for s in before["steps"] if s["kind"] == "miner_action")
        assert sorted(diffs(got)) == sorted([
            ("committed", None, "row"), ("assigned", miner, "row"),  # sender not read
            ("ack", miner, "row"), ("precommit", miner, "row"), ("commit", miner, "row"),
            ("network", None, "row")])
        gap = step_of(got, "committed")
        assert gap["verdict"] == "mismatch" and "no row" in gap["reason"]
        assert gap["differences"][0]["chain"] == \
            f"{committed['tx_hash']}#{committed['log_index']}"
        assert (gap["tx_hash"], gap["block_number"]) == \
            (committed["tx_hash"], committed["block_number"])


def test_malformed_stored_hash_is_a_verdict_not_an_rpc_failure(
    store_url: str, tmp_path: Path
) -> None:
    with devnet(store_url, slots_in_an_epoch=1) as (node, settings, ledger):
        sql(settings, f"UPDATE task_step SET tx_hash = 'zz' WHERE {TASK0} AND step = 'ended'")
        with client(settings) as c:
            r = c.get(URL.format(*next(iter(ledger.tasks))))
        assert r.status_code == 200, r.text
        body = r.json()
        assert diffs(body) == [("ended", step_of(body, "ended")["actor"], "tx_hash")]
        assert "not a transaction hash" in step_of(body, "ended")["reason"]
        addresses = {n: str(c.address) for n, c in settings.chains[0].contracts.items()}
        cfg = write_config(tmp_path / "c.yaml", node.url, addresses, settings.database_url)
        res = cli("local", "0", "0", "--config", cfg)
        assert res.exit_code == 1, res.output
        assert "RPC" not in res.output and "tx_hash: stored zz" in res.stdout
        assert "overall: mismatch" in res.stdout
