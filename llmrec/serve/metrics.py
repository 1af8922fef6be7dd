"""Prometheus metrics of one app (its own registry, so several apps can live in one process, e.g. tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("llmrec_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("llmrec_request_seconds", "Request latency (seconds) by endpoint", ["endpoint"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("llmrec_batch_size", "Requests per scoring batch", ["queue"],
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("llmrec_batch_seconds", "Scoring time of one batch (seconds)", ["queue"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("llmrec_queue_depth", "Requests waiting for a batch", ["queue"], registry=r)
        self.rejected = Counter("llmrec_rejected", "Requests refused because the queue was full", ["queue"],
                                registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
