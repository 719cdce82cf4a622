"""/api/v1: submit a lead, read a job, list templates."""

from __future__ import annotations

import json
import uuid

from flask import Blueprint, g, jsonify, request
from marshmallow import ValidationError

from enrichment import jobs
from enrichment.leads import subject_hash, subject_identifier
from enrichment.templates import TEMPLATES

from .auth import require_workspace, services
from .problems import Problem, flatten_errors
from .schemas import SubmitSchema

bp = Blueprint("enrichment", __name__, url_prefix="/api/v1")
submit_schema = SubmitSchema()


@bp.before_request
def _authenticate():
    require_workspace()


def json_body() -> dict:
    """The request's JSON object, or a 415/400 problem."""
    if request.mimetype != "application/json":
        raise Problem(415, "Unsupported Media Type", "Send the body as application/json.",
                      "unsupported-media-type")
    raw = request.get_data(cache=False)  # honours MAX_CONTENT_LENGTH (413)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, "Bad Request", f"The body is not valid JSON: {exc}"[:300],
                      "malformed-json") from None
    if not isinstance(body, dict):
        raise Problem(400, "Bad Request", "The body must be a JSON object.", "malformed-json")
    return body


def validate(schema, body: dict) -> dict:
    try:
        return schema.load(body)
    except ValidationError as exc:
        raise Problem(422, "Unprocessable Content", "The request body has invalid fields.",
                      "validation-error", errors=flatten_errors(exc.messages)) from None


@bp.post("/enrichment")
def submit():
    workspace = g.workspace
    data = validate(submit_schema, json_body())
    svc = services()
    plan = svc.settings.plans[workspace.plan]
    lead = {k: v for k, v in data["lead"].items() if v is not None}
    identifier = subject_identifier(lead)
    with svc.db.connection() as conn:
        row = jobs.create_job(
            conn,
            workspace_id=workspace.id,
            template=data["template"],
            queue=plan.queue,
            subject_hash=subject_hash(identifier),
            lead=lead,
            metadata=data["metadata"],
        )
    # Committed: now the task may be published (the relay covers a failure here).
    jobs.publish(svc.db, svc.publisher, row["id"], row["queue"])
    svc.events.capture("enrichment_requested", str(workspace.id), {
        "job_id": str(row["id"]), "plan": plan.name, "template": row["template"],
        "queue": row["queue"],
    })
    resp = jsonify(jobs.job_body(row))
    resp.status_code = 202
    resp.headers["Location"] = f"/api/v1/enrichment/{row['id']}"
    return resp


@bp.get("/enrichment/<uuid:job_id>")
def get_job(job_id: uuid.UUID):
    with services().db.connection() as conn:
        row = jobs.get_job(conn, g.workspace.id, job_id)
    if row is None:
        raise Problem(404, "Not Found", f"No job {job_id} in this workspace.", "not-found")
    return jsonify(jobs.job_body(row))


@bp.get("/templates")
def list_templates():
    return jsonify({"templates": [
        {
            "name": t.name,
            "level": t.level,
            "description": t.description,
            "fields": list(t.fields),
            "providers": list(t.providers),
            "searches": t.searches,
            "requires_any": list(t.requires_any),
        }
        for t in TEMPLATES.values()
    ]})
