"""/api/v1/billing (credit packs, invoices) and the Stripe webhook.

Stripe on a request path: every call is bounded by STRIPE_TIMEOUT (≤ 10 s); a Stripe that
cannot be reached answers 503, one that refuses or fails 502, both problem+json with
Retry-After; invoice lists and previews are cached per workspace for a minute.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, g, request
from marshmallow import RAISE, Schema, fields

from enrichment.billing import stripe_events
from enrichment.billing.stripe_client import verify_webhook
from enrichment.errors import Invalid, NotFound

from . import answers as a
from .auth import guard, live_only, services
from .enrichment import json_body, load
from .problems import Problem

log = logging.getLogger(__name__)
bp = Blueprint("billing", __name__, url_prefix="/api/v1/billing")
guard(bp)
bp.before_request(live_only)
hooks = Blueprint("stripe_webhook", __name__, url_prefix="/api/v1/stripe")
INVOICE_CACHE_SECONDS = 60


class CreditPackSchema(Schema):
    class Meta:
        unknown = RAISE

    pack = fields.String(required=True)


@bp.post("/credit-packs")
def buy_credit_pack():
    svc = services()
    packs = svc.settings.plans.packs
    data = load(CreditPackSchema(), json_body())
    if data["pack"] not in packs:  # the packs come from configuration
        raise Invalid({"pack": [f"Must be one of: {', '.join(packs)}."]})
    checkout = stripe_events.start_checkout(
        svc.db, svc.billing, svc.settings.plans, g.workspace.id, data["pack"],
        svc.settings.checkout_success_url, svc.settings.checkout_cancel_url)
    pack = packs[data["pack"]]
    return a.respond(a.CheckoutSchema, {
        "checkout_url": checkout.url, "checkout_session_id": checkout.session_id,
        "pack": pack.name, "units": pack.units}, 201)


def _customer() -> str | None:
    with services().db.connection() as conn:
        return conn.execute("SELECT stripe_customer_id FROM workspaces WHERE id = %s",
                            (g.workspace.id,)).fetchone()["stripe_customer_id"]


def _lines(invoice: dict) -> list[dict]:
    return [{"description": line.get("description"), "quantity": line.get("quantity"),
             "amount_cents": line.get("amount")}
            for line in (invoice.get("lines") or {}).get("data", [])]


def _invoice_body(invoice: dict) -> dict:
    return {"id": invoice.get("id"), "status": invoice.get("status"),
            "currency": invoice.get("currency"), "amount_due_cents": invoice.get("amount_due"),
            "amount_paid_cents": invoice.get("amount_paid"),
            "period_start": invoice.get("period_start"), "period_end": invoice.get("period_end"),
            "lines": _lines(invoice)}


def _cached(name: str, fetch):
    """`fetch()`'s answer for this workspace, kept a minute in Redis (Stripe is slow and
    rate-limited; a dashboard polls)."""
    svc = services()
    key = f"billing:{name}:{g.workspace.id}"
    hit = svc.redis.get(key)
    if hit is not None:
        return json.loads(hit)
    value = fetch()
    svc.redis.set(key, json.dumps(value), ex=INVOICE_CACHE_SECONDS)
    return value


@bp.get("/invoices")
def list_invoices():
    customer = _customer()
    if customer is None:
        return a.respond(a.InvoicesSchema, {"invoices": []})
    billing = services().billing
    return a.respond(a.InvoicesSchema, {"invoices": _cached(
        "invoices", lambda: [_invoice_body(i) for i in billing.invoices(customer)])})


@bp.get("/invoices/upcoming")
def upcoming_invoice():
    customer = _customer()
    if customer is None:
        raise NotFound("This workspace has no billing account yet.",
                       slug="no-billing-account")
    billing = services().billing
    return a.respond(a.InvoiceSchema, _cached(
        "upcoming", lambda: _invoice_body(billing.upcoming_invoice(customer))))


@hooks.post("/webhook")
def stripe_webhook():
    svc = services()
    secret = svc.settings.stripe_webhook_secret
    if not secret:  # 5xx on purpose: Stripe retries until the secret is configured
        raise Problem(501, "Not Implemented", "STRIPE_WEBHOOK_SECRET is not set.",
                      "billing-not-configured")
    payload = request.get_data(cache=False)  # the raw body: the signature covers its bytes
    event = verify_webhook(payload, request.headers.get("Stripe-Signature"), secret)
    with svc.db.connection() as conn:
        outcome = stripe_events.handle_event(conn, svc.settings.plans, svc.events, event)
    return a.respond(a.WebhookAnswerSchema, {"received": True, "outcome": outcome})
