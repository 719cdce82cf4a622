"""/api/v1: submit leads (one or a batch), read a job and the period's usage, list
templates."""

from __future__ import annotations

import json
import logging
import re
import uuid

from flask import Blueprint, g, jsonify, request
from marshmallow import ValidationError

from enrichment.billing.usage import usage_summary
from enrichment.errors import EnrichmentError, Invalid, NotFound
from enrichment.jobs import intake, read, service
from enrichment.templates import TEMPLATES

from . import answers as a
from .auth import guard, services
from .problems import Problem, problem_body
from .schemas import BatchSchema, ListJobsSchema, SubmitSchema

log = logging.getLogger(__name__)
bp = Blueprint("enrichment", __name__, url_prefix="/api/v1")
submit_schema = SubmitSchema()
batch_schema = BatchSchema()
list_schema = ListJobsSchema()
CLIENT_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, no spaces (fullmatch)


guard(bp, submissions={"enrichment.submit", "enrichment.submit_batch"})


MAX_DEPTH = 32  # nesting levels a body may have (real bodies use 3)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:40]} is out of range")
    return value


def json_body() -> dict:
    """The request's JSON object, or a 415/400 problem. Strict JSON: no NaN or Infinity, no
    number that overflows a double, at most MAX_DEPTH levels, no string PostgreSQL cannot
    store."""
    if request.mimetype != "application/json":
        raise Problem(415, "Unsupported Media Type", "Send the body as application/json.",
                      "unsupported-media-type")
    raw = request.get_data(cache=False)  # honours MAX_CONTENT_LENGTH (413)
    try:
        body = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, "Bad Request", f"The body is not valid JSON: {exc}"[:300],
                      "malformed-json") from None
    if not isinstance(body, dict):
        raise Problem(400, "Bad Request", "The body must be a JSON object.", "malformed-json")
    problem = unstorable(body)
    if problem:
        raise Problem(400, "Bad Request", problem, "malformed-json")
    return body


def unstorable(value) -> str | None:
    """Why PostgreSQL could not store `value` (NUL characters and unpaired surrogates fit
    neither text nor jsonb), or why it is nested too deep; None if it is fine. Iterative: a
    deep body cannot exhaust the stack."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"The body is nested deeper than {MAX_DEPTH} levels."
        if isinstance(item, dict):
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "Strings may not contain NUL characters (\\u0000)."
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "Strings may not contain unpaired surrogates (\\ud800…)."
    return None


def load(schema, body: dict) -> dict:
    """The body as `schema` loads it, or a 422 listing the failing fields."""
    try:
        return schema.load(body)
    except ValidationError as exc:
        raise Invalid(exc.messages) from None


def client_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not CLIENT_KEY_RE.fullmatch(key):
        raise Problem(400, "Bad Request",
                      "Idempotency-Key must be 1-255 visible ASCII characters.",
                      "invalid-idempotency-key")
    return key


def answer(status: int, body: dict, replayed: bool = False, location: str | None = None):
    resp = jsonify(body)
    resp.status_code = status
    if status >= 400:
        resp.mimetype = "application/problem+json"
    if replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    if location:
        resp.headers["Location"] = location
    return resp


def with_client_key(handler):
    """Run `handler(body)` → (status, body, location, replayed) under the client's
    Idempotency-Key:
    the same key and body within 24 h get the stored answer; another body gets 422."""
    key = client_key()
    body = json_body()
    svc, workspace = services(), g.workspace
    if key is not None:
        body_hash = intake.request_hash(body)
        with svc.db.connection() as conn:
            stored = intake.stored_answer(conn, workspace.id, intake.client_key(workspace, key),
                                          body_hash)
        if stored is not None:
            return answer(stored[0], stored[1], replayed=True)
    try:
        status, out, location, replayed = handler(body)
    except EnrichmentError as exc:
        if key is None or exc.status in (429, 503):
            raise
        status, out = exc.status, problem_body(exc)  # stored without this request's id
        resp = answer(status, {**out, "request_id": g.request_id})
    else:
        resp = answer(status, out, replayed=replayed, location=location)
    if key is not None:
        with svc.db.connection() as conn:
            intake.store_answer(conn, workspace.id, intake.client_key(workspace, key), body_hash,
                               status, out)
    return resp


def admit_one(lead: dict, template_name: str, metadata: dict, max_age_days: int,
              min_confidence: float) -> intake.Admitted:
    svc, workspace = services(), g.workspace
    admitted = service.submit(svc, workspace, template_name, _present(lead), metadata,
                              max_age_days, min_confidence=min_confidence)
    tell(admitted, template_name)
    return admitted


def _present(lead: dict) -> dict:
    return {k: v for k, v in lead.items() if v is not None}


def tell(admitted: intake.Admitted, template_name: str) -> None:
    """Log a new admission and send its event (test mode sends none)."""
    if admitted.replayed:
        return
    svc, workspace, job = services(), g.workspace, admitted.job
    log.info("job %s admitted (template %s, queue %s%s%s)", job["id"], template_name,
             job["queue"], ", cached" if admitted.cached else "",
             "" if workspace.livemode else ", test mode")
    if workspace.livemode:
        svc.events.capture("enrichment_requested", str(workspace.id), {
            "job_id": str(job["id"]), "plan": workspace.plan, "template": template_name,
            "queue": job["queue"], "cached": admitted.cached})


def admitted_status(admitted: intake.Admitted) -> int:
    """202 for a new job; 200 for an answer already there (same-day replay, cached)."""
    return 200 if admitted.replayed or admitted.cached else 202


@bp.post("/enrichment")
def submit():
    def handle(body: dict):
        data = load(submit_schema, body)
        admitted = admit_one(data["lead"], data["template"], data["metadata"],
                             data["max_age_days"], data["min_confidence"])
        job = a.dump(a.JobSchema, read.job_body(admitted.job))
        return admitted_status(admitted), job, f"/api/v1/enrichment/{job['job_id']}", \
            admitted.replayed

    return with_client_key(handle)


@bp.post("/enrichment/batch")
def submit_batch():
    def handle(body: dict):
        data = load(batch_schema, body)
        svc, workspace = services(), g.workspace
        batch_id = service.open_batch(svc, workspace.id, data["template"], len(data["leads"]),
                                      workspace.livemode)
        # Each lead checked on its own (a 422 entry of its own); the valid ones admitted
        # together, in one transaction.
        results: list[dict] = [{"index": i} for i in range(len(data["leads"]))]
        valid: list[tuple[int, dict]] = []
        for entry, lead in zip(results, data["leads"], strict=True):
            try:
                one = submit_schema.load({"template": data["template"], "lead": lead,
                                          "metadata": data["metadata"],
                                          "max_age_days": data["max_age_days"],
                                          "min_confidence": data["min_confidence"]})
            except ValidationError as exc:
                entry |= {"status": 422, "problem": problem_body(Invalid(exc.messages))}
            else:
                valid.append((entry["index"], _present(one["lead"])))
        outcomes = service.submit_batch(
            svc, workspace, data["template"], [lead for _, lead in valid], data["metadata"],
            data["max_age_days"], min_confidence=data["min_confidence"],
            batch_id=batch_id) if valid else []
        for (index, _), outcome in zip(valid, outcomes, strict=True):
            entry = results[index]
            if isinstance(outcome, intake.Refused):
                entry |= {"status": outcome.status, "problem": problem_body(outcome)}
                continue
            tell(outcome, data["template"])
            entry |= {"status": admitted_status(outcome), "job": read.job_body(outcome.job)}
            if outcome.replayed:
                entry["replayed"] = True
        items = [(e["index"], e.get("job", {}).get("job_id"), "problem" in e) for e in results]
        service.close_batch(svc, workspace.id, batch_id, items)
        return 207, a.dump(a.BatchAnswerSchema, {"batch_id": batch_id, "results": results}), \
            None, False

    return with_client_key(handle)


@bp.get("/enrichment")
def list_jobs():
    args = load(list_schema, request.args.to_dict())
    with services().db.connection() as conn:
        rows, more = read.list_jobs(conn, g.workspace.id, livemode=g.workspace.livemode,
                                    **args)
    return a.respond(a.JobListSchema, {"data": [read.job_body(r) for r in rows],
                                       "has_more": more})


@bp.get("/enrichment/batches/<uuid:batch_id>")
def get_batch(batch_id: uuid.UUID):
    with services().db.connection() as conn:
        body = read.batch_progress(conn, g.workspace.id, batch_id, g.workspace.livemode)
    if body is None:
        raise NotFound(f"No batch {batch_id} in this workspace.")
    return a.respond(a.BatchProgressSchema, body)


@bp.get("/enrichment/usage")
def usage():
    svc = services()
    with svc.db.connection() as conn:
        workspace = {"id": g.workspace.id, "plan": g.workspace.plan,
                     "plan_since": g.workspace.plan_since}
        return a.respond(a.UsageSchema,
                         usage_summary(conn, svc.settings.plans, workspace, svc.clock(),
                                       g.workspace.livemode))


@bp.get("/enrichment/<uuid:job_id>")
def get_job(job_id: uuid.UUID):
    with services().db.connection() as conn:
        row = read.get_job(conn, g.workspace.id, job_id, g.workspace.livemode)
    if row is None:
        raise NotFound(f"No job {job_id} in this workspace.")
    return a.respond(a.JobSchema, read.job_body(row))


@bp.get("/templates")
def list_templates():
    return a.respond(a.TemplatesSchema, {"templates": [
        {
            "name": t.name,
            "level": t.level,
            "description": t.description,
            "fields": list(t.fields),
            "providers": list(t.providers),
            "waterfall": {name: [str(step) for step in steps] for name, steps in t.waterfall},
            "searches": t.searches,
            "requires_any": list(t.requires_any),
        }
        for t in TEMPLATES.values()
    ]})
