"""Prometheus text exposition for the gateway (no client library: a handful of counters, one
histogram, and gauges read from the tracker's snapshot at scrape time)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from gateway.capacity.base import CapacitySnapshot

Labels = tuple[tuple[str, str], ...]
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BREAKER = {"closed": 0, "half-open": 1, "open": 2}
MODES = ("memory", "redis", "degraded-local", "degraded-reject")


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self.help: dict[str, str] = {}
        self._hist: dict[Labels, list[int]] = defaultdict(lambda: [0] * len(LATENCY_BUCKETS))
        self._hist_sum: dict[Labels, float] = defaultdict(float)
        self._hist_count: dict[Labels, int] = defaultdict(int)
        self.inflight = 0  # requests this replica is serving now

    def inc(self, name: str, help_: str, value: float = 1.0, **labels: str) -> None:
        self.help.setdefault(name, help_)
        self.counters[name][tuple(sorted(labels.items()))] += value

    def request(self, model: str, session: str, status: str, seconds: float) -> None:
        self.inc("corlens_gateway_requests_total", "Requests by model, session and status.",
                 model=model, session=session, status=status)
        key = (("model", model),)
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self._hist[key][i] += 1
        self._hist_sum[key] += seconds
        self._hist_count[key] += 1

    def render(self, snap: CapacitySnapshot | None, extra: Iterable[tuple[str, str, float]] = ()
               ) -> str:
        out: list[str] = []
        for name in sorted(self.counters):
            out += [f"# HELP {name} {self.help[name]}", f"# TYPE {name} counter"]
            for labels, v in sorted(self.counters[name].items()):
                out.append(f"{name}{_fmt(labels)} {v:g}")
        h = "corlens_gateway_request_duration_seconds"
        out += [f"# HELP {h} Request latency by model.", f"# TYPE {h} histogram"]
        for labels, counts in sorted(self._hist.items()):
            for bound, n in zip(LATENCY_BUCKETS, counts, strict=True):
                out.append(f"{h}_bucket{_fmt((*labels, ('le', f'{bound:g}')))} {n}")
            out.append(f"{h}_bucket{_fmt((*labels, ('le', '+Inf')))} {self._hist_count[labels]}")
            out.append(f"{h}_sum{_fmt(labels)} {self._hist_sum[labels]:.6f}")
            out.append(f"{h}_count{_fmt(labels)} {self._hist_count[labels]}")
        out += self._gauge("corlens_gateway_replica_inflight", "Requests this replica serves now.",
                           [((), float(self.inflight))])
        for name, help_, value in extra:
            out += self._gauge(name, help_, [((), value)])
        if snap is not None:
            out += _snapshot(snap)
        return "\n".join(out) + "\n"

    @staticmethod
    def _gauge(name: str, help_: str, samples: list[tuple[Labels, float]]) -> list[str]:
        lines = [f"# HELP {name} {help_}", f"# TYPE {name} gauge"]
        return lines + [f"{name}{_fmt(labels)} {v:g}" for labels, v in samples]


def _snapshot(snap: CapacitySnapshot) -> list[str]:
    g = Metrics._gauge
    out: list[str] = []
    out += g("corlens_gateway_session_inflight", "In-flight requests per session (all replicas).",
             [((("model", s.model), ("session", s.label)), float(s.inflight))
              for s in snap.sessions])
    out += g("corlens_gateway_session_limit", "In-flight limit per session.",
             [((("model", s.model), ("session", s.label)), float(s.limit)) for s in snap.sessions])
    out += g("corlens_gateway_session_cooldown", "1 while a session is in cooldown.",
             [((("model", s.model), ("session", s.label)), float(s.cooldown_until is not None))
              for s in snap.sessions])
    out += g("corlens_gateway_session_drained", "1 while a session is drained.",
             [((("model", s.model), ("session", s.label)), float(s.drained))
              for s in snap.sessions])
    out += g("corlens_gateway_queue_depth", "Requests waiting per model.",
             [((("model", m),), float(n)) for m, n in sorted(snap.queue_depth.items())])
    out += g("corlens_gateway_capacity_mode", "1 for the tracker's current mode.",
             [((("mode", m),), float(snap.mode == m)) for m in MODES])
    if snap.breaker is not None:
        out += g("corlens_gateway_redis_breaker_state", "Redis circuit breaker: 0 closed, "
                 "1 half-open, 2 open.", [((), float(BREAKER.get(snap.breaker, 2)))])
        out += g("corlens_gateway_redis_reachable", "1 when the last Redis call succeeded.",
                 [((), float(bool(snap.redis_reachable)))])
    for name, v in sorted(snap.counters.items()):
        metric = f"corlens_gateway_capacity_{name}_total"
        out += [f"# HELP {metric} Tracker counter: {name}.", f"# TYPE {metric} counter",
                f"{metric} {v}"]
    return out
