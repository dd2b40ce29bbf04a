"""Prometheus metrics: request counts and latencies per route, items and index sizes per collection.

Each app has its own registry (no process globals), so several apps can live in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from semstore.database import Database

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The app's registry with its request metrics and the collection gauges."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, database: Callable[[], Database]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "semstore_http_requests",
            "HTTP requests handled, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "semstore_http_request_duration_seconds",
            "HTTP request latency, by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_CollectionCollector(database))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _CollectionCollector(Collector):
    """Items per collection (from the database) and vectors / bytes of the loaded indexes."""

    def __init__(self, database: Callable[[], Database]) -> None:
        self._database = database

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # computed at scrape time only (no database access at registration)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        items = GaugeMetricFamily("semstore_collection_items", "Items stored in a collection.", labels=["collection"])
        code_bytes = GaugeMetricFamily(
            "semstore_collection_code_bytes", "Bytes of codes stored for a collection.", labels=["collection"]
        )
        vectors = GaugeMetricFamily(
            "semstore_index_vectors", "Vectors in a collection's loaded search index (0: not loaded).", labels=["collection"]
        )
        index_bytes = GaugeMetricFamily(
            "semstore_index_code_bytes", "Bytes of codes held by a collection's loaded search index.", labels=["collection"]
        )
        for collection in self._database().collections():
            stats = collection.stats()
            items.add_metric([collection.name], stats.items)
            code_bytes.add_metric([collection.name], stats.code_bytes)
            index = collection.loaded_index
            codec = collection.codec
            count = len(index) if index is not None else 0
            vectors.add_metric([collection.name], count)
            index_bytes.add_metric([collection.name], count * (codec.bytes_per_vector if codec else 0))
        yield from (items, code_bytes, vectors, index_bytes)


class MetricsMiddleware:
    """Counts and times every HTTP request under its route template (never the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or ("static" if scope["path"].startswith("/static/") else "unmatched")
            self.metrics.observe(scope["method"], template, status, time.perf_counter() - started)
