"""The payout audit and the payouts route.

Pure rules table-driven (no I/O); then against a real anvil devnet on SQLite and PostgreSQL:
each rule fires exactly on the scenario built to break it and stays silent on a clean run,
the payouts route walks every row once under inserts and its CSV equals its JSON, the native
path and an unreachable RPC, bad input, and the CLI's output and exit codes.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api import audit
from api.app import create_app
from api.audit import Moved, Pay, TaskFacts, finding_id
from api.cli_audit import register
from api.pagination import encode_token
from api.routes_payouts import configured_unpaid_after, router
from devnet.anvil import Anvil
from devnet.audit_scenarios import break_rules, deploy_native_payment, native_deposit
from devnet.chain import Chain
from devnet.deploy import COR, deploy_all
from devnet.lifecycle import Net, deposit, drive_task, submit_task
from devnet.scenario import run_scenario
from indexer.config import Settings
from indexer.errors import ConfigError
from indexer.rpc import RpcClient
from tests.indexing import devnet_settings, index, write_config

CID = 31337
A, B, C, OUT = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40, "0x" + "d" * 40
PAY = "0x" + "9" * 40  # the SessionPayment contract in pure tests


# ---- pure rules, table-driven ------------------------------------------------------------------
def p(kind: str, block: int, amount: int, node: str | None = None, tid: int | None = 1,
      tx: str | None = None, li: int = 0, party: str | None = None) -> Pay:
    return Pay(kind, tx or f"0x{block:064x}", li, block, amount, 0, tid, node, party, PAY)


def task(miners: dict[str, bool], ended: int | None = 10, force: bool = False) -> TaskFacts:
    e = Pay("task_ended", "0x" + "e" * 64, 0, ended, 0, 0, 1) if ended is not None else None
    return TaskFacts(0, 1, force, e, miners)


T = {(0, 1): task({A: True, B: True, C: False})}
CASES: list[tuple[str, list[Pay], dict[Any, TaskFacts], int, dict[str, int]]] = [
    ("clean", [p("network", 11, 10), p("allocation", 12, 5, A), p("allocation", 12, 5, B, li=1),
               p("withdrawal", 13, 5, A, tid=None)], T, 100, {}),
    ("non-committer and unassigned", [p("network", 11, 10), p("allocation", 12, 1, C),
                                      p("allocation", 12, 1, OUT, li=1)], T, 100,
     {"allocation_without_commit": 2, "ended_without_allocation": 1}),
    ("allocation to a task never indexed", [p("network", 11, 9, tid=7),
                                            p("allocation", 12, 1, A, tid=7)], {}, 100,
     {"allocation_without_commit": 1}),
    ("duplicate", [p("network", 11, 10), p("allocation", 12, 1, A), p("allocation", 13, 1, A),
                   p("allocation", 14, 1, A)], T, 100, {"duplicate_allocation": 2}),
    ("unpaid, grace over", [], T, 60, {"ended_without_allocation": 1}),
    ("unpaid, in grace", [], T, 59, {}),
    ("force-ended is expected unpaid", [], {(0, 1): task({A: True}, force=True)}, 100, {}),
    ("no committer", [], {(0, 1): task({A: False})}, 100, {}),
    ("not ended", [], {(0, 1): task({A: True}, ended=None)}, 100, {}),
    ("over-allocated task and session", [p("network", 11, 3), p("allocation", 12, 2, A),
                                         p("allocation", 12, 2, B, li=1)], T, 100,
     {"over_allocation": 2}),
    ("allocated before paid", [p("allocation", 11, 2, A), p("network", 12, 2)], T, 100,
     {"over_allocation": 2}),
    ("overdraft once, then floor at 0", [
        p("network", 10, 9), p("allocation", 11, 4, A), p("withdrawal", 12, 6, A, tid=None),
        p("network", 13, 1, tid=2), p("allocation", 13, 1, A, tid=2, li=1),
        p("withdrawal", 14, 1, A, tid=None)], T, 100,
     {"over_withdrawal": 1, "allocation_without_commit": 1}),
]


@pytest.mark.parametrize(("name", "pays", "tasks", "cursor", "want"), CASES,
                         ids=[c[0] for c in CASES])
def test_rules_table(name: str, pays: list[Pay], tasks: dict[Any, TaskFacts], cursor: int,
                     want: dict[str, int]) -> None:
    r = audit.run_rules(CID, pays, tasks, cursor_block=cursor, unpaid_after_blocks=50, moved={})
    assert {k: v for k, v in r.summary.items() if v} == want, name
    assert r.clean == (not want)
    again = audit.run_rules(CID, list(reversed(pays)), tasks, cursor_block=cursor,
                            unpaid_after_blocks=50, moved={})
    assert [f.id for f in again.findings] == [f.id for f in r.findings]  # order-free, stable


def transfer(src: str, dst: str, value: int, extra_topic: bool = False) -> dict[str, Any]:
    topics = [audit.TRANSFER_TOPIC0, "0x" + src[2:].rjust(64, "0"), "0x" + dst[2:].rjust(64, "0")]
    return {"topics": topics + (["0x" + "0" * 64] if extra_topic else []), "data": hex(value)}


@pytest.mark.parametrize(("kind", "logs", "want"), [
    ("deposit", [transfer(A, PAY, 5), transfer(A, B, 9)], 5),
    ("deposit", [transfer(A, PAY, 5), transfer(B, PAY, 2)], 7),
    ("withdrawal", [transfer(PAY, A, 4), transfer(A, PAY, 1)], 4),
    ("deposit", [transfer(A, B, 5)], None),  # no Transfer involving the contract: native
    ("deposit", [transfer(A, PAY, 5, extra_topic=True)], None),  # ERC-721 shape is not ERC-20
])
def test_erc20_moved(kind: str, logs: list[dict[str, Any]], want: int | None) -> None:
    assert audit.erc20_moved(kind, PAY, {"logs": logs}) == want


class FakeRpc:
    """Answers eth_getTransactionReceipt / eth_getBalance from tables (no network)."""

    def __init__(self, receipts: dict[str, Any], balances: dict[tuple[str, int], int]) -> None:
        self.receipts, self.balances = receipts, balances

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        return [self.receipts.get(a[0]) if m == "eth_getTransactionReceipt"
                else hex(self.balances[(a[0], int(a[1], 16))]) for m, a in calls]


def test_read_moved_both_paths_and_mismatch() -> None:
    fee = 21_000 * 7
    receipt = {"from": A, "gasUsed": hex(21_000), "effectiveGasPrice": hex(7), "blockNumber":
               hex(20), "logs": []}
    pays = [p("deposit", 20, 100, tx="0x01", party=A), p("withdrawal", 21, 50, tx="0x02", party=B),
            p("deposit", 22, 10, tx="0x03", party=A), p("network", 23, 10, tx="0x04")]
    rpc = FakeRpc({"0x01": receipt, "0x02": {**receipt, "from": C, "blockNumber": hex(21)},
                   "0x03": {**receipt, "logs": [transfer(A, PAY, 9)]}},
                  {(A, 19): 1000, (A, 20): 1000 - 100 - fee, (B, 20): 0, (B, 21): 49})
    moved = asyncio.run(audit.read_moved(rpc, pays))
    assert moved == {("0x01", "deposit"): Moved("native", 100),
                     ("0x02", "withdrawal"): Moved("native", 49),
                     ("0x03", "deposit"): Moved("erc20", 9)}
    r = audit.run_rules(CID, pays, {}, cursor_block=30, unpaid_after_blocks=5, moved=moved)
    assert [(f.rule, f.scope, dict(f.amounts)) for f in r.findings] == [
        ("amount_mismatch", "native", {"logged": 50, "moved": 49}),
        ("amount_mismatch", "erc20", {"logged": 10, "moved": 9})]
    assert asyncio.run(audit.read_moved(FakeRpc({}, {}), pays)) == {
        ("0x01", "deposit"): None, ("0x02", "withdrawal"): None, ("0x03", "deposit"): None}
    skipped = audit.run_rules(CID, pays, {}, cursor_block=0, unpaid_after_blocks=5,
                              moved="RPC unavailable")
    assert skipped.rules[-1] == audit.RuleRun("amount_mismatch", "skipped", 0, 0,
                                              "RPC unavailable")
    assert not skipped.clean and not skipped.findings


def test_unpaid_after_blocks_config_key() -> None:
    def s(**kw: Any) -> Settings:
        return SimpleNamespace(model_extra=None, **kw)  # type: ignore[return-value]

    assert configured_unpaid_after(s()) == audit.DEFAULT_UNPAID_AFTER_BLOCKS
    assert configured_unpaid_after(s(audit={"unpaid_after_blocks": 7})) == 7
    with pytest.raises(ConfigError, match="audit.unpaid_after_blocks"):
        configured_unpaid_after(s(audit={"unpaid_after_blocks": -1}))


# ---- against the devnet --------------------------------------------------------------------------
@contextmanager
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, extra_routers=[router])) as c:
        yield c


def cli(*args: str) -> Any:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return CliRunner().invoke(app, ["audit", "payouts", *args])


def report(c: TestClient, **params: Any) -> dict[str, Any]:
    r = c.get("/api/v1/chains/local/audit/payouts", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_each_rule_fires_on_its_scenario_and_not_on_a_clean_run(
    anvil: Anvil, store_url: str, tmp_path: Path
) -> None:
    dep = deploy_all(anvil.url)
    ledger = run_scenario(anvil.url, dep)
    settings = devnet_settings(anvil.url, dep.addresses, store_url, start_block=dep.start_block)
    config = write_config(tmp_path / "c.yaml", anvil.url, dep.addresses, store_url,
                          start_block=dep.start_block)
    index(settings)
    with api(settings) as c:
        clean = report(c)
        assert clean["clean"] and clean["findings"] == [], clean["findings"]
        assert {r["rule"]: r["status"] for r in clean["rules"]} == dict.fromkeys(audit.RULES, "ran")
        assert {r["rule"]: r["checked"] > 0 for r in clean["rules"]} == \
            dict.fromkeys(audit.RULES, True)
        ok = cli("--chain", "local", "--config", config)
        assert ok.exit_code == 0 and "0 finding(s)" in ok.stdout, ok.output

        broken = break_rules(anvil.url, dep, ledger)
        index(settings)
        got = report(c)
        want = {finding_id(CID, rule, *key): rule for rule, keys in broken.keys.items()
                for key in keys}
        assert {f["id"]: f["rule"] for f in got["findings"]} == want
        assert got["summary"] == {**dict.fromkeys(audit.RULES, 0),
                                  **{r: len(k) for r, k in broken.keys.items()}}
        assert not got["clean"]
        assert [f["id"] for f in report(c)["findings"]] == [f["id"] for f in got["findings"]]
        for f in got["findings"]:
            assert f["rows"], f
            for row in f["rows"]:
                assert row["explorer_url"].endswith(f"/api/v1/chains/local/tx/{row['tx_hash']}")
                assert row["finality"] in ("latest", "safe", "finalized")
        silent = report(c, unpaid_after_blocks=10**6)["summary"]
        assert silent["ended_without_allocation"] == 0
        sid, tid = broken.force_ended
        assert not [f for f in got["findings"] if (f["session_id"], f["task_id"]) == (sid, tid)]

        res = cli("--chain", "local", "--config", config, "--csv", str(tmp_path / "f.csv"))
        assert res.exit_code == 1 and f"{len(want)} finding(s)" in res.stderr, res.output
        for f in got["findings"]:  # links on corlens's own tx view at the default serve address
            link = f["rows"][0]["explorer_url"].replace("testserver", "127.0.0.1:8000")
            assert f["id"] in res.stdout and link in res.stdout
        with (tmp_path / "f.csv").open() as fh:
            lines = list(csv.DictReader(fh))
        assert {x["id"] for x in lines} == set(want)
        assert len(lines) == sum(len(f["rows"]) for f in got["findings"])
        served = c.get("/api/v1/chains/local/audit/payouts", params={"format": "csv"})
        assert served.status_code == 200 and served.headers["content-type"].startswith("text/csv")
        assert csv_rows(served.text.replace("testserver", "127.0.0.1:8000")) == lines
        as_json = cli("--chain", "local", "--config", config, "--json")
        assert as_json.exit_code == 1

        def gist(r: dict[str, Any]) -> list[Any]:
            return [(f["id"], f["message"], f["amounts"], [(x["tx_hash"], x["log_index"])
                                                           for x in f["rows"]])
                    for f in r["findings"]]

        assert gist(json.loads(as_json.stdout)) == gist(got)

        # a node that overdrew: pending stays at 0, as the contract (and the audit) leave it
        over = next(f for f in got["findings"] if f["rule"] == "over_withdrawal")
        node_url = f"/api/v1/chains/local/nodes/{over['node']}"
        earned = c.get(node_url).json()["earnings"]
        assert int(earned["withdrawn"]) > int(earned["allocated"]) and earned["pending"] == "0"
        assert earned["unreadable"] == 0
        assert "never negative" in c.get("/openapi.json").json()["components"]["schemas"][
            "Earnings"]["properties"]["pending"]["description"]

        # corrupt stored amounts: findings naming row and field, never a 500 or a traceback
        engine = sa.create_engine(store_url)
        with engine.begin() as conn:
            bad = [tuple(r) for r in conn.execute(sa.text(
                "SELECT tx_hash, log_index FROM payment WHERE (kind = 'deposit' AND "
                "session_id = 0) OR (kind = 'allocation' AND node = :n)"), {"n": over["node"]})]
            conn.execute(sa.text(
                "UPDATE payment SET amount = 'abc' WHERE kind = 'deposit' AND session_id = 0"))
            conn.execute(sa.text("UPDATE payment SET amount = '-5' WHERE kind = 'allocation' "
                                 "AND node = :n"), {"n": over["node"]})
        engine.dispose()
        assert len(bad) >= 2
        corrupt = report(c)
        invalid = [f for f in corrupt["findings"] if f["rule"] == "invalid_amount"]
        assert sorted((f["rows"][0]["tx_hash"], f["rows"][0]["log_index"]) for f in invalid) == \
            sorted(bad)
        assert all("field amount is" in f["message"] and f["rows"][0]["amount"] is None
                   for f in invalid), invalid
        assert corrupt["summary"]["invalid_amount"] == len(bad)
        assert {f["id"] for f in corrupt["findings"]} - {f["id"] for f in invalid} <= set(want)
        res = cli("--chain", "local", "--config", config)
        assert res.exit_code == 1 and res.exception is not None and "invalid_amount" in res.stdout
        assert isinstance(res.exception, SystemExit), res.output
        assert c.get("/api/v1/chains/local/payouts").status_code == 200
        assert c.get(node_url).json()["earnings"]["unreadable"] == 1


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def as_csv(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows]


def walk(c: TestClient, limit: int, between: Any = None, **params: Any) -> list[dict[str, Any]]:
    rows, token, pages = [], None, 0
    while True:
        q = {**params, "limit": limit, **({"next": token} if token else {})}
        page = c.get("/api/v1/chains/local/payouts", params=q).json()
        rows += page["payouts"]
        token, pages = page["next"], pages + 1
        if pages == 1 and between:
            between()
        if not token:
            return rows


def test_payouts_walk_every_row_once_under_inserts_and_csv_equals_json(
    anvil: Anvil, store_url: str
) -> None:
    dep = deploy_all(anvil.url)
    ledger = run_scenario(anvil.url, dep, sessions=2, tasks_per_session=2)
    settings = devnet_settings(anvil.url, dep.addresses, store_url, start_block=dep.start_block)
    index(settings)
    with api(settings) as c:
        before = walk(c, 500)
        assert len(before) == len(ledger.payments) > 8
        assert [(r["block_number"], r["log_index"]) for r in before] == \
            sorted((r["block_number"], r["log_index"]) for r in before)

        def insert() -> None:  # new chain activity, and a late row before the cursor
            with Chain(anvil.url) as chain:
                net = Net(chain, dep, ledger)
                s = ledger.sessions[0]
                deposit(net, session_id=0, depositor=s.owner, amount=3 * COR)
                t = submit_task(net, session_id=0, sender=next(iter(s.routers)), task_data="x",
                                client_reference="late")
                drive_task(net, t, router=next(iter(s.routers)), miners=s.ephemeral[:2],
                           payment=2 * COR)
            index(settings)
            engine = sa.create_engine(store_url)
            with engine.begin() as conn:
                conn.execute(sa.text(
                    "INSERT INTO payment (chain_id, tx_hash, log_index, kind, amount, "
                    "block_number) VALUES (:c, :h, 0, 'deposit', '1', 0)"),
                    {"c": CID, "h": "0x" + "0" * 64})
            engine.dispose()

        during = walk(c, 3, between=insert)
        keys = [(r["tx_hash"], r["log_index"]) for r in during]
        assert len(keys) == len(set(keys))
        assert keys[: len(before)] == [(r["tx_hash"], r["log_index"]) for r in before]
        assert len(during) == len(ledger.payments)  # new rows after the cursor, not the late one
        after = walk(c, 7)
        assert len(after) == len(during) + 1
        body = c.get("/api/v1/chains/local/payouts", params={"format": "csv"})
        assert body.headers["content-type"].startswith("text/csv")
        assert csv_rows(body.text) == as_csv(after)
        node = next(r["node"] for r in after if r["kind"] == "allocation")
        for params in ({"kind": "allocation", "node": node}, {"session": 1, "task": 0},
                       {"from_block": after[5]["block_number"],
                        "to_block": after[-3]["block_number"]},
                       {"since": after[-1]["block_time"], "until": after[-1]["block_time"]}):
            page = walk(c, 2, **params)
            assert page, params
            assert page == [r for r in after if _matches(r, params)], params
            csv_body = c.get("/api/v1/chains/local/payouts", params={**params, "format": "csv"})
            assert csv_rows(csv_body.text) == as_csv(page), params


def _matches(r: dict[str, Any], f: dict[str, Any]) -> bool:
    checks = {"kind": r["kind"] == f.get("kind"), "node": r["node"] == f.get("node"),
              "session": r["session_id"] == f.get("session"), "task": r["task_id"] == f.get("task"),
              "from_block": r["block_number"] >= f.get("from_block", 0),
              "to_block": r["block_number"] <= f.get("to_block", 0),
              "since": (r["block_time"] or -1) >= f.get("since", 0),
              "until": (r["block_time"] or 10**12) <= f.get("until", 0)}
    return all(checks[k] for k in f)


def test_native_amounts_and_an_unreachable_rpc(anvil: Anvil, tmp_path: Path) -> None:
    with Chain(anvil.url) as chain:
        user = chain.accounts()[6]
        stub = deploy_native_payment(chain, user)
        honest = native_deposit(chain, stub, user, session_id=1, value=10**18)
        skewed = native_deposit(chain, stub, user, session_id=1, value=10**18, skew=-5)
    db = f"sqlite:///{tmp_path}/n.db"
    both = {"SessionV2": stub, "CognitiveV1": stub}
    payment_only = {"SessionPayment": {"address": stub}}
    settings = devnet_settings(anvil.url, both, db, contracts=payment_only)
    index(settings)
    with api(settings) as c:
        got = report(c)
        assert [(f["id"], f["scope"], f["amounts"]) for f in got["findings"]] == [
            (finding_id(CID, "amount_mismatch", skewed.tx_hash, "deposit"), "native",
             {"logged": str(10**18 - 5), "moved": str(10**18)})]
        assert got["rules"][-1]["checked"] == 2 and honest.tx_hash not in json.dumps(got)
        old = c.app.state.corlens.rpcs["local"]  # type: ignore[attr-defined]
        c.portal.call(old.aclose)  # type: ignore[union-attr]
        c.app.state.corlens.rpcs["local"] = RpcClient(  # type: ignore[attr-defined]
            ["http://127.0.0.1:9"], max_retries=0)
        down = report(c)
        rule6 = down["rules"][-1]
        assert rule6["status"] == "skipped" and "RPC unavailable" in rule6["reason"]
        assert [r["status"] for r in down["rules"][:-1]] == ["ran"] * (len(audit.RULES) - 1)
        assert not down["clean"] and down["findings"] == []
        assert down["notes"] == [f"amount_mismatch skipped: {rule6['reason']}"]
    config = write_config(tmp_path / "dead.yaml", "http://127.0.0.1:9", both, db,
                          contracts=payment_only)
    res = cli("--chain", "local", "--config", config)
    assert res.exit_code == 1 and "amount_mismatch skipped: RPC unavailable" in res.stderr
    assert "skipped" in res.stdout


def test_bad_input_is_422_naming_the_field_and_unknown_chain_404(tmp_path: Path) -> None:
    settings = devnet_settings("http://127.0.0.1:9", {"SessionV2": A, "CognitiveV1": B},
                               f"sqlite:///{tmp_path}/b.db")
    base = "/api/v1/chains/local/payouts"
    with api(settings) as c:
        for query, field in [("node=0x12", "node"), ("from_block=-1", "from_block"),
                             ("limit=501", "limit"), ("next=!!", "next"), ("kind=tip", "kind"),
                             ("from_block=5&to_block=4", "from_block"), ("session=-2", "session"),
                             ("format=xml", "format"), ("since=9&until=1", "since"),
                             (f"next={encode_token([2**70, 0, 'x'])}", "next")]:
            r = c.get(f"{base}?{query}")
            assert r.status_code == 422 and r.json()["error"]["details"]["field"] == field, query
        r = c.get("/api/v1/chains/local/audit/payouts?unpaid_after_blocks=-1")
        assert r.json()["error"]["details"]["field"] == "unpaid_after_blocks"
        r = c.get("/api/v1/chains/local/audit/payouts?format=xml")
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "format"
        for path in ("/api/v1/chains/nope/payouts", "/api/v1/chains/nope/audit/payouts"):
            r = c.get(path)
            assert r.status_code == 404 and r.json()["error"]["details"]["chain"] == "nope"
        assert c.get(base).json() == {"next": None, "payouts": []}
        doc = c.get("/openapi.json").json()["paths"]
        listing, audit_doc = doc[base.replace("local", "{chain}")]["get"], \
            doc["/api/v1/chains/{chain}/audit/payouts"]["get"]
        assert "text/csv" in listing["responses"]["200"]["content"]
        assert "text/csv" in audit_doc["responses"]["200"]["content"]
        for op in (listing, audit_doc):
            assert {"200", "404", "422"} <= set(op["responses"])
    config = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9",
                          {"SessionV2": A, "CognitiveV1": B}, f"sqlite:///{tmp_path}/b.db")
    res = cli("--chain", "nope", "--config", config)
    assert res.exit_code == 2 and "--chain" in res.stderr and "nope" in res.stderr
    assert cli("--config", config).exit_code == 2  # --chain is required
    assert cli("--chain", "local", "--config", str(tmp_path / "missing.yaml")).exit_code == 2
    res = cli("--chain", "local", "--config", config, "--unpaid-after-blocks", "-1")
    assert res.exit_code == 2 and "--unpaid-after-blocks" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text((tmp_path / "c.yaml").read_text() + "audit: {unpaid_after_blocks: x}\n")
    res = cli("--chain", "local", "--config", str(bad))
    assert res.exit_code == 2 and "audit" in res.stderr
