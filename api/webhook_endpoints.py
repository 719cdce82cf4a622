"""/api/v1/webhook-endpoints: register, list and remove the URLs that receive job and batch
events (Standard Webhooks), and read an endpoint's delivery log."""

from __future__ import annotations

import uuid

from flask import Blueprint, g, jsonify

from enrichment import webhooks
from enrichment.errors import NotFound

from .auth import guard, services
from .enrichment import json_body, load
from .schemas import WebhookEndpointSchema

bp = Blueprint("webhook_endpoints", __name__, url_prefix="/api/v1/webhook-endpoints")
guard(bp)


def _not_found(endpoint_id: uuid.UUID) -> NotFound:
    return NotFound(f"No webhook endpoint {endpoint_id} in this workspace.")


@bp.post("")
def create():
    data = load(WebhookEndpointSchema(), json_body())
    svc = services()
    with svc.db.connection() as conn:
        row = webhooks.create_endpoint(conn, g.workspace.id, data["url"], data["events"],
                                       svc.settings.webhooks_allow_private_urls)
    resp = jsonify(webhooks.endpoint_body(row, with_secret=True))  # the secret: shown once
    resp.status_code = 201
    return resp


@bp.get("")
def list_all():
    with services().db.connection() as conn:
        rows = webhooks.list_endpoints(conn, g.workspace.id)
    return jsonify({"data": [webhooks.endpoint_body(r) for r in rows]})


@bp.delete("/<uuid:endpoint_id>")
def delete(endpoint_id: uuid.UUID):
    with services().db.connection() as conn:
        if not webhooks.delete_endpoint(conn, g.workspace.id, endpoint_id):
            raise _not_found(endpoint_id)
    return "", 204


@bp.get("/<uuid:endpoint_id>/deliveries")
def deliveries(endpoint_id: uuid.UUID):
    with services().db.connection() as conn:
        log = webhooks.deliveries(conn, g.workspace.id, endpoint_id)
    if log is None:
        raise _not_found(endpoint_id)
    return jsonify({"data": log})
