"""Model pools: alias -> the router sessions that serve it.

A pool comes from the config (``sessions``) and/or from the indexer's ``session`` table
(``from_index``: active sessions on a chain whose model identifier matches, one slot per
registered router whose routerInfo is an http(s) URL). The table is read with plain SQL,
read-only; the gateway never imports the indexer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from gateway.capacity.base import SessionSlot
from gateway.config import ChatTemplate, FromIndex, GatewayConfig, ModelConfig


@dataclass(frozen=True)
class Pool:
    alias: str
    slots: tuple[SessionSlot, ...]
    tokens: dict[str, str | None] = field(default_factory=dict)  # session key -> router token
    prompt_template: str = ""
    prompt_type: int = 1
    chat_template: ChatTemplate = field(default_factory=ChatTemplate)

    def slot(self, key: str) -> SessionSlot | None:
        return next((s for s in self.slots if s.key == key), None)


INDEX_QUERY = sa.text(
    "SELECT session_id, routers FROM session "
    "WHERE chain_id = :chain_id AND model_identifier = :model AND active "
    "ORDER BY session_id"
)


def index_slots(
    engine: sa.Engine, alias: str, src: FromIndex
) -> list[tuple[SessionSlot, str | None]]:
    """Slots for ``alias`` from the indexer's sessions (empty when the table is missing)."""
    try:
        with engine.connect() as c:
            rows = c.execute(
                INDEX_QUERY, {"chain_id": src.chain_id, "model": src.model_identifier}
            ).all()
    except sa.exc.DatabaseError:
        return []
    out: list[tuple[SessionSlot, str | None]] = []
    for session_id, routers in rows:
        for router in _routers(routers):
            url = str(router.get("info", "")).strip().rstrip("/")
            if not url.startswith(("http://", "https://")):
                continue
            slot = SessionSlot(
                key=f"{src.chain}:{session_id}@{url}", model=alias, router_url=url,
                session_id=int(session_id), chain=src.chain, max_inflight=src.max_inflight,
                label=f"{src.chain}:{session_id}",
            )
            out.append((slot, src.router_token))
    return out


def _routers(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return [r for r in value or [] if isinstance(r, dict)]


def build_pools(cfg: GatewayConfig, engine: sa.Engine | None) -> dict[str, Pool]:
    """Every configured alias's pool (``from_index`` read now through ``engine``)."""
    return {alias: _pool(alias, m, engine) for alias, m in cfg.models.items()}


def _pool(alias: str, m: ModelConfig, engine: sa.Engine | None) -> Pool:
    pairs = [(s.slot(alias), s.router_token) for s in m.sessions]
    if m.from_index is not None and engine is not None:
        known = {slot.key for slot, _ in pairs}
        pairs += [p for p in index_slots(engine, alias, m.from_index) if p[0].key not in known]
    return Pool(
        alias=alias, slots=tuple(s for s, _ in pairs), tokens={s.key: t for s, t in pairs},
        prompt_template=m.prompt_template, prompt_type=m.prompt_type,
        chat_template=m.chat_template,
    )
