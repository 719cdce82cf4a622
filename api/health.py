"""Liveness and readiness."""

from __future__ import annotations

import hmac
from functools import partial

import redis
from flask import Blueprint, Response, current_app, request

from enrichment.alerts import DISCREPANCIES_KEY
from enrichment.errors import BACKING_SERVICE_DOWN
from enrichment.jobs import lifecycle
from enrichment.metrics import (
    BillingDiscrepancies,
    Housekeeping,
    OldestRunnable,
    QueueDepth,
    exposition,
    housekeeping,
)

from .answers import HealthSchema, respond
from .auth import services
from .problems import Problem

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return respond(HealthSchema, {"status": "ok"})


@bp.get("/readyz")
def readyz():
    svc = services()
    checks = {}
    try:
        with svc.db.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
        checks["postgres"] = "ok"
    except BACKING_SERVICE_DOWN as exc:
        checks["postgres"] = f"unreachable: {type(exc).__name__}"
    try:
        svc.redis.ping()
        checks["redis"] = "ok"
    except BACKING_SERVICE_DOWN as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    resp = respond(HealthSchema, {"status": "ready" if ready else "unavailable",
                                  "checks": checks}, 200 if ready else 503)
    if not ready:
        resp.headers["Retry-After"] = "5"
    return resp


def broker_client(svc) -> redis.Redis | None:
    """The broker's Redis (for queue depths): the services' own client when it is the same
    server, else one client kept for the app's life."""
    broker = svc.settings.broker_url
    if not broker.startswith(("redis://", "rediss://")):
        return None
    if broker == svc.settings.redis_url:
        return svc.redis
    if "broker_redis" not in current_app.extensions:
        current_app.extensions["broker_redis"] = redis.Redis.from_url(broker, socket_timeout=1)
    return current_app.extensions["broker_redis"]


@bp.get("/metrics")
def metrics():
    svc = services()
    token = svc.settings.metrics_token
    if token and not hmac.compare_digest(request.headers.get("Authorization", "").encode(),
                                         f"Bearer {token}".encode()):
        raise Problem(401, "Unauthorized", "Send 'Authorization: Bearer <METRICS_TOKEN>'.",
                      "unauthorized", {"WWW-Authenticate": 'Bearer realm="metrics"'})
    client = broker_client(svc)
    queues = svc.settings.plans.queues
    extra = [OldestRunnable(partial(lifecycle.oldest_runnable, svc.db), queues),
             BillingDiscrepancies(svc.redis, DISCREPANCIES_KEY),
             Housekeeping(partial(housekeeping, svc.db))]
    if client is not None:
        extra.append(QueueDepth(client, queues))
    body, content_type = exposition(*extra)
    return Response(body, content_type=content_type)
