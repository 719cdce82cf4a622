"""Flask application factory."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from enrichment import logs
from enrichment.config import Settings
from enrichment.jobs.states import Publisher
from enrichment.metrics import HTTP_DURATION, HTTP_REQUESTS, status_class
from enrichment.services import Services, build_services

from . import billing, console, enrichment, health, openapi, privacy, problems, webhook_endpoints


def create_app(
    settings: Settings | None = None,
    services: Services | None = None,
    publisher: Publisher | None = None,
) -> Flask:
    if services is None:
        services = build_services(settings or Settings.from_env(), publisher=publisher)
    app = Flask(__name__)
    if services.settings.trusted_proxies:  # the client address, as the proxies report it
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=services.settings.trusted_proxies)
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions["enrichment"] = services
    problems.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(enrichment.bp)
    app.register_blueprint(billing.bp)
    app.register_blueprint(billing.hooks)
    app.register_blueprint(privacy.bp)
    app.register_blueprint(webhook_endpoints.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(openapi.swagger_ui)
    console.install(app)
    _log_requests(app)
    return app


# A client's own request id is kept if it is a plain token (no spaces or control characters
# that could forge log lines); otherwise the API makes one.
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _log_requests(app: Flask) -> None:
    """Every request gets an id (the client's X-Request-Id or a new one), returned in
    X-Request-Id, on every log line written while handling it, and in problem bodies. One
    access line per request with the route's name, never its path or query: identifiers
    (emails, LinkedIn URLs) travel in those, and logs carry no personal data. The same for
    `enrichment_http_requests_total` (method, route, status class) and
    `enrichment_http_request_duration_seconds` (method, route)."""
    log = logging.getLogger("api.access")

    @app.before_request
    def _start():
        g.request_started = time.perf_counter()
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex
        g.request_id_token = logs.request_id.set(g.request_id)

    @app.after_request
    def _log(response):
        elapsed = (time.perf_counter() - g.get("request_started", time.perf_counter())) * 1000
        workspace = g.get("workspace")
        log.info("%s %s %s %.1fms workspace=%s", request.method, request.endpoint or "-",
                 response.status_code, elapsed, workspace.id if workspace else "-")
        HTTP_REQUESTS.labels(request.method, request.endpoint or "-",
                             status_class(response.status_code)).inc()
        HTTP_DURATION.labels(request.method, request.endpoint or "-").observe(elapsed / 1000)
        if "request_id" in g:
            response.headers["X-Request-Id"] = g.request_id
        return response

    @app.teardown_request
    def _forget(_exc):
        if "request_id_token" in g:
            logs.request_id.reset(g.request_id_token)
