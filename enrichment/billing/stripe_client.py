"""Billing on Stripe through the `stripe` library's StripeClient (current API: Billing Meters
and meter events — legacy usage records no longer exist). Every Stripe error leaves here as a
`BillingError` that says whether it is worth retrying."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import stripe

from ..config import Plan, Plans
from .interface import (
    CREDITS_PRODUCT,
    METER_EVENT,
    BillingError,
    Checkout,
    WebhookRejected,
    base_key,
    cents,
    overage_key,
    pack_key,
)

log = logging.getLogger(__name__)
LOOKUP_KEYS_PER_LIST = 10  # Stripe's limit for `lookup_keys` on GET /v1/prices


@contextlib.contextmanager
def stripe_errors() -> Iterator[None]:
    """Stripe's exceptions as BillingError."""
    try:
        yield
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise BillingError(str(exc), retryable=True, unavailable=True) from exc
    except stripe.APIError as exc:  # Stripe's own 5xx
        raise BillingError(str(exc), retryable=True, code=exc.code) from exc
    except stripe.InvalidRequestError as exc:
        raise BillingError(str(exc.user_message or exc), retryable=False,
                           too_old=exc.param == "timestamp", code=exc.code) from exc
    except stripe.StripeError as exc:  # authentication, permission, idempotency, card
        raise BillingError(str(exc.user_message or exc), retryable=False,
                           code=exc.code) from exc


def plain(obj) -> dict:
    """A Stripe object as plain dicts and lists (its JSON; `to_dict` is deprecated in some
    of the library versions this supports and changed meaning in others)."""
    return json.loads(str(obj))


def verify_webhook(payload: bytes, signature: str | None, secret: str) -> dict:
    """A Stripe webhook's event, if its signature verifies (and is fresh)."""
    try:
        stripe.Webhook.construct_event(payload, signature, secret)
        return json.loads(payload)
    except (ValueError, stripe.SignatureVerificationError) as exc:
        raise WebhookRejected(str(exc)) from exc


def params(values: dict) -> Any:
    """Request parameters as the SDK takes them. Its TypedDicts for them move between the
    versions we support (12 to 16); the fake Stripe the tests run against checks the
    parameters themselves."""
    return values


def _price(catalog: dict[str, str], key: str) -> str:
    try:
        return catalog[key]
    except KeyError:
        raise BillingError(f"the Stripe catalog has no price {key!r}: run `enrichment billing "
                           "sync-catalog`", retryable=False) from None


def is_duplicate_identifier(exc: stripe.InvalidRequestError) -> bool:
    """Stripe's answer to a meter event whose identifier it already has: already sent."""
    return exc.code == "resource_already_exists" or (
        "identifier" in str(exc.user_message or exc) and "already" in str(exc))


def plan_prices(plan: Plan, meter_id: str) -> list[tuple[str, dict]]:
    """A plan's Stripe prices, by lookup key: the monthly base fee and the metered overage."""
    return [
        (base_key(plan.name), {"unit_amount": cents(plan.base_usd),
                               "recurring": {"interval": "month"}}),
        (overage_key(plan.name), {
            "unit_amount_decimal": str(plan.overage_usd * 100),
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id}}),
    ]


def amount_of(price: dict) -> Decimal:
    """A price's (or a price spec's) amount in cents per unit."""
    return Decimal(str(price.get("unit_amount_decimal") or price.get("unit_amount") or 0))


class StripeBilling:
    """`timeout` bounds every call: keep it short (≤ 10 s) where a person waits for the
    answer — an API worker must not hang on Stripe."""

    sends = True

    def __init__(self, api_key: str, api_base: str | None = None, timeout: float = 10.0):
        self.client = stripe.StripeClient(
            api_key, max_network_retries=0,
            base_addresses={"api": api_base, "meter_events": api_base} if api_base else {},
            http_client=stripe.RequestsClient(timeout=timeout))

    def sync_catalog(self, plans: Plans) -> dict[str, str]:
        """Create what is missing, found by event name and lookup keys. Idempotent."""
        with stripe_errors():
            return self._sync_catalog(plans)

    def _sync_catalog(self, plans: Plans) -> dict[str, str]:
        v1 = self.client.v1
        meter = next((m for m in v1.billing.meters.list({"limit": 100}).data
                      if m.event_name == METER_EVENT), None)
        if meter is None:
            meter = v1.billing.meters.create({
                "display_name": "Enrichment overage units", "event_name": METER_EVENT,
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"event_payload_key": "stripe_customer_id",
                                     "type": "by_id"},
                "value_settings": {"event_payload_key": "value"}})
        catalog = {"meter": meter.id}
        wanted = [base_key(p) for p in plans.names] + [overage_key(p) for p in plans.names] + [
            pack_key(p) for p in plans.packs]
        existing: dict[str, str] = {}
        for i in range(0, len(wanted), LOOKUP_KEYS_PER_LIST):
            chunk = wanted[i:i + LOOKUP_KEYS_PER_LIST]
            existing |= {p.lookup_key: p.id for p in v1.prices.list(
                {"lookup_keys": chunk, "limit": 100}).data if p.lookup_key}
        for plan in plans.plans.values():
            product = f"enrichment_{plan.name}"
            specs = plan_prices(plan, meter.id)
            if any(key not in existing for key, _ in specs):
                self._product(product, f"Lead enrichment — {plan.name}")
            for key, spec in specs:
                if key not in existing:
                    existing[key] = v1.prices.create(params({
                        "product": product, "currency": "usd", "lookup_key": key, **spec})).id
        for pack in plans.packs.values():
            if pack_key(pack.name) not in existing:
                self._product(CREDITS_PRODUCT, "Enrichment credit packs")
                existing[pack_key(pack.name)] = v1.prices.create({
                    "product": CREDITS_PRODUCT, "currency": "usd",
                    "lookup_key": pack_key(pack.name), "unit_amount": cents(pack.price_usd),
                    "metadata": {"units": str(pack.units)}}).id
        return catalog | existing

    def _product(self, product_id: str, name: str) -> None:
        try:
            self.client.v1.products.create({"id": product_id, "name": name})
        except stripe.InvalidRequestError as exc:
            if exc.code != "resource_already_exists":
                raise

    def create_customer(self, workspace_id, name):
        """The workspace's customer (metadata.workspace_id)."""
        with stripe_errors():
            return self.client.v1.customers.create(
                {"name": name, "metadata": {"workspace_id": workspace_id}},
                {"idempotency_key": f"customer-{workspace_id}"}).id

    def create_subscription(self, customer_id, workspace_id, plan, catalog, start):
        """Base + metered overage, starting when the workspace did (so usage recorded
        before a late attach falls inside the subscription)."""
        with stripe_errors():
            return self.client.v1.subscriptions.create(
                {"customer": customer_id, "metadata": {"workspace_id": workspace_id},
                 "backdate_start_date": int(start.timestamp()),
                 "items": [{"price": _price(catalog, base_key(plan))},
                           {"price": _price(catalog, overage_key(plan))}]},
                {"idempotency_key": f"subscription-{workspace_id}"}).id

    def change_plan(self, subscription_id, plan, catalog):
        """Move the subscription's base and overage items to the plan's prices: the base fee
        is prorated by Stripe; meter events from now on are priced at the new overage."""
        with stripe_errors():
            self._move_items(subscription_id, plan, catalog, {
                "proration_behavior": "create_prorations", "metadata": {"plan": plan}})

    def move_to_prices(self, subscription_id, plan, catalog):
        """After a price change: the subscription's items on the plan's current prices, the
        base fee's new amount from its next period (no proration). Returns 1 if it moved."""
        with stripe_errors():
            return self._move_items(subscription_id, plan, catalog,
                                    {"proration_behavior": "none"})

    def _move_items(self, subscription_id, plan, catalog, how: dict) -> int:
        v1 = self.client.v1
        sub = v1.subscriptions.retrieve(subscription_id)
        items = []
        for item in sub["items"].data:
            recurring = plain(item.price).get("recurring") or {}
            metered = recurring.get("usage_type") == "metered"
            price = _price(catalog, overage_key(plan) if metered else base_key(plan))
            if item.price.id != price:
                items.append({"id": item.id, "price": price})
        if items:
            v1.subscriptions.update(subscription_id, params({"items": items, **how}))
        return int(bool(items))

    def replace_prices(self, plan, catalog):
        """The plan's base and overage prices at the plans file's amounts: a price whose amount
        differs is replaced by a new one that takes over its lookup key, and archived (Stripe
        prices never change amount; past invoices keep naming the old one). Idempotent."""
        with stripe_errors():
            v1 = self.client.v1
            specs = plan_prices(plan, catalog["meter"])
            current = {p.lookup_key: p for p in v1.prices.list(
                {"lookup_keys": [key for key, _ in specs], "limit": 10}).data}
            found = {}
            for key, spec in specs:
                old = current.get(key)
                if old is not None and amount_of(plain(old)) == amount_of(spec):
                    found[key] = old.id
                    continue
                found[key] = v1.prices.create(params({
                    "product": f"enrichment_{plan.name}", "currency": "usd", "lookup_key": key,
                    "transfer_lookup_key": True, **spec})).id
                if old is not None:
                    v1.prices.update(old.id, {"active": False})
            return found

    def price_amounts(self, keys):
        """The amounts (USD per unit) of the prices the lookup keys name now."""
        with stripe_errors():
            found = {}
            for i in range(0, len(keys), LOOKUP_KEYS_PER_LIST):
                for p in self.client.v1.prices.list(
                        {"lookup_keys": keys[i:i + LOOKUP_KEYS_PER_LIST], "limit": 100}).data:
                    found[p.lookup_key] = amount_of(plain(p)) / 100
            return found

    def send_overage(self, customer_id, units, identifier, at):
        with stripe_errors():
            try:
                # No Idempotency-Key: Stripe would replay a saved 5xx to every retry for
                # 24 h; the identifier alone deduplicates the event.
                self.client.v1.billing.meter_events.create(
                    {"event_name": METER_EVENT, "identifier": identifier,
                     "timestamp": int(at.timestamp()),
                     "payload": {"stripe_customer_id": customer_id, "value": str(units)}})
            except stripe.InvalidRequestError as exc:
                if not is_duplicate_identifier(exc):
                    raise
                log.info("meter event %s was already accepted; counted as sent", identifier)

    def invoice_item(self, customer_id, amount_cents, description, idempotency_key):
        """A one-off line on the customer's next invoice (usage Stripe's meter no longer
        accepts)."""
        with stripe_errors():
            return self.client.v1.invoice_items.create(
                {"customer": customer_id, "amount": amount_cents, "currency": "usd",
                 "description": description}, {"idempotency_key": idempotency_key}).id

    def checkout(self, customer_id, workspace_id, pack, catalog, success_url, cancel_url):
        session_params = {
            "mode": "payment", "client_reference_id": workspace_id,
            "line_items": [{"price": _price(catalog, pack_key(pack.name)), "quantity": 1}],
            "metadata": {"workspace_id": workspace_id, "pack": pack.name,
                         "units": str(pack.units)},
            "success_url": success_url, "cancel_url": cancel_url}
        if customer_id:
            session_params["customer"] = customer_id
        with stripe_errors():
            session = self.client.v1.checkout.sessions.create(params(session_params))
        if session.url is None:
            raise BillingError("Stripe returned a Checkout session without a URL",
                               retryable=True)
        return Checkout(session.url, session.id, int(session.amount_total or 0),
                        session.currency or "usd")

    def invoices(self, customer_id):
        with stripe_errors():
            return [plain(inv) for inv in self.client.v1.invoices.list(
                {"customer": customer_id, "limit": 24}).data]

    def upcoming_invoice(self, customer_id):
        with stripe_errors():
            return plain(self.client.v1.invoices.create_preview({"customer": customer_id}))

    def reported_units(self, customer_id, catalog, start, end):
        with stripe_errors():
            summaries = self.client.v1.billing.meters.event_summaries.list(
                catalog["meter"], {"customer": customer_id,
                                   "start_time": int(start.timestamp()),
                                   "end_time": int(end.timestamp())})
        return int(sum(Decimal(str(s.aggregated_value)) for s in summaries.data))
