"""Prometheus metrics of one router, in a registry of its own.

Names follow Prometheus' rules: a ``meshcore_`` prefix, base units as suffixes,
``_total`` on counters, low-cardinality labels only (never a request, user or
node id).  The node gauge is computed from the node registry at scrape time, and the
hedging counters and gauge from the router's hedge gate, so they can never
drift from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from meshcore_router.hedging import HedgeRefusal, HedgeStats
from meshcore_sdk.protocol import NodeStatus

__all__ = ["CONTENT_TYPE", "RouterMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class _NodeGauge(Collector):
    """``meshcore_nodes{status}``, read from the registry at each scrape."""

    def __init__(self, count_by_status: Callable[[], Mapping[NodeStatus, int]]) -> None:
        self._count_by_status = count_by_status

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily("meshcore_nodes", "Registered nodes by status.", labels=["status"])
        counts = self._count_by_status()
        for status in NodeStatus:
            gauge.add_metric([status.value], counts.get(status, 0))
        yield gauge


class _HedgeCollector(Collector):
    """``meshcore_hedges_placed_total``, ``meshcore_hedges_refused_total{reason}`` and the budget's tokens."""

    def __init__(self, stats: Callable[[], HedgeStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        stats = self._stats()
        yield CounterMetricFamily("meshcore_hedges_placed", "Hedges (extra copies of a request) placed.", stats.placed)
        refused = CounterMetricFamily(
            "meshcore_hedges_refused", "Hedges refused, by reason (budget or capacity).", labels=["reason"]
        )
        refused.add_metric([HedgeRefusal.BUDGET.value], stats.refused_budget)
        refused.add_metric([HedgeRefusal.CAPACITY.value], stats.refused_capacity)
        yield refused
        yield GaugeMetricFamily(
            "meshcore_hedge_budget_tokens", "Tokens in the router's hedging budget.", value=stats.tokens
        )


class RouterMetrics:
    """The router's metrics.

    Args:
        count_by_status: how many live nodes are in each status, called at scrape time.
        hedging: the hedge gate's counts and budget, called at scrape time (None: not exported).
    """

    def __init__(
        self,
        count_by_status: Callable[[], Mapping[NodeStatus, int]],
        hedging: Callable[[], HedgeStats] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "meshcore_requests",
            "Requests answered, by endpoint and HTTP status code.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "meshcore_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by endpoint.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.tokens = Counter(
            "meshcore_tokens_streamed",
            "Tokens relayed from nodes to clients.",
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "meshcore_time_to_first_token_seconds",
            "Time from sending a request to a node to its first token.",
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_NodeGauge(count_by_status))
        if hedging is not None:
            self.registry.register(_HedgeCollector(hedging))

    def observe_request(self, endpoint: str, code: int, duration_s: float) -> None:
        """Count one answered request and how long it took."""
        self.requests.labels(endpoint=endpoint, code=str(code)).inc()
        self.request_duration.labels(endpoint=endpoint).observe(duration_s)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
