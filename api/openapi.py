"""The OpenAPI 3 document, generated from the app's routes and the marshmallow schemas the
answers are serialised through (apispec), and Swagger UI at /docs/ — served from the
flask-swagger-ui package, nothing loaded from the internet.

Every rule in the URL map must have an entry in OPERATIONS: building the document fails
otherwise, so a new route cannot go undocumented. Each has an operationId and a tag; enums
come from the schemas' OneOf validators (plans and credit packs from this deployment's
configuration); every header the API reads or sends is documented.
"""

from __future__ import annotations

import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, current_app, jsonify
from flask_swagger_ui import get_swaggerui_blueprint

from . import answers as d
from .billing import CreditPackSchema
from .privacy import ConsentSchema, ErasureSchema
from .schemas import (
    BatchSchema,
    SubmitSchema,
    WebhookEndpointSchema,
    WebhookEndpointUpdateSchema,
)

bp = Blueprint("openapi", __name__)
# Swagger UI from the package's own files; no validator call to swagger.io.
swagger_ui = get_swaggerui_blueprint("/docs", "/openapi.json", config={
    "app_name": "Lead enrichment API", "validatorUrl": None})

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
TAGS = [
    {"name": "Enrichment", "description": "Submit leads, read jobs, batches and usage."},
    {"name": "Webhooks", "description": "Endpoints that receive job and batch events "
                                        "(Standard Webhooks)."},
    {"name": "Billing", "description": "Credit packs, invoices, and Stripe's events."},
    {"name": "Privacy", "description": "Data-subject rights and the workspace's settings."},
    {"name": "Operations", "description": "Health, metrics and this document."},
]
TAG_OF = {"enrichment": "Enrichment", "webhook_endpoints": "Webhooks", "billing": "Billing",
          "stripe_webhook": "Billing", "privacy": "Privacy", "health": "Operations",
          "openapi": "Operations", "swagger_ui": "Operations"}

LEAD = {"email": "jane@acme.com", "name": "Jane Doe", "company": "Acme"}

OPERATIONS: dict[str, dict] = {
    "enrichment.submit": {"id": "submitLead",
        "summary": "Submit one lead", "body": SubmitSchema, "client_key": True, "example": {
            "template": "person_basic", "lead": LEAD, "metadata": {"crm_id": "0031x"}},
        "ok": {202: ("Accepted: a new job", d.JobSchema),
               200: ("The same-day job this repeats (Idempotent-Replayed: true)", d.JobSchema)},
        "errors": AUTH + BODY + (402, 403)},
    "enrichment.submit_batch": {"id": "submitBatch",
        "summary": "Submit up to 100 leads", "body": BatchSchema, "client_key": True,
        "example": {"template": "company_profile",
                    "leads": [{"domain": "acme.com"}, {"domain": "globex.com"}]},
        "ok": {207: ("One entry per lead", d.BatchAnswerSchema)}, "errors": AUTH + BODY},
    "enrichment.get_job": {"id": "getJob",
        "summary": "A job's status and result",
        "ok": {200: ("The job", d.JobSchema)}, "errors": (*AUTH, 404)},
    "enrichment.list_jobs": {"id": "listJobs",
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
    "enrichment.get_batch": {"id": "getBatch",
        "summary": "A batch's progress",
        "ok": {200: ("The batch", d.BatchProgressSchema)}, "errors": (*AUTH, 404)},
    "webhook_endpoints.create": {"id": "createWebhookEndpoint",
        "summary": "Register a URL for job and batch events (its secret is shown only here)",
        "body": WebhookEndpointSchema, "example": {
            "url": "https://crm.example.com/hooks",
            "events": ["job.succeeded", "job.failed", "batch.completed"]},
        "ok": {201: ("The endpoint, with its secret", d.NewEndpointSchema)},
        "errors": AUTH + BODY},
    "webhook_endpoints.list_all": {"id": "listWebhookEndpoints",
        "summary": "The workspace's webhook endpoints (no secrets)",
        "ok": {200: ("Endpoints", d.EndpointsSchema)}, "errors": AUTH},
    "webhook_endpoints.update": {"id": "updateWebhookEndpoint",
        "summary": "Re-enable an endpoint disabled after 3 days of failures (or disable one)",
        "body": WebhookEndpointUpdateSchema, "example": {"enabled": True},
        "ok": {200: ("The endpoint", d.EndpointSchema)}, "errors": (*AUTH, *BODY, 404)},
    "webhook_endpoints.delete": {"id": "deleteWebhookEndpoint",
        "summary": "Remove a webhook endpoint",
        "ok": {204: ("Removed", None)}, "errors": (*AUTH, 404)},
    "webhook_endpoints.deliveries": {"id": "listWebhookDeliveries",
        "summary": "An endpoint's delivery log, newest first",
        "ok": {200: ("Deliveries", d.DeliveriesSchema)}, "errors": (*AUTH, 404)},
    "enrichment.usage": {"id": "getUsage", "summary": "This billing period's usage",
                         "ok": {200: ("Usage", d.UsageSchema)}, "errors": AUTH},
    "enrichment.list_templates": {"id": "listTemplates", "summary": "Templates and their fields",
                                  "ok": {200: ("Templates", d.TemplatesSchema)},
                                  "errors": AUTH},
    "billing.buy_credit_pack": {"id": "buyCreditPack",
        "summary": "Start buying a credit pack (Stripe Checkout)", "body": CreditPackSchema,
        "example": {"pack": "500"},
        "ok": {201: ("Checkout session", d.CheckoutSchema)},
        "errors": AUTH + BODY + (403, 502, 503)},
    "billing.list_invoices": {"id": "listInvoices", "summary": "The workspace's invoices",
                              "ok": {200: ("Invoices", d.InvoicesSchema)},
                              "errors": (*AUTH, 502, 503)},
    "billing.upcoming_invoice": {"id": "getUpcomingInvoice",
                                 "summary": "The next invoice, previewed",
                                 "ok": {200: ("Preview", d.InvoiceSchema)},
                                 "errors": (*AUTH, 403, 404, 502, 503)},
    "stripe_webhook.stripe_webhook": {"id": "receiveStripeEvent",
        "summary": "Stripe events (signature verified on the raw body)", "auth": False,
        "body": "object", "ok": {200: ("Received", d.WebhookAnswerSchema)},
        "errors": (400, 413, 501, 503)},
    "privacy.export_subject": {"id": "exportSubject",
        "summary": "Everything held about one subject",
        "query": [("identifier", "Email, LinkedIn URL or domain")],
        "ok": {200: ("The subject's data", d.ExportSchema)}, "errors": (*AUTH, 422)},
    "privacy.erase": {"id": "eraseSubject",
        "summary": "Erase a subject and suppress future enrichment", "body": ErasureSchema,
        "example": {"identifier": "jane@acme.com"},
        "ok": {204: ("Erased (or nothing held)", None)}, "errors": AUTH + BODY},
    "privacy.erase_subject": {"id": "eraseSubjectByPath",
        "summary": "Erase a subject (deprecated: the identifier would sit in URLs and logs;"
                   " use POST /api/v1/privacy/erasures)", "deprecated": True,
        "ok": {204: ("Erased (or nothing held)", None)},
        "errors": (*AUTH, 404, 422)},  # 404: an identifier no route can carry (a newline)
    "privacy.record_consent": {"id": "recordConsent",
        "summary": "Record consent or objection", "body": ConsentSchema, "example": {
            "identifier": "jane@acme.com", "purpose": "enrichment",
            "basis": "legitimate_interest", "granted": False, "source": "support ticket 812"},
        "ok": {201: ("The record", d.ConsentRecordSchema)}, "errors": AUTH + BODY},
    "privacy.workspace_settings": {"id": "getWorkspace",
        "summary": "This workspace's settings (region, person-level enrichment)",
        "ok": {200: ("Settings", d.WorkspaceSchema)}, "errors": AUTH},
    "health.healthz": {"id": "healthz", "summary": "Liveness", "auth": False,
                       "ok": {200: ("Alive", d.HealthSchema)}, "errors": ()},
    "health.readyz": {"id": "readyz", "summary": "Readiness: PostgreSQL and Redis reachable",
                      "auth": False,
                      "ok": {200: ("Ready", d.HealthSchema)}, "errors": (503,),
                      "error_schema": d.HealthSchema},
    "health.metrics": {"id": "metrics", "summary": "Prometheus metrics (a bearer token when "
                                                   "METRICS_TOKEN is set)",
                       "auth": False, "text": "text/plain",
                       "ok": {200: ("Text exposition format", None)}, "errors": (401,)},
    "openapi.openapi_json": {"id": "getOpenApiDocument", "summary": "This document", "auth": False,
                             "ok": {200: ("OpenAPI 3", "object")}, "errors": ()},
    "swagger_ui.show": {"id": "docs", "summary": "This document in Swagger UI (its page and "
                                                 "files, served locally)", "auth": False,
                        "text": "text/html", "ok": {200: ("HTML, JS, CSS", None)},
                        "errors": (404,)},
}

CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")


def build(app: Flask) -> dict:
    spec = APISpec(
        title="Lead enrichment API", version="1", openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()], tags=TAGS,
        info={"description": "Submit leads, read cited results and usage, buy credit packs, "
                             "exercise data-subject rights. Errors are application/problem+json "
                             "(RFC 9457) with the request's id. Authenticated /api/v1 answers "
                             "carry rate-limit headers (RateLimit, RateLimit-Policy, "
                             "X-RateLimit-*; X-RateLimit-Reset in Unix epoch seconds)."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Problem", schema=d.ProblemSchema)
    for name, header in HEADERS.items():
        spec.components.header(name, header)
    seen = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static" or rule.endpoint.startswith("console."):  # (pages)
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
        params.append(REQUEST_ID)
        if op.get("client_key"):
            params.append(IDEMPOTENCY_KEY)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operation_id = op["id"] if op["id"] not in seen else f"{op['id']}File"
            seen.add(operation_id)
            spec.path(path=path, operations={method.lower(): operation(
                op, params, operation_id, TAG_OF[rule.endpoint.split(".")[0]])})
    document = spec.to_dict()
    # Plans and credit packs come from configuration: this deployment's.
    plans = app.extensions["enrichment"].settings.plans
    schemas = document["components"]["schemas"]
    schemas["CreditPack"]["properties"]["pack"]["enum"] = sorted(plans.packs)
    for name in ("Usage", "Workspace"):
        schemas[name]["properties"]["plan"]["enum"] = plans.names
    return document


REQUEST_ID = {"in": "header", "name": "X-Request-Id", "required": False,
              "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
              "description": "Your id for this request (else one is made): returned in "
                             "X-Request-Id, in problem bodies and on every log line."}
IDEMPOTENCY_KEY = {"in": "header", "name": "Idempotency-Key", "required": False,
                   "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
                   "description": "Honoured for 24 h: same key and body → the same answer "
                                  "(Idempotent-Replayed: true); same key, other body → 422."}
_INT = {"schema": {"type": "integer"}}
_STR = {"schema": {"type": "string"}}
HEADERS = {
    "X-Request-Id": {"description": "This request's id", **_STR},
    "RateLimit": {"description": "Remaining requests and seconds to reset "
                                 "(draft-ietf-httpapi-ratelimit-headers)", **_STR},
    "RateLimit-Policy": {"description": "The limit and its window", **_STR},
    "X-RateLimit-Limit": {"description": "Requests allowed per window", **_INT},
    "X-RateLimit-Remaining": {"description": "Requests left in this window", **_INT},
    "X-RateLimit-Reset": {"description": "When the window resets (Unix epoch seconds)", **_INT},
    "Retry-After": {"description": "Seconds to wait before retrying", **_INT},
    "Location": {"description": "The new job", **_STR},
    "Idempotent-Replayed": {"description": "true: the stored answer of this Idempotency-Key "
                                           "(or the same-day job this repeats)", **_STR},
    "Deprecation": {"description": "This operation is deprecated", **_STR},
    "Link": {"description": "Its successor", **_STR},
    "WWW-Authenticate": {"description": "How to authenticate", **_STR},
}
RATE = ("RateLimit", "RateLimit-Policy", "X-RateLimit-Limit", "X-RateLimit-Remaining",
        "X-RateLimit-Reset")


def _content(schema, media: str = "application/json", example=None) -> dict:
    if schema is None:
        return {}
    body = {"schema": {"type": "object"} if schema == "object" else schema}
    if example is not None:
        body["example"] = example
    return {"content": {media: body}}


def _headers(names) -> dict:
    return {"headers": {n: {"$ref": f"#/components/headers/{n}"} for n in names}}


def operation(op: dict, params: list, operation_id: str, tag: str) -> dict:
    authed = op.get("auth", True)
    responses = {}
    for status, (text, schema) in op["ok"].items():
        body = {"content": {op["text"]: {"schema": {"type": "string"}}}} if op.get("text") \
            else _content(schema)
        names = ["X-Request-Id", *(RATE if authed else ())]
        if op.get("client_key"):  # any answer may be a replay; a new or repeated job: where
            names += ["Idempotent-Replayed", *(["Location"] if status in (200, 202) else [])]
        if op.get("deprecated"):
            names += ["Deprecation", "Link"]
        responses[str(status)] = {"description": text, **body, **_headers(names)}
    error_schema = op.get("error_schema")
    for status in op["errors"]:
        names = ["X-Request-Id", *(["Retry-After"] if status in (429, 502, 503) else ()),
                 *(["WWW-Authenticate"] if status == 401 else ()),
                 *(RATE if authed and status not in (401, 503) else ()),
                 *(["Idempotent-Replayed"] if op.get("client_key") else ())]
        responses[str(status)] = {"description": ERRORS[status], **_headers(names), **(
            _content(error_schema) if error_schema else
            {"content": {"application/problem+json": {"schema": "Problem"}}})}
    out = {"operationId": operation_id, "tags": [tag], "summary": op["summary"],
           "responses": responses, "parameters": params}
    if op.get("deprecated"):
        out["deprecated"] = True
    if authed:
        out["security"] = [{"bearer": []}]
    if "body" in op:
        out["requestBody"] = {"required": True, **_content(op["body"], example=op.get("example"))}
    return out


@bp.get("/openapi.json")
def openapi_json():
    if "openapi" not in current_app.extensions:
        current_app.extensions["openapi"] = build(current_app)
    return jsonify(current_app.extensions["openapi"])
