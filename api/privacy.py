"""/api/v1/privacy: export, erasure (+ suppression), consent and objection; and the
workspace's own settings (region, person-level enrichment)."""

from __future__ import annotations

from flask import Blueprint, g, make_response, request
from marshmallow import RAISE, Schema, fields, validate

from enrichment import privacy
from enrichment.errors import Invalid
from enrichment.jobs import service
from enrichment.workspaces import person_level_allowed

from . import answers as a
from .auth import guard, live_only, services
from .enrichment import json_body, load

bp = Blueprint("privacy", __name__, url_prefix="/api/v1")
guard(bp)
IDENTIFIER = validate.Length(min=1, max=500)


class ConsentSchema(Schema):
    class Meta:
        unknown = RAISE

    identifier = fields.String(required=True, validate=IDENTIFIER)
    purpose = fields.String(required=True, validate=validate.Length(min=1, max=100))
    basis = fields.String(required=True,
                          validate=validate.OneOf(["consent", "legitimate_interest"]))
    granted = fields.Boolean(required=True)
    source = fields.String(required=True, validate=validate.Length(min=1, max=200))


def identifier_arg(value: str | None) -> str:
    if value is None or not value.strip() or len(value) > 500:
        raise Invalid({"identifier": ["Missing or too long: give the subject's email, "
                                      "LinkedIn URL or domain, at most 500 characters."]})
    return value


@bp.get("/privacy/export")
def export_subject():
    identifier = identifier_arg(request.args.get("identifier"))
    with services().db.connection() as conn:
        return a.respond(a.ExportSchema, privacy.export(conn, g.workspace.id, identifier,
                                                        g.workspace.livemode))


class ErasureSchema(Schema):
    class Meta:
        unknown = RAISE

    identifier = fields.String(required=True, validate=IDENTIFIER)


def _erase(identifier: str):
    service.erase(services(), g.workspace, identifier_arg(identifier))
    return "", 204


@bp.post("/privacy/erasures")
def erase():
    """The identifier travels in the body, so e-mail addresses stay out of URLs, proxy and
    access logs."""
    return _erase(load(ErasureSchema(), json_body())["identifier"])


@bp.delete("/privacy/subjects/<path:identifier>")
def erase_subject(identifier: str):
    """Deprecated: puts the identifier in the URL. Use POST /api/v1/privacy/erasures."""
    response = make_response(_erase(identifier))
    response.headers["Deprecation"] = "true"
    response.headers["Link"] = '</api/v1/privacy/erasures>; rel="successor-version"'
    return response


@bp.post("/privacy/consents")
def record_consent():
    live_only()
    data = load(ConsentSchema(), json_body())
    with services().db.connection() as conn:
        body = privacy.record_consent(conn, g.workspace.id, privacy.Consent(**data))
    return a.respond(a.ConsentRecordSchema, body, 201)


@bp.get("/workspace")
def workspace_settings():
    ws = g.workspace
    return a.respond(a.WorkspaceSchema, {
        "workspace_id": ws.id, "name": ws.name, "plan": ws.plan, "region": ws.region,
        "person_level_enabled": ws.person_level_enabled,
        "person_level_allowed": person_level_allowed(ws.region, ws.person_level_enabled),
        "livemode": ws.livemode})
