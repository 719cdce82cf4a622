"""/api/v1/webhook-endpoints: register, list, re-enable and remove the URLs that receive job
and batch events (Standard Webhooks), and read an endpoint's delivery log."""

from __future__ import annotations

import uuid

from flask import Blueprint, g

from enrichment import webhooks
from enrichment.errors import NotFound

from . import answers as a
from .auth import guard, services
from .enrichment import json_body, load
from .schemas import WebhookEndpointSchema, WebhookEndpointUpdateSchema

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
                                       svc.settings.webhooks_allow_private_urls,
                                       g.workspace.livemode)
    # The secret: shown once.
    return a.respond(a.NewEndpointSchema, webhooks.endpoint_body(row, with_secret=True), 201)


@bp.get("")
def list_all():
    with services().db.connection() as conn:
        rows = webhooks.list_endpoints(conn, g.workspace.id, g.workspace.livemode)
    return a.respond(a.EndpointsSchema, {"data": [webhooks.endpoint_body(r) for r in rows]})


@bp.patch("/<uuid:endpoint_id>")
def update(endpoint_id: uuid.UUID):
    """Re-enable an endpoint disabled after 3 days of failures (or disable one)."""
    data = load(WebhookEndpointUpdateSchema(), json_body())
    with services().db.connection() as conn:
        row = webhooks.enable_endpoint(conn, g.workspace.id, endpoint_id, data["enabled"],
                                       g.workspace.livemode)
    if row is None:
        raise _not_found(endpoint_id)
    return a.respond(a.EndpointSchema, webhooks.endpoint_body(row))


@bp.delete("/<uuid:endpoint_id>")
def delete(endpoint_id: uuid.UUID):
    with services().db.connection() as conn:
        if not webhooks.delete_endpoint(conn, g.workspace.id, endpoint_id,
                                        g.workspace.livemode):
            raise _not_found(endpoint_id)
    return "", 204


@bp.get("/<uuid:endpoint_id>/deliveries")
def deliveries(endpoint_id: uuid.UUID):
    with services().db.connection() as conn:
        log = webhooks.deliveries(conn, g.workspace.id, endpoint_id,
                                  livemode=g.workspace.livemode)
    if log is None:
        raise _not_found(endpoint_id)
    return a.respond(a.DeliveriesSchema, {"data": log})
