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

__all__ = ["Billing", "BillingError", "BillingNotConfigured", "Checkout", "LedgerBilling",
           "StripeBilling", "WebhookRejected", "build_billing", "verify_webhook"]


def build_billing(api_key: str | None, api_base: str | None, timeout: float = 10.0) -> Billing:
    if not api_key:
        return LedgerBilling()
    from .stripe_client import StripeBilling

    return StripeBilling(api_key, api_base, timeout)


def __getattr__(name: str):
    """The Stripe SDK is imported only where Stripe is used: importing the usage walk (which
    the jobs service needs for the hard cap) must not load it."""
    if name in ("StripeBilling", "verify_webhook"):
        from . import stripe_client

        return getattr(stripe_client, name)
    raise AttributeError(name)


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
