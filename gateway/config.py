"""The ``gateway:`` section of the corlens config, validated.

Every key has a ``CORLENS_GATEWAY__*`` environment variable (the loader maps
``CORLENS_GATEWAY__QUEUE__MAX_DEPTH=50`` onto ``gateway.queue.max_depth``); secrets such as
``router_token`` arrive already expanded from ``${ENV}`` references. Durations are seconds.

    gateway:
      models:
        oss-20b:
          sessions:
            - {router_url: "http://10.0.0.5:5010", session_id: 3, chain: testnet0,
               max_inflight: 4, label: r1-s3, router_token: "${ROUTER_TOKEN}"}
          prompt_template: ""           # forwarded to the router as prompt_template
        qwen3.5-9b:
          from_index: {chain: testnet0, chain_id: 421614, model_identifier: "9"}
      wait_timeout: 5
      lease_ttl: 15
      on_redis_failure: local           # local | reject
      queue: {max_depth: 100, timeout: 10}
      cooldown: {failures: 3, seconds: 10}   # consecutive failures -> session skipped
      redis_timeout: 0.5                      # every Redis call is bounded by this
      breaker: {failures: 3, cooloff: 2}      # Redis circuit breaker
      upstream: {connect_timeout: 2, timeout: 60, max_connections: 200}
      accounting: {flush_interval: 0.5, batch_size: 500}
      key_cache_ttl: 2                        # a replica trusts a key lookup this long
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.capacity.base import SessionSlot
from gateway.errors import GatewayConfigError
from gateway.limits import BIGINT_MAX


def no_nul(v: str) -> str:
    """Refuse NUL: every request record carries these strings, and no text column holds one."""
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


Text = Annotated[str, AfterValidator(no_nul)]
MAX_ALIAS = 200  # characters of a model alias (and of a client's model name, recorded as is)


class _Strict(BaseModel):
    # No inf or nan: every float here is a time or a size, and inf would reach Redis and asyncio.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SessionConfig(_Strict):
    """One router session of a pool."""

    router_url: Text
    session_id: int = Field(ge=0, le=BIGINT_MAX)  # recorded with every request it serves
    chain: Text = "local"  # chain name, as in the verification API's URLs
    max_inflight: int = Field(default=4, ge=1)
    label: Text | None = None
    router_token: str | None = None

    @field_validator("router_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    def key(self) -> str:
        return f"{self.chain}:{self.session_id}@{self.router_url}"

    def slot(self, model: str) -> SessionSlot:
        return SessionSlot(
            key=self.key(), model=model, router_url=self.router_url, session_id=self.session_id,
            chain=self.chain, max_inflight=self.max_inflight,
            label=self.label or f"{self.chain}:{self.session_id}",
        )


class FromIndex(_Strict):
    """Build the pool from the indexer's ``session`` table: active sessions whose model
    identifier matches, each router endpoint taken from its registered routerInfo."""

    chain: Text
    chain_id: int = Field(ge=0, le=BIGINT_MAX)  # compared with the session table's BIGINT
    model_identifier: Text
    max_inflight: int = Field(default=4, ge=1)
    router_token: str | None = None


class ChatTemplate(_Strict):
    """How chat messages become one prompt: ``message`` per message, then ``suffix``."""

    message: str = "<|im_start|>{role}\n{content}<|im_end|>\n"
    suffix: str = "<|im_start|>assistant\n"

    @field_validator("message")
    @classmethod
    def _fields(cls, v: str) -> str:
        try:
            v.format(role="user", content="x")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"may only use {{role}} and {{content}} ({e})") from None
        return v


class ModelConfig(_Strict):
    sessions: list[SessionConfig] = Field(default_factory=list)
    from_index: FromIndex | None = None
    prompt_template: str = ""
    prompt_type: int = Field(default=1, ge=0)
    chat_template: ChatTemplate = Field(default_factory=ChatTemplate)

    @model_validator(mode="after")
    def _some_sessions(self) -> ModelConfig:
        if not self.sessions and self.from_index is None:
            raise ValueError("needs sessions or from_index")
        keys = [s.key() for s in self.sessions]
        for k in keys:
            if keys.count(k) > 1:
                raise ValueError(f"session {k} is listed twice")
        return self


class QueueConfig(_Strict):
    max_depth: int = Field(default=100, ge=0)  # waiting requests per model (all replicas)
    timeout: float = Field(default=10.0, ge=0)


class CooldownConfig(_Strict):
    failures: int = Field(default=3, ge=1)  # consecutive failures that start a cooldown
    seconds: float = Field(default=10.0, ge=0)


class BreakerConfig(_Strict):
    failures: int = Field(default=3, ge=1)  # consecutive Redis failures that open the breaker
    cooloff: float = Field(default=2.0, gt=0)  # seconds open before one probe (half-open)


class UpstreamConfig(_Strict):
    connect_timeout: float = Field(default=2.0, gt=0)
    timeout: float = Field(default=60.0, gt=0)  # whole answer; streams: first byte and gaps
    max_connections: int = Field(default=200, ge=1)  # per session (capped at max_inflight + 2)


class AccountingConfig(_Strict):
    flush_interval: float = Field(default=0.5, gt=0)
    batch_size: int = Field(default=500, ge=1)


class GatewayConfig(_Strict):
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    wait_timeout: float = Field(default=5.0, ge=0)
    lease_ttl: float = Field(default=15.0, gt=0)
    on_redis_failure: Literal["local", "reject"] = "local"
    redis_timeout: float = Field(default=0.5, gt=0)  # bound on every Redis call
    redis_prefix: str = "corlens:gw:"  # replicas sharing this prefix share capacity
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    cooldown: CooldownConfig = Field(default_factory=CooldownConfig)
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    accounting: AccountingConfig = Field(default_factory=AccountingConfig)
    key_cache_ttl: float = Field(default=2.0, ge=0)  # how long a replica trusts a key lookup
    pool_refresh: float = Field(default=30.0, gt=0)  # from_index pools re-read this often

    @field_validator("models")
    @classmethod
    def _aliases(cls, v: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
        for alias in v:
            if not alias or len(alias) > MAX_ALIAS or any(
                c.isspace() or c in "/\x00" for c in alias
            ):
                raise ValueError(f"model alias {alias[:40]!r} must be non-empty, at most "
                                 f"{MAX_ALIAS} characters, no spaces, '/' or NUL")
        return v

    @property
    def renew_interval(self) -> float:
        """Leases are renewed three times per TTL, so one late renewal never loses a lease."""
        return self.lease_ttl / 3


def load_gateway_config(raw: dict[str, Any] | None) -> GatewayConfig:
    """Validate the ``gateway`` dict; raise :class:`GatewayConfigError` naming the key."""
    try:
        return GatewayConfig.model_validate(raw or {})
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "gateway"
        raise GatewayConfigError(key, err["msg"]) from None
