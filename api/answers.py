"""The answers' marshmallow schemas. Every route serialises its answer through one of them
(`respond`), and the OpenAPI document shows the same schemas: what the document says is what
the API sends. (Requests: api/schemas.py; problems: api/problems.py, documented here.)"""

from __future__ import annotations

from functools import cache

from flask import Response, jsonify
from marshmallow import INCLUDE, Schema, fields, validate

from enrichment.jobs.states import PUBLIC_STATUSES
from enrichment.templates import TEMPLATES
from enrichment.webhooks import EVENTS

JOB_STATUSES = validate.OneOf(list(PUBLIC_STATUSES))
TEMPLATE_NAMES = validate.OneOf(sorted(TEMPLATES))
DELIVERY_STATUSES = validate.OneOf(["pending", "delivering", "succeeded", "failed"])


@cache
def _schema(schema: type[Schema]) -> Schema:
    return schema()


def dump(schema: type[Schema], body) -> dict:
    return _schema(schema).dump(body)


def respond(schema: type[Schema], body, status: int = 200) -> Response:
    """The answer, serialised through `schema`."""
    resp = jsonify(dump(schema, body))
    resp.status_code = status
    return resp


class ProblemSchema(Schema):
    """application/problem+json (RFC 9457); a 422 lists the failing fields."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    request_id = fields.String()  # to quote when asking for support (also X-Request-Id)
    errors = fields.List(fields.Dict())  # a 422: [{field, message}]
    hard_cap = fields.Integer()  # a 402: the period's cap
    resets_at = fields.String()  # a 402: when the period ends


VERIFICATIONS = ["valid", "invalid", "accept_all", "webmail", "disposable", "unknown"]
PROVIDERS = validate.OneOf(["perplexity", "social_links", "hunter"])


class ProvenanceSchema(Schema):
    """How sure one value is and where it comes from (docs/api.md#provenance)."""

    confidence = fields.Float(required=True, validate=validate.Range(0, 0.99))
    sources = fields.List(fields.String(), required=True)
    provider = fields.String(required=True, validate=PROVIDERS)
    verification = fields.String(validate=validate.OneOf(VERIFICATIONS))
    of = fields.String()  # a verifier's status: the field holding the address it checked


class TraceSchema(Schema):
    """One provider call of the job (docs/api.md#trace)."""

    provider = fields.String(required=True, validate=PROVIDERS)
    operation = fields.String(required=True)
    asked = fields.List(fields.String(), required=True, attribute="fields", data_key="fields")
    filled = fields.List(fields.String(), required=True)
    status = fields.String(required=True, validate=validate.OneOf(
        ["ok", "no_result", "error", "skipped"]))
    http_status = fields.Integer(required=True, allow_none=True)
    duration_ms = fields.Integer(required=True)
    cost_usd = fields.String(required=True)


class ResultSchema(Schema):
    found = fields.Dict(required=True, attribute="fields", data_key="fields")
    citations = fields.List(fields.String(), required=True)
    completeness = fields.Float(required=True)
    # Absent only from answers stored before provenance existed.
    provenance = fields.Dict(keys=fields.String(), values=fields.Nested(ProvenanceSchema))
    trace = fields.List(fields.Nested(TraceSchema))


class JobUsageSchema(Schema):
    units = fields.Integer(required=True)
    tokens = fields.Integer(required=True)
    searches = fields.Integer(required=True)
    social_requests = fields.Integer(required=True)
    cost_estimate_usd = fields.String(required=True)


class JobSchema(Schema):
    job_id = fields.UUID(required=True)
    batch_id = fields.UUID(required=True, allow_none=True)
    status = fields.String(required=True, validate=JOB_STATUSES)
    template = fields.String(required=True, validate=TEMPLATE_NAMES)
    queue = fields.String(required=True)
    lead = fields.Dict(required=True)
    metadata = fields.Dict(required=True)
    attempts = fields.Integer(required=True)
    error = fields.String(required=True, allow_none=True)
    result = fields.Nested(ResultSchema, required=True, allow_none=True)
    usage = fields.Nested(JobUsageSchema, required=True, allow_none=True)
    cached = fields.Boolean(required=True)
    cached_from = fields.UUID(required=True, allow_none=True)
    match = fields.Boolean(required=True, allow_none=True)
    min_confidence = fields.Float(required=True)
    livemode = fields.Boolean(required=True)
    created_at = fields.String(required=True)
    started_at = fields.String(required=True, allow_none=True)
    completed_at = fields.String(required=True, allow_none=True)


class BatchEntrySchema(Schema):
    index = fields.Integer(required=True)
    status = fields.Integer(required=True)
    job = fields.Nested(JobSchema)
    problem = fields.Nested(ProblemSchema)
    replayed = fields.Boolean()


class BatchAnswerSchema(Schema):
    batch_id = fields.UUID(required=True)
    results = fields.List(fields.Nested(BatchEntrySchema), required=True)


class JobListSchema(Schema):
    data = fields.List(fields.Nested(JobSchema), required=True)
    has_more = fields.Boolean(required=True)


class BatchCountsSchema(Schema):
    queued = fields.Integer(required=True)
    processing = fields.Integer(required=True)
    succeeded = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    dead = fields.Integer(required=True)
    rejected = fields.Integer(required=True)


class BatchProgressSchema(Schema):
    batch_id = fields.UUID(required=True)
    template = fields.String(required=True, validate=TEMPLATE_NAMES)
    created_at = fields.String(required=True)
    total = fields.Integer(required=True)
    counts = fields.Nested(BatchCountsSchema, required=True)
    done = fields.Boolean(required=True)
    livemode = fields.Boolean(required=True)


class EndpointSchema(Schema):
    id = fields.UUID(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(validate=validate.OneOf(EVENTS)), required=True)
    created_at = fields.String(required=True)
    disabled = fields.Boolean(required=True)
    livemode = fields.Boolean(required=True)


class NewEndpointSchema(EndpointSchema):
    secret = fields.String(required=True)


class EndpointsSchema(Schema):
    data = fields.List(fields.Nested(EndpointSchema), required=True)


class DeliverySchema(Schema):
    id = fields.UUID(required=True)
    event = fields.String(required=True, validate=validate.OneOf(EVENTS))
    status = fields.String(required=True, validate=DELIVERY_STATUSES)
    attempts = fields.Integer(required=True)
    last_status_code = fields.Integer(required=True, allow_none=True)
    last_error = fields.String(required=True, allow_none=True)
    created_at = fields.String(required=True)
    delivered_at = fields.String(required=True, allow_none=True)
    next_attempt_at = fields.String(required=True, allow_none=True)


class DeliveriesSchema(Schema):
    data = fields.List(fields.Nested(DeliverySchema), required=True)


class PeriodSchema(Schema):
    start = fields.String(required=True)
    end = fields.String(required=True)


class UsageSchema(Schema):
    workspace_id = fields.UUID(required=True)
    plan = fields.String(required=True)
    period = fields.Nested(PeriodSchema, required=True)
    included = fields.Integer(required=True)
    credits = fields.Integer(required=True)
    used = fields.Integer(required=True)
    reserved = fields.Integer(required=True)
    overage_units = fields.Integer(required=True)
    overage_unit_price_usd = fields.String(required=True)
    overage_cost_usd = fields.String(required=True)
    hard_cap = fields.Integer(required=True)
    remaining = fields.Integer(required=True)
    tokens = fields.Integer(required=True)
    searches = fields.Integer(required=True)
    social_requests = fields.Integer(required=True)
    cost_estimate_usd = fields.String(required=True)
    matched = fields.Integer(required=True)
    unmatched = fields.Integer(required=True)
    livemode = fields.Boolean(required=True)


class TemplateSchema(Schema):
    name = fields.String(required=True, validate=TEMPLATE_NAMES)
    level = fields.String(required=True, validate=validate.OneOf(["company", "person"]))
    description = fields.String(required=True)
    names = fields.List(fields.String(), required=True, attribute="fields", data_key="fields")
    providers = fields.List(fields.String(), required=True)
    waterfall = fields.Dict(keys=fields.String(), values=fields.List(fields.String()),
                            required=True)
    searches = fields.Integer(required=True)
    requires_any = fields.List(fields.String(), required=True)


class TemplatesSchema(Schema):
    templates = fields.List(fields.Nested(TemplateSchema), required=True)


class CheckoutSchema(Schema):
    checkout_url = fields.String(required=True)
    checkout_session_id = fields.String(required=True)
    pack = fields.String(required=True)
    units = fields.Integer(required=True)


class InvoiceLineSchema(Schema):
    description = fields.String(allow_none=True)
    quantity = fields.Integer(allow_none=True)
    amount_cents = fields.Integer(allow_none=True)


class InvoiceSchema(Schema):
    id = fields.String(allow_none=True)
    status = fields.String(allow_none=True)
    currency = fields.String(allow_none=True)
    amount_due_cents = fields.Integer(allow_none=True)
    amount_paid_cents = fields.Integer(allow_none=True)
    period_start = fields.Integer(allow_none=True)
    period_end = fields.Integer(allow_none=True)
    lines = fields.List(fields.Nested(InvoiceLineSchema))


class InvoicesSchema(Schema):
    invoices = fields.List(fields.Nested(InvoiceSchema), required=True)


class WebhookAnswerSchema(Schema):
    received = fields.Boolean(required=True)
    outcome = fields.String(required=True)


class ConsentEntrySchema(Schema):
    id = fields.UUID(required=True)
    purpose = fields.String(required=True)
    basis = fields.String(required=True,
                          validate=validate.OneOf(["consent", "legitimate_interest"]))
    granted = fields.Boolean(required=True)
    source = fields.String(required=True)
    recorded_at = fields.String(required=True)


class ConsentRecordSchema(ConsentEntrySchema):
    identifier = fields.String(required=True)


class SuppressionSchema(Schema):
    reason = fields.String(required=True, validate=validate.OneOf(["erasure", "objection"]))
    since = fields.String(required=True)


class SentDeliverySchema(Schema):
    id = fields.UUID(required=True)
    endpoint_id = fields.UUID(required=True)
    event = fields.String(required=True, validate=validate.OneOf(EVENTS))
    status = fields.String(required=True, validate=DELIVERY_STATUSES)
    created_at = fields.String(required=True)
    delivered_at = fields.String(required=True, allow_none=True)


class ExportSchema(Schema):
    identifier = fields.String(required=True)
    subject_hash = fields.String(required=True)
    jobs = fields.List(fields.Nested(JobSchema), required=True)
    consents = fields.List(fields.Nested(ConsentEntrySchema), required=True)
    suppression = fields.Nested(SuppressionSchema, required=True, allow_none=True)
    webhook_deliveries = fields.List(fields.Nested(SentDeliverySchema), required=True)


class WorkspaceSchema(Schema):
    workspace_id = fields.UUID(required=True)
    name = fields.String(required=True)
    plan = fields.String(required=True)  # the deployment's plans: an enum in the document
    region = fields.String(required=True, validate=validate.OneOf(["us", "eu"]))
    person_level_enabled = fields.Boolean(required=True)
    person_level_allowed = fields.Boolean(required=True)
    livemode = fields.Boolean(required=True)  # the mode of the key that asked


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "ready", "unavailable"]))
    checks = fields.Dict()
