"""The OpenAPI 3 document, generated from the app's routes and the marshmallow schemas
(apispec), and a self-contained HTML rendering of it at /docs (no assets from the internet).

Every rule in the URL map must have an entry in OPERATIONS: building the document fails
otherwise, so a new route cannot go undocumented.
"""

from __future__ import annotations

import html
import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app, jsonify

from . import docs_schemas as d
from .billing import CreditPackSchema
from .privacy import ConsentSchema, ErasureSchema
from .schemas import BatchSchema, SubmitSchema, WebhookEndpointSchema

bp = Blueprint("openapi", __name__)

AUTH = (401, 429, 503)  # any authenticated, rate-limited call
BODY = (400, 413, 415, 422)  # any call with a JSON body
ERRORS = {
    400: "Bad request (malformed JSON or header)",
    401: "Missing, unknown or revoked API key",
    402: "Hard cap reached",
    403: "Refused: regional rule, suppressed subject, or billing not configured",
    404: "Not found (or another workspace's)",
    405: "Method not allowed",
    413: "Body over 1 MiB",
    415: "Not application/json",
    422: "Invalid fields",
    429: "Rate limited (see Retry-After)",
    501: "Webhook secret not configured (Stripe retries)",
    502: "Payment provider error",
    503: "A backing service is unreachable (Retry-After)",
}

OPERATIONS: dict[str, dict] = {
    "enrichment.submit": {
        "summary": "Submit one lead", "body": SubmitSchema, "client_key": True,
        "ok": {202: ("Accepted: a new job", d.JobSchema),
               200: ("The same-day job this repeats (Idempotent-Replayed: true)", d.JobSchema)},
        "errors": AUTH + BODY + (402, 403)},
    "enrichment.submit_batch": {
        "summary": "Submit up to 100 leads", "body": BatchSchema, "client_key": True,
        "ok": {207: ("One entry per lead", d.BatchAnswerSchema)}, "errors": AUTH + BODY},
    "enrichment.get_job": {
        "summary": "A job's status and result",
        "ok": {200: ("The job", d.JobSchema)}, "errors": (*AUTH, 404)},
    "enrichment.list_jobs": {
        "summary": "The workspace's jobs, newest first (cursor pages)",
        "query": [("limit", "1-100 (default 20)", False,
                   {"type": "integer", "minimum": 1, "maximum": 100}),
                  ("starting_after", "The last job id of the previous page", False,
                   {"type": "string", "format": "uuid"}),
                  ("status", "Only jobs in this status", False,
                   {"type": "string", "enum": ["queued", "processing", "succeeded", "failed",
                                               "dead"]}),
                  ("template", "Only jobs of this template", False, {"type": "string"}),
                  ("batch_id", "Only jobs of this batch", False,
                   {"type": "string", "format": "uuid"}),
                  ("created_after", "ISO 8601, inclusive", False,
                   {"type": "string", "format": "date-time"}),
                  ("created_before", "ISO 8601, exclusive", False,
                   {"type": "string", "format": "date-time"})],
        "ok": {200: ("A page of jobs", d.JobListSchema)}, "errors": (*AUTH, 422)},
    "enrichment.get_batch": {
        "summary": "A batch's progress",
        "ok": {200: ("The batch", d.BatchProgressSchema)}, "errors": (*AUTH, 404)},
    "webhook_endpoints.create": {
        "summary": "Register a URL for job and batch events (its secret is shown only here)",
        "body": WebhookEndpointSchema,
        "ok": {201: ("The endpoint, with its secret", d.NewEndpointSchema)},
        "errors": AUTH + BODY},
    "webhook_endpoints.list_all": {
        "summary": "The workspace's webhook endpoints (no secrets)",
        "ok": {200: ("Endpoints", d.EndpointsSchema)}, "errors": AUTH},
    "webhook_endpoints.delete": {
        "summary": "Remove a webhook endpoint",
        "ok": {204: ("Removed", None)}, "errors": (*AUTH, 404)},
    "webhook_endpoints.deliveries": {
        "summary": "An endpoint's delivery log, newest first",
        "ok": {200: ("Deliveries", d.DeliveriesSchema)}, "errors": (*AUTH, 404)},
    "enrichment.usage": {"summary": "This billing period's usage",
                         "ok": {200: ("Usage", d.UsageSchema)}, "errors": AUTH},
    "enrichment.list_templates": {"summary": "Templates and their fields",
                                  "ok": {200: ("Templates", d.TemplatesSchema)},
                                  "errors": AUTH},
    "billing.buy_credit_pack": {
        "summary": "Start buying a credit pack (Stripe Checkout)", "body": CreditPackSchema,
        "ok": {201: ("Checkout session", d.CheckoutSchema)},
        "errors": AUTH + BODY + (403, 502, 503)},
    "billing.list_invoices": {"summary": "The workspace's invoices",
                              "ok": {200: ("Invoices", d.InvoicesSchema)},
                              "errors": (*AUTH, 502, 503)},
    "billing.upcoming_invoice": {"summary": "The next invoice, previewed",
                                 "ok": {200: ("Preview", d.InvoiceSchema)},
                                 "errors": (*AUTH, 403, 404, 502, 503)},
    "stripe_webhook.stripe_webhook": {
        "summary": "Stripe events (signature verified on the raw body)", "auth": False,
        "body": "object", "ok": {200: ("Received", d.WebhookAnswerSchema)},
        "errors": (400, 413, 501, 503)},
    "privacy.export_subject": {
        "summary": "Everything held about one subject",
        "query": [("identifier", "Email, LinkedIn URL or domain")],
        "ok": {200: ("The subject's data", d.ExportSchema)}, "errors": (*AUTH, 422)},
    "privacy.erase": {
        "summary": "Erase a subject and suppress future enrichment", "body": ErasureSchema,
        "ok": {204: ("Erased (or nothing held)", None)}, "errors": AUTH + BODY},
    "privacy.erase_subject": {
        "summary": "Erase a subject (deprecated: the identifier would sit in URLs and logs;"
                   " use POST /api/v1/privacy/erasures)", "deprecated": True,
        "ok": {204: ("Erased (or nothing held)", None)},
        "errors": (*AUTH, 404, 422)},  # 404: an identifier no route can carry (a newline)
    "privacy.record_consent": {
        "summary": "Record consent or objection", "body": ConsentSchema,
        "ok": {201: ("The record", d.ConsentRecordSchema)}, "errors": AUTH + BODY},
    "privacy.workspace_settings": {
        "summary": "This workspace's settings (region, person-level enrichment)",
        "ok": {200: ("Settings", d.WorkspaceSchema)}, "errors": AUTH},
    "health.healthz": {"summary": "Liveness", "auth": False,
                       "ok": {200: ("Alive", d.HealthSchema)}, "errors": ()},
    "health.readyz": {"summary": "Readiness: PostgreSQL and Redis reachable", "auth": False,
                      "ok": {200: ("Ready", d.HealthSchema)}, "errors": (503,),
                      "error_schema": d.HealthSchema},
    "health.metrics": {"summary": "Prometheus metrics (a bearer token when METRICS_TOKEN is "
                                  "set)", "auth": False, "text": "text/plain",
                       "ok": {200: ("Text exposition format", None)}, "errors": (401,)},
    "openapi.openapi_json": {"summary": "This document", "auth": False,
                             "ok": {200: ("OpenAPI 3", "object")}, "errors": ()},
    "openapi.docs": {"summary": "This document, rendered", "auth": False, "text": "text/html",
                     "ok": {200: ("HTML", None)}, "errors": ()},
}

CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")


def build(app: Flask) -> dict:
    spec = APISpec(
        title="Lead enrichment API", version="1", openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Submit leads, read cited results and usage, buy credit packs, "
                             "exercise data-subject rights. Errors are application/problem+json "
                             "(RFC 9457). Rate-limit headers (RateLimit, RateLimit-Policy, "
                             "X-RateLimit-*; X-RateLimit-Reset in Unix epoch seconds) are on "
                             "every authenticated /api/v1 answer."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Problem", schema=d.ProblemSchema)
    # Credit packs come from configuration: document the ones this deployment sells.
    packs = sorted(app.extensions["enrichment"].settings.plans.packs)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        op = OPERATIONS[rule.endpoint]  # KeyError: a route without documentation
        path = CONVERTER.sub(lambda m: "{" + m.group(2) + "}", rule.rule)
        params = [{"in": "path", "name": name, "required": True,
                   "schema": {"type": "string", **({"format": "uuid"} if conv == "uuid" else {})}}
                  for conv, name in CONVERTER.findall(rule.rule)]
        params += [{"in": "query", "name": q[0], "required": q[2] if len(q) > 2 else True,
                    "description": q[1],
                    "schema": q[3] if len(q) > 3 else {"type": "string", "minLength": 1}}
                   for q in op.get("query", [])]
        if op.get("client_key"):
            params.append({"in": "header", "name": "Idempotency-Key", "required": False,
                           "schema": {"type": "string"},
                           "description": "Honoured for 24 h: same key and body → the same "
                                          "answer; same key, different body → 422."})
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            spec.path(path=path, operations={method.lower(): operation(op, params)})
    document = spec.to_dict()
    pack = document["components"]["schemas"]["CreditPack"]["properties"]["pack"]
    pack["enum"] = packs
    return document


def _content(schema, media: str = "application/json") -> dict:
    if schema is None:
        return {}
    if schema == "object":
        return {"content": {media: {"schema": {"type": "object"}}}}
    return {"content": {media: {"schema": schema}}}


def operation(op: dict, params: list) -> dict:
    responses = {}
    for status, (text, schema) in op["ok"].items():
        body = {"content": {op["text"]: {"schema": {"type": "string"}}}} if op.get("text") \
            else _content(schema)
        responses[str(status)] = {"description": text, **body}
    error_schema = op.get("error_schema")
    for status in op["errors"]:
        responses[str(status)] = {"description": ERRORS[status], **(
            _content(error_schema) if error_schema else
            {"content": {"application/problem+json": {"schema": "Problem"}}})}
    out = {"summary": op["summary"], "responses": responses, "parameters": params}
    if op.get("deprecated"):
        out["deprecated"] = True
    if op.get("auth", True):
        out["security"] = [{"bearer": []}]
    if "body" in op:
        out["requestBody"] = {"required": True, **_content(op["body"])}
    return out


@bp.get("/openapi.json")
def openapi_json():
    if "openapi" not in current_app.extensions:
        current_app.extensions["openapi"] = build(current_app)
    return jsonify(current_app.extensions["openapi"])


@bp.get("/docs")
def docs():
    spec = current_app.extensions.get("openapi") or build(current_app)
    rows = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            statuses = ", ".join(op["responses"])
            body = ""
            if "requestBody" in op:
                schema = next(iter(op["requestBody"]["content"].values()))["schema"]
                body = html.escape(str(schema.get("$ref", schema)).rsplit("/", 1)[-1])
            rows.append(f"<tr><td><b>{method.upper()}</b></td><td><code>{html.escape(path)}"
                        f"</code></td><td>{html.escape(op['summary'])}</td><td>{body}</td>"
                        f"<td>{statuses}</td></tr>")
    schemas = "".join(
        f"<h3 id='{name}'>{name}</h3><ul>" + "".join(
            f"<li><code>{html.escape(field)}</code> {html.escape(prop.get('type', 'object'))}"
            f"{' (required)' if field in schema.get('required', []) else ''}</li>"
            for field, prop in schema.get("properties", {}).items()) + "</ul>"
        for name, schema in spec["components"]["schemas"].items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{spec['info']['title']}"
            "</title><style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
            "td{padding:.3em .8em;border-bottom:1px solid #ddd;vertical-align:top}</style>"
            f"</head><body><h1>{spec['info']['title']}</h1>"
            f"<p>{html.escape(spec['info']['description'])}</p>"
            "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a></p>"
            "<table><tr><th></th><th>path</th><th>does</th><th>body</th><th>answers</th></tr>"
            f"{''.join(rows)}</table><h2>Schemas</h2>{schemas}</body></html>")
    return Response(page, mimetype="text/html")
