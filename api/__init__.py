"""Flask application factory."""

from __future__ import annotations

import logging
import time

from flask import Flask, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from enrichment.config import Settings
from enrichment.jobstore import Publisher
from enrichment.services import Services, build_services

from . import billing, enrichment, health, openapi, privacy, problems, webhook_endpoints


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
    _log_requests(app)
    return app


def _log_requests(app: Flask) -> None:
    """One line per request with the route's name, never its path or query: identifiers
    (emails, LinkedIn URLs) travel in those, and logs carry no personal data."""
    log = logging.getLogger("api.access")

    @app.before_request
    def _start():
        g.request_started = time.perf_counter()

    @app.after_request
    def _log(response):
        elapsed = (time.perf_counter() - g.get("request_started", time.perf_counter())) * 1000
        workspace = g.get("workspace")
        log.info("%s %s %s %.1fms workspace=%s", request.method, request.endpoint or "-",
                 response.status_code, elapsed, workspace.id if workspace else "-")
        return response
