"""Flask application factory."""

from __future__ import annotations

from flask import Flask

from enrichment.config import Settings
from enrichment.jobs import Publisher
from enrichment.services import Services, build_services

from . import billing, enrichment, health, problems


def create_app(
    settings: Settings | None = None,
    services: Services | None = None,
    publisher: Publisher | None = None,
) -> Flask:
    if services is None:
        services = build_services(settings or Settings.from_env(), publisher=publisher)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions["enrichment"] = services
    problems.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(enrichment.bp)
    app.register_blueprint(billing.bp)
    app.register_blueprint(billing.webhooks)
    return app
