"""The billing interface every caller uses, and its errors. Two implementations: Stripe
(`stripe_client.StripeBilling`) and the ledger-only null (`ledger.LedgerBilling`), chosen in
`build_billing` from configuration. Nothing outside this package imports `stripe`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from ..config import CreditPack, Plan, Plans
from ..errors import EnrichmentError

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
    amount_cents: int
    currency: str


class BillingNotConfigured(EnrichmentError):
    """The call needs Stripe and there is no STRIPE_API_KEY: this deployment bills from its
    ledger only, so this is a refusal, not a server failure."""

    status, title, slug = 403, "Forbidden", "billing-not-configured"


class BillingError(EnrichmentError):
    """Stripe refused or failed a call. `retryable`: it may work later (network, rate limit,
    Stripe's own errors); `too_old`: a meter event outside the 35 days Stripe accepts;
    `unavailable`: Stripe could not be reached in time (503 on request paths, else 502).
    Stripe's message stays in logs; the caller is told to retry later."""

    def __init__(self, message: str, *, retryable: bool, too_old: bool = False,
                 unavailable: bool = False, code: str | None = None):
        if unavailable:
            super().__init__(message, status=503, title="Service Unavailable",
                             slug="payment-provider-unavailable", headers={"Retry-After": "30"},
                             detail="The payment provider could not be reached in time; "
                                    "retry later.")
        else:
            super().__init__(message, status=502, title="Bad Gateway",
                             slug="payment-provider-error", headers={"Retry-After": "30"},
                             detail="The payment provider did not answer as expected; "
                                    "retry later.")
        self.retryable, self.too_old, self.unavailable = retryable, too_old, unavailable
        self.code = code


class WebhookRejected(EnrichmentError):
    """A webhook whose signature or payload does not verify."""

    slug = "bad-webhook-signature"

    def __init__(self, message: str):
        super().__init__(message, detail=f"Webhook rejected: {message}"[:300])


class Billing(Protocol):
    sends: bool  # False: ledger only

    def sync_catalog(self, plans: Plans) -> dict[str, str]: ...

    def create_customer(self, workspace_id: str, name: str) -> str: ...

    def create_subscription(self, customer_id: str, workspace_id: str, plan: str,
                            catalog: dict[str, str], start: datetime) -> str: ...

    def change_plan(self, subscription_id: str, plan: str, catalog: dict[str, str]) -> None: ...

    def move_to_prices(self, subscription_id: str, plan: str, catalog: dict[str, str]
                       ) -> int: ...

    def replace_prices(self, plan: Plan, catalog: dict[str, str]) -> dict[str, str]: ...

    def price_amounts(self, keys: list[str]) -> dict[str, Decimal]: ...

    def send_overage(self, customer_id: str, units: int, identifier: str,
                     at: datetime) -> None: ...

    def invoice_item(self, customer_id: str, amount_cents: int, description: str,
                     idempotency_key: str) -> str: ...

    def checkout(self, customer_id: str | None, workspace_id: str, pack: CreditPack,
                 catalog: dict[str, str], success_url: str, cancel_url: str) -> Checkout: ...

    def invoices(self, customer_id: str) -> list[dict]: ...

    def upcoming_invoice(self, customer_id: str) -> dict: ...

    def reported_units(self, customer_id: str, catalog: dict[str, str], start: datetime,
                       end: datetime) -> int: ...
