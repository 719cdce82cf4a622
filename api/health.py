"""Liveness and readiness."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify

from enrichment.metrics import QueueDepth, exposition
from enrichment.services import UNAVAILABLE

from .auth import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    svc = services()
    checks = {}
    try:
        with svc.db.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
        checks["postgres"] = "ok"
    except UNAVAILABLE as exc:
        checks["postgres"] = f"unreachable: {type(exc).__name__}"
    try:
        svc.redis.ping()
        checks["redis"] = "ok"
    except UNAVAILABLE as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    resp = jsonify({"status": "ready" if ready else "unavailable", "checks": checks})
    resp.status_code = 200 if ready else 503
    if not ready:
        resp.headers["Retry-After"] = "5"
    return resp


@bp.get("/metrics")
def metrics():
    svc = services()
    broker = svc.settings.broker_url
    extra = []
    if broker.startswith(("redis://", "rediss://")):
        extra.append(QueueDepth(redis.Redis.from_url(broker, socket_timeout=1),
                                svc.settings.plans.queues))
    body, content_type = exposition(*extra)
    return Response(body, content_type=content_type)
