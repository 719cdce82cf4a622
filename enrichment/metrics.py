"""Prometheus metrics for the service's critical figures (docs/operations.md#metrics). Labels
stay low-cardinality: plan, tier, provider, outcome, template — never workspace or job ids.

With PROMETHEUS_MULTIPROC_DIR set (as `make run` and the tests do), every process — gunicorn
workers, Celery pool processes — writes its samples there and `GET /metrics` serves them all.
"""

from __future__ import annotations

import hmac
import os
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer

API_REQUESTS = Counter("enrichment_api_requests", "Rate-limited API requests by outcome",
                       ["plan", "policy", "outcome"])
QUEUE_WAIT = Histogram("enrichment_queue_wait_seconds",
                       "Runnable (holding a workspace slot) → started, per tier", ["tier"],
                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
WORKSPACE_WAIT = Histogram("enrichment_workspace_wait_seconds",
                           "Created → runnable: time waiting behind the workspace's own jobs",
                           ["tier"], buckets=(0.05, 0.5, 5, 30, 60, 300, 900, 3600, 14400))
JOB_MESSAGES = Counter("enrichment_job_messages_published",
                       "Job messages sent to the broker, by path (direct after commit, relay)",
                       ["path"])
JOB_DELIVERIES = Counter("enrichment_job_deliveries",
                         "Job messages taken by workers: claimed, or skipped (duplicate)",
                         ["outcome"])
PROVIDER_CALLS = Counter("enrichment_provider_calls", "Provider HTTP attempts by outcome",
                         ["provider", "outcome"])
COMPLETENESS = Histogram("enrichment_result_completeness", "Share of a template's fields found",
                         ["template"], buckets=(0.2, 0.4, 0.6, 0.8, 0.9, 1.0))
JOBS_FINISHED = Counter("enrichment_jobs_finished", "Jobs by final status", ["status"])
DEAD_LETTERS = Counter("enrichment_dead_letters", "Jobs dead-lettered", ["status"])
# Every API response: the route's endpoint name (never the path, which carries identifiers)
# and the status class (2xx … 5xx).
HTTP_REQUESTS = Counter("enrichment_http_requests",
                        "API responses by method, route and status class",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("enrichment_http_request_duration_seconds",
                          "API request duration, from the first byte read to the answer, by "
                          "method and route", ["method", "route"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def status_class(status: int) -> str:
    return f"{status // 100}xx"


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


class OldestRunnable:
    """Per tier, how long the oldest runnable job not yet started has been waiting (read from
    PostgreSQL when scraped): the queue-wait histogram only moves when jobs start, this
    shows a queue that nothing drains (workers down)."""

    def __init__(self, read, queues: list[str]):
        self.read, self.queues = read, queues

    def collect(self):
        family = GaugeMetricFamily("enrichment_oldest_runnable_seconds",
                                   "Age of the oldest runnable, not yet started job, per tier",
                                   labels=["tier"])
        try:
            ages = self.read()
        except Exception:
            return
        for queue in self.queues:
            family.add_metric([queue], ages.get(queue, 0.0))
        yield family


class Housekeeping:
    """Figures read from PostgreSQL when scraped: seconds since beat's alert evaluation last
    ran (beat and a maintenance worker alive), and the webhook endpoints disabled for failing
    in the last day."""

    def __init__(self, read):
        self.read = read

    def collect(self):
        try:
            figures = self.read()
        except Exception:
            return
        if figures.get("alert_evaluation_age") is not None:
            yield GaugeMetricFamily(
                "enrichment_alert_evaluation_age_seconds",
                "Seconds since the last in-service alert evaluation (beat, every minute)",
                value=figures["alert_evaluation_age"])
        yield GaugeMetricFamily(
            "enrichment_webhook_endpoints_disabled",
            "Webhook endpoints disabled after days of failures, in the last 24 hours",
            value=figures.get("endpoints_disabled", 0))


def housekeeping(pool) -> dict[str, float | None]:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT (SELECT extract(epoch FROM now() - max(evaluated_at))::float"
            "        FROM alert_states) AS alert_evaluation_age,"
            " (SELECT count(*) FROM webhook_endpoints WHERE failing_since IS NOT NULL"
            "  AND disabled_at > now() - interval '1 day') AS endpoints_disabled").fetchone()
    return {"alert_evaluation_age": row["alert_evaluation_age"],
            "endpoints_disabled": float(row["endpoints_disabled"])}


class BillingDiscrepancies:
    """The last reconciliation's discrepancy count, read from Redis (where the reconciliation
    leaves it, whichever process ran it) when scraped."""

    def __init__(self, redis_client, key: str):
        self.redis, self.key = redis_client, key

    def collect(self):
        try:
            value = self.redis.get(self.key)
        except Exception:
            return
        if value is not None:
            yield GaugeMetricFamily(
                "enrichment_billing_discrepancies", "Workspaces whose metered, reported and "
                "Stripe overage differ (last reconciliation)", value=float(value))


class _Combined:
    def __init__(self, *sources):
        self.sources = sources

    def collect(self):
        for source in self.sources:
            yield from source.collect()


def registry() -> CollectorRegistry:
    """Every process's metrics where PROMETHEUS_MULTIPROC_DIR is set, else this process's.
    The variable is prometheus_client's own (it decides, at import, where samples are
    written); this only follows it — the one place the service looks at it."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    from prometheus_client import multiprocess

    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    return combined


def exposition(*extra) -> tuple[bytes, str]:
    """The text exposition of every process's metrics plus `extra` collectors."""
    return generate_latest(_Combined(registry(), *extra)), CONTENT_TYPE_LATEST


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def protected_app(app: WSGIApp, token: str | None) -> WSGIApp:
    """`app` behind `Authorization: Bearer <token>` (401 otherwise), as `GET /metrics` on the
    API; `app` itself when no token is set."""
    if not token:
        return app
    expected = f"Bearer {token}".encode()

    def check(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if hmac.compare_digest(environ.get("HTTP_AUTHORIZATION", "").encode(), expected):
            return app(environ, start_response)
        start_response("401 Unauthorized", [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("WWW-Authenticate", 'Bearer realm="metrics"')])
        return [b"Send 'Authorization: Bearer <METRICS_TOKEN>'.\n"]

    return check


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # every scrape would be a line on stderr
        pass


def serve(port: int, host: str = "127.0.0.1", token: str | None = None,
          source: CollectorRegistry | None = None) -> WSGIServer:
    """The metrics of `source` (default: every process's, `registry()`) over HTTP on
    host:port, from a daemon thread — prometheus_client's `start_http_server` with the API's
    bearer token (METRICS_TOKEN) when `token` is set. Any path answers, as there. The server
    is returned: `shutdown()` and `server_close()` stop it."""
    family, *_ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0]

    class Server(ThreadingWSGIServer):  # IPv6 hosts ("::") too
        address_family = family

    app = protected_app(make_wsgi_app(source if source is not None else registry()), token)
    httpd = make_server(host, port, app, Server, handler_class=_QuietHandler)
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return httpd
