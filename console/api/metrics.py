"""Prometheus metrics of one console app (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from keytrail.schemas.keys import KeyStatus


class KeysByStatus(Collector):
    """`keytrail_keys{status=…}`, counted from the key store at scrape time."""

    def __init__(self, count: Callable[[], dict[str, int]]) -> None:
        self._count = count

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("keytrail_keys", "API keys in the key store, by status", labels=["status"])
        counts = self._count()
        for status in KeyStatus:
            family.add_metric([status.value], counts.get(status.value, 0))
        yield family


class ConsoleMetrics:
    def __init__(self, count_keys: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.events_ingested = Counter(
            "keytrail_events_ingested", "usage events accepted by the pipeline", registry=self.registry
        )
        self.events_duplicate = Counter(
            "keytrail_events_duplicate",
            "usage events dropped as duplicates of earlier deliveries",
            registry=self.registry,
        )
        self.events_redacted = Counter(
            "keytrail_events_redacted",
            "Events stored with a secret redacted from a string field (each also raised secret_exposed)",
            registry=self.registry,
        )
        self.events_rejected = Counter(
            "keytrail_events_rejected",
            "usage events refused by the ingest endpoint",
            ["code"],
            registry=self.registry,
        )
        self.requests = Counter(
            "keytrail_api_requests",
            "console API requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.registry.register(KeysByStatus(count_keys))
