"""From a gateway request to its on-chain task and back: the pool is built from the indexer's
own sessions (from_index), the devnet router in chain mode submits a real SessionV2 task with
clientReference = the gateway's request id and drives it to payment, the indexer joins the two,
and the verification API's ``GET /api/v1/requests/{id}`` shows both."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.compose import build_app
from devnet.anvil import Anvil, free_port
from devnet.chain import Chain
from devnet.deploy import COR, deploy_all
from devnet.ledger import Ledger
from devnet.lifecycle import Net, deposit, open_session
from devnet.routers import Behaviour, ChainMode, RouterServer
from indexer.db import upgrade
from tests.gateway_helpers import (
    ADMIN_H,
    add_key,
    anyio_backend_fixture,  # noqa: F401
    bearer,
    serve_gateway,
)
from tests.indexing import devnet_settings, index
from tests.test_gateway_api import recorded, wait_for

pytestmark = pytest.mark.anyio
MODEL_ID = 5


async def test_request_is_followed_to_its_on_chain_task(anvil: Anvil, tmp_path: Path) -> None:
    dep = deploy_all(anvil.url)
    roles = dep.accounts
    router_addr = roles.routers[0]
    port = free_port()
    router_url = f"http://127.0.0.1:{port}"
    db = f"sqlite:///{tmp_path}/corlens.db"
    upgrade(db)
    settings = devnet_settings(anvil.url, dep.addresses, db, start_block=dep.start_block)
    with Chain(anvil.url) as chain:
        net = Net(chain, dep, Ledger(chain_id=chain.chain_id()))
        session = open_session(net, owner=roles.users[0], name="gateway-session",
                               model_identifier=MODEL_ID, redundant=2,
                               routers={router_addr: router_url})
        deposit(net, session_id=session.session_id, depositor=session.owner, amount=50 * COR)
        await asyncio.to_thread(index, settings)  # the gateway's pool comes from this index
        mode = ChainMode(net, router_addr, {session.session_id: sorted(session.ephemeral)[:2]},
                         payment=2 * COR)
        _, key = add_key(db)
        section = {
            "models": {"oss-20b": {"from_index": {"chain": "local", "chain_id": 31337,
                                                  "model_identifier": str(MODEL_ID),
                                                  "max_inflight": 2}}},
            "accounting": {"flush_interval": 0.05},
        }
        with RouterServer([session.session_id], port=port, chain=mode,
                          behaviour=Behaviour(latency=0.0, tokens=3)):
            async with serve_gateway(section, db_url=db, redis_url=None,
                                     verify_base_url="http://corlens.local") as s, \
                    httpx.AsyncClient(base_url=s.url, headers=bearer(key), timeout=60) as c:
                assert [x.session_id for x in s.gateway.pools["oss-20b"].slots] == [
                    session.session_id]
                r = await c.post("/v1/chat/completions", json={
                    "model": "oss-20b", "messages": [{"role": "user", "content": "hello"}]})
                assert r.status_code == 200, r.text
                cx = r.json()["cortensor"]
                rid = r.headers["x-request-id"]
                await wait_for(lambda: recorded(s.url, 1))
                reqs = (await c.get("/admin/requests", headers=ADMIN_H)).json()["requests"]
    ledger_task = net.ledger.tasks[(session.session_id, cx["task_id"])]
    assert ledger_task.client_reference == rid and ledger_task.status == "paid"
    assert cx["session_id"] == session.session_id and cx["chain"] == "local"
    assert cx["verification_url"] == (f"http://corlens.local/api/v1/chains/local/sessions/"
                                      f"{session.session_id}/tasks/{cx['task_id']}")
    assert [q["task_id"] for q in reqs if q["request_id"] == rid] == [cx["task_id"]]

    await asyncio.to_thread(index, settings)
    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text(
                "SELECT session_id, task_id, status FROM task WHERE client_reference = :r"),
                {"r": rid}).one()
    finally:
        engine.dispose()
    assert (row.session_id, row.task_id) == (session.session_id, cx["task_id"])

    with TestClient(build_app(settings, run_indexer=False)) as api:
        joined = api.get(f"/api/v1/requests/{rid}")
    assert joined.status_code == 200, joined.text
    body = joined.json()
    assert body["gateway"]["request_id"] == rid and body["gateway"]["task_id"] == cx["task_id"]
    assert body["task"]["task_id"] == cx["task_id"] and body["chain"] == "local"
