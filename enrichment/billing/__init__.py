"""Billing: usage and overage, the report to Stripe, credit packs, plan history,
reconciliation — behind one interface (`Billing`) with a Stripe and a ledger-only
implementation, chosen in `build_billing`.

    interface   the Billing protocol, its errors, catalog keys
    stripe_client / ledger   the two implementations; webhook verification
    catalog     the Stripe catalog as stored here
    accounts    customers, subscriptions, plan history, the billing sync job
    usage       the one computation of included units, credits and daily overage
    report      freeze and send the overage report, settle expired days
    webhooks    credit packs and the Stripe events acted on
    reconcile   metered vs reported vs Stripe
"""

from __future__ import annotations

from .interface import (
    Billing,
    BillingError,
    BillingNotConfigured,
    Checkout,
    WebhookRejected,
)
from .ledger import LedgerBilling
from .stripe_client import StripeBilling, verify_webhook


def build_billing(api_key: str | None, api_base: str | None, timeout: float = 10.0) -> Billing:
    return StripeBilling(api_key, api_base, timeout) if api_key else LedgerBilling()


__all__ = [
    "Billing",
    "BillingError",
    "BillingNotConfigured",
    "Checkout",
    "LedgerBilling",
    "StripeBilling",
    "WebhookRejected",
    "build_billing",
    "verify_webhook",
]
