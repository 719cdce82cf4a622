"""Billing behind one interface: `StripeBilling` (the `stripe` library, current API: Billing
Meters and meter events — legacy usage records no longer exist) and `LedgerBilling`, the null
implementation used without STRIPE_API_KEY: everything is computed and recorded locally and
nothing is sent."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

import stripe

from .config import CreditPack, Plans

log = logging.getLogger(__name__)

METER_EVENT = "enrichment_overage_units"
CREDITS_PRODUCT = "enrichment_credits"


def cents(usd: Decimal) -> int:
    return int((usd * 100).to_integral_value())


def base_key(plan: str) -> str:
    return f"enrichment_{plan}_base"


def overage_key(plan: str) -> str:
    return f"enrichment_{plan}_overage"


def pack_key(pack: str) -> str:
    return f"enrichment_pack_{pack}"


@dataclass
class Checkout:
    url: str
    session_id: str


class Billing(Protocol):
    sends: bool  # False: ledger only

    def sync_catalog(self, plans: Plans) -> dict[str, str]: ...

    def attach(self, workspace_id: str, name: str, plan: str,
               catalog: dict[str, str]) -> tuple[str, str]: ...

    def send_overage(self, customer_id: str, units: int, identifier: str,
                     at: datetime) -> None: ...

    def checkout(self, customer_id: str | None, workspace_id: str, pack: CreditPack,
                 catalog: dict[str, str], success_url: str, cancel_url: str) -> Checkout: ...

    def invoices(self, customer_id: str) -> list[dict]: ...

    def upcoming_invoice(self, customer_id: str) -> dict: ...

    def reported_units(self, customer_id: str, catalog: dict[str, str], start: datetime,
                       end: datetime) -> int: ...


class BillingNotConfigured(Exception):
    """The call needs Stripe and there is no STRIPE_API_KEY."""


class LedgerBilling:
    sends = False

    def sync_catalog(self, plans: Plans) -> dict[str, str]:
        return {}

    def attach(self, workspace_id, name, plan, catalog):
        raise BillingNotConfigured("no STRIPE_API_KEY: billing runs ledger-only")

    def send_overage(self, customer_id, units, identifier, at):
        raise BillingNotConfigured("no STRIPE_API_KEY: billing runs ledger-only")

    def checkout(self, *args, **kwargs):
        raise BillingNotConfigured("no STRIPE_API_KEY: credit packs need Stripe Checkout")

    def invoices(self, customer_id):
        return []

    def upcoming_invoice(self, customer_id):
        raise BillingNotConfigured("no STRIPE_API_KEY")

    def reported_units(self, customer_id, catalog, start, end):
        raise BillingNotConfigured("no STRIPE_API_KEY")


def is_duplicate_identifier(exc: stripe.InvalidRequestError) -> bool:
    """Stripe's answer to a meter event whose identifier it already has: already sent."""
    return exc.code == "resource_already_exists" or (
        "identifier" in str(exc.user_message or exc) and "already" in str(exc))


class StripeBilling:
    sends = True

    def __init__(self, api_key: str, api_base: str | None = None):
        bases = {"api": api_base, "meter_events": api_base} if api_base else None
        self.client = stripe.StripeClient(api_key, base_addresses=bases, max_network_retries=0)

    def sync_catalog(self, plans: Plans) -> dict[str, str]:
        """Create what is missing, found by event name and lookup keys. Idempotent."""
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
        existing = {p.lookup_key: p.id for p in v1.prices.list(
            {"lookup_keys": wanted, "limit": 100}).data}
        for plan in plans.plans.values():
            product = f"enrichment_{plan.name}"
            specs = [
                (base_key(plan.name), {"unit_amount": cents(plan.base_usd),
                                       "recurring": {"interval": "month"}}),
                (overage_key(plan.name), {
                    "unit_amount_decimal": str(plan.overage_usd * 100),
                    "recurring": {"interval": "month", "usage_type": "metered",
                                  "meter": meter.id}}),
            ]
            if any(key not in existing for key, _ in specs):
                self._product(product, f"Lead enrichment — {plan.name}")
            for key, spec in specs:
                if key not in existing:
                    existing[key] = v1.prices.create({
                        "product": product, "currency": "usd", "lookup_key": key, **spec}).id
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

    def attach(self, workspace_id, name, plan, catalog):
        """Customer (metadata.workspace_id) and subscription: base + metered overage."""
        v1 = self.client.v1
        customer = v1.customers.create(
            {"name": name, "metadata": {"workspace_id": workspace_id}},
            {"idempotency_key": f"customer-{workspace_id}"})
        subscription = v1.subscriptions.create(
            {"customer": customer.id, "metadata": {"workspace_id": workspace_id},
             "items": [{"price": catalog[base_key(plan)]},
                       {"price": catalog[overage_key(plan)]}]},
            {"idempotency_key": f"subscription-{workspace_id}-{plan}"})
        return customer.id, subscription.id

    def send_overage(self, customer_id, units, identifier, at):
        try:
            self.client.v1.billing.meter_events.create(
                {"event_name": METER_EVENT, "identifier": identifier,
                 "timestamp": int(at.timestamp()),
                 "payload": {"stripe_customer_id": customer_id, "value": str(units)}},
                {"idempotency_key": identifier})
        except stripe.InvalidRequestError as exc:
            if not is_duplicate_identifier(exc):
                raise
            log.info("meter event %s was already accepted; counted as sent", identifier)

    def checkout(self, customer_id, workspace_id, pack, catalog, success_url, cancel_url):
        params = {"mode": "payment", "client_reference_id": workspace_id,
                  "line_items": [{"price": catalog[pack_key(pack.name)], "quantity": 1}],
                  "metadata": {"workspace_id": workspace_id, "pack": pack.name,
                               "units": str(pack.units)},
                  "success_url": success_url, "cancel_url": cancel_url}
        if customer_id:
            params["customer"] = customer_id
        session = self.client.v1.checkout.sessions.create(params)
        return Checkout(session.url, session.id)

    def invoices(self, customer_id):
        return [inv.to_dict() for inv in self.client.v1.invoices.list(
            {"customer": customer_id, "limit": 24}).data]

    def upcoming_invoice(self, customer_id):
        return self.client.v1.invoices.create_preview({"customer": customer_id}).to_dict()

    def reported_units(self, customer_id, catalog, start, end):
        summaries = self.client.v1.billing.meters.event_summaries.list(
            catalog["meter"], {"customer": customer_id, "start_time": int(start.timestamp()),
                               "end_time": int(end.timestamp())})
        return int(sum(Decimal(str(s.aggregated_value)) for s in summaries.data))


def build_billing(api_key: str | None, api_base: str | None) -> Billing:
    return StripeBilling(api_key, api_base) if api_key else LedgerBilling()
