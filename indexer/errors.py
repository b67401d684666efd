"""The indexer's error hierarchy: one place, with retryability in the type.

Transport failures are translated into these exceptions once, in :mod:`indexer.rpc`; everything
downstream catches these names only. Any URL that appears in a message goes through
:func:`redact_url` first, because RPC URLs carry API keys.

    IndexerError
    ├── RetryableError          trying again later may succeed
    │   └── RpcUnavailable      every RPC URL failed after its retries
    ├── RpcError                the node answered with a final JSON-RPC error
    ├── RangeTooLarge           the provider refused an eth_getLogs range: ask for fewer blocks
    │   └── LogsTimeout         eth_getLogs timed out twice: treated as too large
    ├── DecodeError             a log or return value does not match its ABI
    ├── ReorgTooDeep            the chain forked deeper than the indexer may rewind
    ├── WriterLockHeld          another indexer writes the chain (a one-shot run does not wait)
    └── ConfigError             a setting is missing or invalid
        └── SchemaOutdated      the database is behind the code: run `corlens db upgrade`
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` safe to log: scheme and host kept, credentials, path and query hidden.

    >>> redact_url("https://arb-mainnet.g.alchemy.com/v2/SECRET")
    'https://arb-mainnet.g.alchemy.com/***'
    >>> redact_url("http://127.0.0.1:8545")
    'http://127.0.0.1:8545'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if not parts.scheme or not parts.netloc:
        return REDACTED
    _userinfo, at, host = parts.netloc.rpartition("@")
    head = f"{parts.scheme}://{REDACTED + '@' if at else ''}{host}"
    if parts.path in ("", "/") and not parts.query and not parts.fragment:
        return head + parts.path
    return f"{head}/{REDACTED}"


class IndexerError(Exception):
    """Base of every error the indexer raises on purpose."""


class RetryableError(IndexerError):
    """A failure that may go away if the same operation is tried again later."""


class RpcError(IndexerError):
    """The node answered ``method`` with a JSON-RPC error that retrying will not fix.

    ``url`` is stored redacted.
    """

    def __init__(self, code: int | None, message: str, method: str, url: str) -> None:
        self.code = code
        self.message = message
        self.method = method
        self.url = redact_url(url)
        super().__init__(f"{method} failed at {self.url}: {message} (code {code})")


class RpcUnavailable(RetryableError):
    """Every RPC URL failed after its retries; ``urls`` are stored redacted."""

    def __init__(self, urls: Sequence[str], last_error: str) -> None:
        self.urls = [redact_url(u) for u in urls]
        self.last_error = last_error
        super().__init__(
            f"no RPC URL answered after retries: {', '.join(self.urls)}; last error: {last_error}. "
            "Check that the node is running and reachable, that the URL and its API key are "
            "right, and the provider's rate limits."
        )


class RangeTooLarge(IndexerError):
    """The provider refused an ``eth_getLogs`` range; ask again for fewer blocks.

    ``suggested_to`` is the last block of a range the provider said would work, when it said one.
    """

    def __init__(self, suggested_to: int | None = None, message: str = "") -> None:
        self.suggested_to = suggested_to
        self.message = message
        hint = f" (provider suggests ending at block {suggested_to})" if suggested_to else ""
        detail = f": {message}" if message else ""
        super().__init__(f"eth_getLogs range too large{hint}{detail}")


class LogsTimeout(RangeTooLarge):
    """``eth_getLogs`` timed out on its retry too: for range planning it counts as too large."""


class DecodeError(IndexerError):
    """Data from the chain does not match the ABI it is decoded with."""


class ReorgTooDeep(IndexerError):
    """The chain forked ``fork_depth`` blocks back, deeper than the allowed ``max_depth``."""

    def __init__(self, fork_depth: int, max_depth: int) -> None:
        self.fork_depth = fork_depth
        self.max_depth = max_depth
        super().__init__(
            f"reorg of {fork_depth} blocks is deeper than the allowed {max_depth}; "
            "re-index from an earlier block or raise the limit"
        )


class WriterLockHeld(IndexerError):
    """Another indexer holds ``chain``'s writer lock; ``holder`` says who, as well as it can."""

    def __init__(self, chain: str, holder: str) -> None:
        self.chain = chain
        self.holder = holder
        super().__init__(
            f"{chain}: the writer lock is held by {holder}: another indexer is writing this "
            "chain. Run again once it is done, or run `corlens index` without --once to wait "
            "as its standby"
        )


class ConfigError(IndexerError):
    """A setting is missing or invalid; ``str()`` is ``"<key>: <problem>"``."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


class SchemaOutdated(ConfigError):
    """The database (PostgreSQL) is at an older migration than the code: the setting is right,
    the database needs ``corlens db upgrade`` (the CLI's exit status 1, not a config error's 2)."""
