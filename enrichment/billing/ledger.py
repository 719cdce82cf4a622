"""The null billing: without STRIPE_API_KEY everything is computed and recorded locally and
nothing is sent."""

from __future__ import annotations

from .interface import BillingNotConfigured

NO_KEY = "no STRIPE_API_KEY: billing runs ledger-only"


class LedgerBilling:
    sends = False

    def sync_catalog(self, plans):
        return {}

    def create_customer(self, workspace_id, name):
        raise BillingNotConfigured(NO_KEY)

    def create_subscription(self, customer_id, workspace_id, plan, catalog, start):
        raise BillingNotConfigured(NO_KEY)

    def change_plan(self, subscription_id, plan, catalog):
        raise BillingNotConfigured(NO_KEY)

    def move_to_prices(self, subscription_id, plan, catalog):
        raise BillingNotConfigured(NO_KEY)

    def replace_prices(self, plan, catalog):
        raise BillingNotConfigured(NO_KEY)

    def price_amounts(self, keys):
        return {}

    def send_overage(self, customer_id, units, identifier, at):
        raise BillingNotConfigured(NO_KEY)

    def invoice_item(self, customer_id, amount_cents, description, idempotency_key):
        raise BillingNotConfigured(NO_KEY)

    def checkout(self, *args, **kwargs):
        raise BillingNotConfigured("no STRIPE_API_KEY: credit packs need Stripe Checkout")

    def invoices(self, customer_id):
        return []

    def upcoming_invoice(self, customer_id):
        raise BillingNotConfigured(NO_KEY)

    def reported_units(self, customer_id, catalog, start, end):
        raise BillingNotConfigured(NO_KEY)
