"""The Stripe catalog (meter, products, prices) as stored here: lookup key → Stripe id."""

from __future__ import annotations

from ..config import Plans
from ..db import Conn
from .interface import Billing


def save_catalog(conn: Conn, catalog: dict[str, str]) -> None:
    with conn.transaction():
        for key, stripe_id in catalog.items():
            conn.execute("INSERT INTO billing_catalog (key, stripe_id) VALUES (%s, %s)"
                         " ON CONFLICT (key) DO UPDATE SET stripe_id = excluded.stripe_id,"
                         " synced_at = now()", (key, stripe_id))


def load_catalog(conn: Conn) -> dict[str, str]:
    return {r["key"]: r["stripe_id"] for r in conn.execute(
        "SELECT key, stripe_id FROM billing_catalog")}


def sync_catalog(conn: Conn, billing: Billing, plans: Plans) -> dict[str, str]:
    """Create in Stripe what the plans file needs and is missing, and store it. Idempotent."""
    catalog = billing.sync_catalog(plans)
    save_catalog(conn, catalog)
    return catalog
