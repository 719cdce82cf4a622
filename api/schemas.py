"""Request bodies (marshmallow). Unknown fields are rejected."""

from __future__ import annotations

import re
from datetime import UTC
from urllib.parse import urlsplit

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from enrichment.confidence import MAX as MAX_CONFIDENCE
from enrichment.jobs.states import CACHE_DAYS, DEFAULT_MIN_CONFIDENCE, PUBLIC_STATUSES
from enrichment.leads import subject_identifier
from enrichment.templates import TEMPLATES
from enrichment.webhooks import EVENTS as WEBHOOK_EVENTS

DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
                       re.IGNORECASE)
METADATA_MAX_KEYS = 20
BATCH_MAX_LEADS = 100
MAX_AGE_DAYS = CACHE_DAYS  # results answer a repeat for this long


class Domain(fields.String):
    """A company's domain. A website address is taken too, reduced to its host without
    "www." (https://www.acme.com/about → acme.com): what CRMs export as "Website"."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs).strip().lower()
        try:
            host = urlsplit(text if "//" in text else f"//{text}").hostname or ""
        except ValueError:
            raise ValidationError("Not a valid domain name.") from None
        return host.removeprefix("www.").rstrip(".")


class LeadSchema(Schema):
    class Meta:
        unknown = RAISE

    email = fields.Email(validate=validate.Length(max=254))
    name = fields.String(validate=validate.Length(min=1, max=200))
    company = fields.String(validate=validate.Length(min=1, max=200))
    domain = Domain(validate=[
        validate.Length(max=253),
        validate.Regexp(DOMAIN_RE, error="Not a valid domain name."),
    ])
    linkedin_url = fields.URL(schemes={"https", "http"}, validate=validate.Length(max=500))

    @validates_schema
    def _linkedin(self, data, **kwargs):
        url = data.get("linkedin_url")
        if url and "linkedin.com" not in url.lower():
            raise ValidationError("Must be a linkedin.com URL.", "linkedin_url")


def _metadata(value: dict) -> None:
    if len(value) > METADATA_MAX_KEYS:
        raise ValidationError(f"At most {METADATA_MAX_KEYS} keys.")
    for key, item in value.items():
        if len(key) > 64:
            raise ValidationError("Keys are at most 64 characters.")
        if item is not None and not isinstance(item, (str, int, float, bool)):
            raise ValidationError("Values must be strings, numbers, booleans or null.")
        if isinstance(item, str) and len(item) > 500:
            raise ValidationError("String values are at most 500 characters.")


class JSONNumber(fields.Float):
    """A JSON number: not a string that looks like one, nor a boolean."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class SubmitSchema(Schema):
    class Meta:
        unknown = RAISE

    template = fields.String(required=True, validate=validate.OneOf(sorted(TEMPLATES)))
    lead = fields.Nested(LeadSchema, required=True)
    metadata = fields.Dict(keys=fields.String(), load_default=dict, validate=_metadata)
    max_age_days = fields.Integer(load_default=MAX_AGE_DAYS, strict=True,
                                  validate=validate.Range(0, MAX_AGE_DAYS))
    min_confidence = JSONNumber(load_default=DEFAULT_MIN_CONFIDENCE,
                                validate=validate.Range(0, MAX_CONFIDENCE))

    @validates_schema
    def _lead_fits_template(self, data, **kwargs):
        lead, template = data.get("lead"), TEMPLATES.get(data.get("template", ""))
        if lead is None or template is None:
            return
        if subject_identifier(lead, template.person_level) is None:
            raise ValidationError(
                "A lead needs an identifier: email, linkedin_url, or name with domain or "
                "company (a person); domain, or company (a company).", "lead")
        if not template.lead_fits(lead):
            raise ValidationError(
                f"Template {template.name!r} needs one of: {', '.join(template.requires_any)}.",
                "lead")


class BatchSchema(Schema):
    """The batch envelope; each lead is then checked on its own (its own 422 entry)."""

    class Meta:
        unknown = RAISE

    template = fields.String(required=True, validate=validate.OneOf(sorted(TEMPLATES)))
    leads = fields.List(fields.Raw(), required=True,
                        validate=validate.Length(min=1, max=BATCH_MAX_LEADS))
    metadata = fields.Dict(keys=fields.String(), load_default=dict, validate=_metadata)
    max_age_days = fields.Integer(load_default=MAX_AGE_DAYS, strict=True,
                                  validate=validate.Range(0, MAX_AGE_DAYS))
    min_confidence = JSONNumber(load_default=DEFAULT_MIN_CONFIDENCE,
                                validate=validate.Range(0, MAX_CONFIDENCE))


class ListJobsSchema(Schema):
    """Query parameters of GET /api/v1/enrichment."""

    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=20, validate=validate.Range(1, 100))
    starting_after = fields.UUID()
    status = fields.String(validate=validate.OneOf(list(PUBLIC_STATUSES)))
    template = fields.String(validate=validate.OneOf(sorted(TEMPLATES)))
    batch_id = fields.UUID()
    created_after = fields.AwareDateTime(default_timezone=UTC)
    created_before = fields.AwareDateTime(default_timezone=UTC)


class WebhookEndpointUpdateSchema(Schema):
    class Meta:
        unknown = RAISE

    enabled = fields.Boolean(required=True)


class WebhookEndpointSchema(Schema):
    class Meta:
        unknown = RAISE

    url = fields.String(required=True, validate=validate.Length(min=8, max=2000))
    events = fields.List(fields.String(validate=validate.OneOf(WEBHOOK_EVENTS)),
                         required=True, validate=validate.Length(min=1, max=4))
