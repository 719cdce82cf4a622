"""Prometheus metrics for the seed's critical figures (DESIGN §10). Labels stay low-cardinality:
plan, tier, provider, outcome, template — never workspace or job ids.

With PROMETHEUS_MULTIPROC_DIR set (as `make run` and the tests do), every process — gunicorn
workers, Celery pool processes — writes its samples there and `GET /metrics` serves them all.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

API_REQUESTS = Counter("enrichment_api_requests", "Rate-limited API requests by outcome",
                       ["plan", "policy", "outcome"])
QUEUE_WAIT = Histogram("enrichment_queue_wait_seconds", "Queued → started, per tier", ["tier"],
                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
PROVIDER_CALLS = Counter("enrichment_provider_calls", "Provider HTTP attempts by outcome",
                         ["provider", "outcome"])
COMPLETENESS = Histogram("enrichment_result_completeness", "Share of a template's fields found",
                         ["template"], buckets=(0.2, 0.4, 0.6, 0.8, 0.9, 1.0))
JOBS_FINISHED = Counter("enrichment_jobs_finished", "Jobs by final status", ["status"])
DEAD_LETTERS = Counter("enrichment_dead_letters", "Jobs dead-lettered", ["status"])
BILLING_DISCREPANCIES = Gauge("enrichment_billing_discrepancies",
                              "Workspaces whose metered, reported and Stripe overage differ "
                              "(last reconciliation)", multiprocess_mode="mostrecent")


class QueueDepth:
    """Queue depth by tier, read from the broker when scraped."""

    def __init__(self, redis_client, queues: list[str]):
        self.redis, self.queues = redis_client, queues

    def collect(self):
        family = GaugeMetricFamily("enrichment_queue_depth", "Messages waiting per queue",
                                   labels=["tier"])
        try:
            with self.redis.pipeline() as pipe:
                for queue in self.queues:
                    pipe.llen(queue)
                depths = pipe.execute()
        except Exception:
            return
        for queue, depth in zip(self.queues, depths, strict=True):
            family.add_metric([queue], depth)
        yield family


class _Combined:
    def __init__(self, *sources):
        self.sources = sources

    def collect(self):
        for source in self.sources:
            yield from source.collect()


def exposition(*extra) -> tuple[bytes, str]:
    """The text exposition of every process's metrics plus `extra` collectors."""
    base = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        base = CollectorRegistry()
        multiprocess.MultiProcessCollector(base)
    return generate_latest(_Combined(base, *extra)), CONTENT_TYPE_LATEST
