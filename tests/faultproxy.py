"""A loopback HTTP fault proxy for JSON-RPC tests: a real server between a client and a node.

    from tests.faultproxy import FaultProxy, Faults

    with FaultProxy(anvil.url, Faults(http_429_every=3, max_log_blocks=50)) as proxy:
        rpc = RpcClient([proxy.url])           # talk to proxy.url instead of anvil.url
        ...
        assert proxy.counts["http_429"] > 0    # what the proxy did
        assert proxy.methods["eth_getLogs"] > 0

Every fault is deterministic, driven by counters, and faults combine freely.

``*_every=N`` faults fire on the N-th, 2N-th, 3N-th ... HTTP request (a batch is one request),
counted from 1 since the proxy started or since :meth:`FaultProxy.reset`. With ``only_methods``
set, only requests holding one of those methods are counted and faulted; others pass untouched.
When several fire on one request, the first in this list wins:

==================  ===============================================================  ===========
Faults field        what the proxy does                                              counts key
==================  ===============================================================  ===========
``drop_every``      closes the connection without answering                          ``dropped``
``timeout_every``   holds the request ``delay`` s (longer than the client timeout),  ``timeout``
                    then closes without answering; it is never forwarded
``http_429_every``  HTTP 429 with ``Retry-After: 0``                                 ``http_429``
``http_502_every``  HTTP 502 Bad Gateway                                             ``http_502``
``http_503_every``  HTTP 503 Service Unavailable                                     ``http_503``
``truncate_every``  forwards, then sends the first half of the JSON body             ``truncated``
``cut_every``       forwards, then sends headers for the whole body, half of it,   ``cut``
                    and closes the connection (a read that fails halfway)
``error_every``     forwards nothing; answers the JSON-RPC error ``error`` (code,    ``error``
                    message) - for a batch, one error object instead of a list,
                    as providers that reject batches do
==================  ===============================================================  ===========

Range refusal, checked on every forwarded ``eth_getLogs`` (single or inside a batch): when its
block span exceeds ``max_log_blocks`` or its answer holds more than ``max_logs`` logs, that item is
answered with the JSON-RPC error ``range_error`` (Arbitrum Nitro's text by default); counts key
``range_refused``. Block tags are resolved against the node's head.

Other counts keys: ``requests`` (HTTP requests received) and ``forwarded`` (sent to the node).
``proxy.faults`` may be replaced while the proxy runs.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

NITRO_RANGE_ERROR = (-32000, "logs matched by query exceeds limit of 10000")
# Generous: anvil answers in milliseconds; only a hung node would take this long.
UPSTREAM_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Faults:
    """What to break; all off by default (a transparent proxy). See the module docstring."""

    drop_every: int = 0
    timeout_every: int = 0
    delay: float = 2.0
    http_429_every: int = 0
    http_502_every: int = 0
    http_503_every: int = 0
    truncate_every: int = 0
    cut_every: int = 0
    error_every: int = 0
    error: tuple[int, str] = (-32000, "injected error")
    only_methods: frozenset[str] = frozenset()
    max_log_blocks: int | None = None
    max_logs: int | None = None
    range_error: tuple[int, str] = NITRO_RANGE_ERROR

    def pick(self, n: int) -> str | None:
        """The fault (counts key) for the ``n``-th counted request, or ``None``."""
        for key, every in (
            ("dropped", self.drop_every), ("timeout", self.timeout_every),
            ("http_429", self.http_429_every), ("http_502", self.http_502_every),
            ("http_503", self.http_503_every), ("truncated", self.truncate_every),
            ("cut", self.cut_every), ("error", self.error_every),
        ):
            if every > 0 and n % every == 0:
                return key
        return None


class FaultProxy:
    """The proxy server, run in a background thread; use as a context manager.

    ``url`` is where clients connect; ``counts`` and ``methods`` are :class:`Counter` objects
    (read them after the requests of interest have finished).
    """

    def __init__(self, upstream: str, faults: Faults | None = None) -> None:
        self.upstream = urlsplit(upstream)
        self.faults = faults or Faults()
        self.counts: Counter[str] = Counter()
        self.methods: Counter[str] = Counter()
        self._counted = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def reset(self) -> None:
        """Zero the counters and restart the ``*_every`` numbering."""
        with self._lock:
            self.counts.clear()
            self.methods.clear()
            self._counted = 0

    def close(self) -> None:
        """Stop serving, cut open connections (also held ones) and join every thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()

    # -- called from handler threads ---------------------------------------------------------

    def _decide(self, calls: list[dict[str, Any]]) -> tuple[str | None, Faults]:
        names = [str(c.get("method")) for c in calls]
        with self._lock:
            faults = self.faults
            self.counts["requests"] += 1
            self.methods.update(names)
            if faults.only_methods and not faults.only_methods.intersection(names):
                return None, faults
            self._counted += 1
            fault = faults.pick(self._counted)
            if fault is not None:
                self.counts[fault] += 1
            return fault, faults

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def _forward(self, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(
            self.upstream.hostname or "127.0.0.1", self.upstream.port, timeout=UPSTREAM_TIMEOUT_S
        )
        try:
            conn.request("POST", self.upstream.path or "/", body,
                         {"content-type": "application/json"})
            resp = conn.getresponse()
            self._count("forwarded")
            return resp.status, resp.read()
        except OSError as e:
            return 502, f"upstream failed: {e}".encode()
        finally:
            conn.close()

    def _head(self) -> int:
        status, body = self._forward(b'{"jsonrpc":"2.0","id":0,"method":"eth_blockNumber"}')
        return int(json.loads(body)["result"], 16) if status == 200 else 0

    def _refuse_ranges(self, calls: list[dict[str, Any]], answer: Any, faults: Faults) -> Any:
        """``answer`` with range errors put in place of eth_getLogs results that break limits."""
        items = answer if isinstance(answer, list) else [answer]
        by_id = {i.get("id"): i for i in items if isinstance(i, dict)}
        head: int | None = None
        for call in calls:
            item = by_id.get(call.get("id"))
            if call.get("method") != "eth_getLogs" or not item or "result" not in item:
                continue
            flt = (call.get("params") or [{}])[0]
            too_many = faults.max_logs is not None and len(item["result"]) > faults.max_logs
            too_wide = False
            if faults.max_log_blocks is not None and "blockHash" not in flt:
                ends = [flt.get("fromBlock", "latest"), flt.get("toBlock", "latest")]
                if any(not str(e).startswith("0x") for e in ends) and head is None:
                    head = self._head()
                lo, hi = (_block(e, head or 0) for e in ends)
                too_wide = hi - lo + 1 > faults.max_log_blocks
            if too_many or too_wide:
                code, message = faults.range_error
                item.pop("result")
                item["error"] = {"code": code, "message": message}
                self._count("range_refused")
        return answer


def _block(tag: Any, head: int) -> int:
    text = str(tag)
    if text.startswith("0x"):
        return int(text, 16)
    return 0 if text == "earliest" else head


def _calls(body: bytes) -> list[dict[str, Any]]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return []
    items = parsed if isinstance(parsed, list) else [parsed]
    return [c for c in items if isinstance(c, dict)]


class _Server(ThreadingHTTPServer):
    proxy: FaultProxy
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up on a held or dropped request are expected: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.proxy._lock:
            self.server.proxy._conns.add(self.connection)

    def finish(self) -> None:
        with self.server.proxy._lock:
            self.server.proxy._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``counts`` instead."""

    def do_POST(self) -> None:
        proxy = self.server.proxy
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        calls = _calls(body)
        fault, faults = proxy._decide(calls)
        if fault in ("dropped", "timeout"):
            if fault == "timeout":
                proxy._stop.wait(faults.delay)
            self._hang_up()
            return
        if fault in ("http_429", "http_502", "http_503"):
            status = int(fault[-3:])
            self._send(status, f"injected HTTP {status}".encode(), "text/plain")
            return
        if fault == "error":
            code, message = faults.error
            first_id = calls[0].get("id") if len(calls) == 1 else None
            error = {"jsonrpc": "2.0", "id": first_id, "error": {"code": code, "message": message}}
            self._send(200, json.dumps(error).encode())
            return
        status, answer = proxy._forward(body)
        if status == 200 and (faults.max_log_blocks is not None or faults.max_logs is not None):
            answer = json.dumps(proxy._refuse_ranges(calls, json.loads(answer), faults)).encode()
        if fault == "truncated":
            answer = answer[: len(answer) // 2]
        if fault == "cut":
            self._send(status, answer, sent=len(answer) // 2)
            self._hang_up()
            return
        self._send(status, answer)

    def _hang_up(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:  # the client gave up first
            pass

    def _send(
        self, status: int, body: bytes, ctype: str = "application/json", sent: int | None = None
    ) -> None:
        """Headers for all of ``body``; the body itself, or only its first ``sent`` bytes."""
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        if status == 429:
            self.send_header("retry-after", "0")
        self.end_headers()
        self.wfile.write(body if sent is None else body[:sent])
        self.wfile.flush()
