"""Billing operations on our side: the stored Stripe catalog, attaching a workspace, credit
pack checkout, Stripe webhook events (each handled once), reconciliation."""

from __future__ import annotations

import logging
import uuid
from datetime import date, timedelta

from psycopg import Connection

from .admission import day_start, next_period_start, period_start
from .billing import Billing, Checkout
from .config import Plans
from .events import Events
from .metering import compute_reports

log = logging.getLogger(__name__)


def save_catalog(conn: Connection, catalog: dict[str, str]) -> None:
    with conn.transaction():
        for key, stripe_id in catalog.items():
            conn.execute("INSERT INTO billing_catalog (key, stripe_id) VALUES (%s, %s)"
                         " ON CONFLICT (key) DO UPDATE SET stripe_id = excluded.stripe_id,"
                         " synced_at = now()", (key, stripe_id))


def load_catalog(conn: Connection) -> dict[str, str]:
    return {r["key"]: r["stripe_id"] for r in conn.execute(
        "SELECT key, stripe_id FROM billing_catalog")}


def attach(conn: Connection, billing: Billing, workspace_id: uuid.UUID) -> str:
    """Create the workspace's Stripe customer and subscription (once)."""
    ws = conn.execute("SELECT id, name, plan, stripe_customer_id FROM workspaces"
                      " WHERE id = %s", (workspace_id,)).fetchone()
    if ws is None:
        raise LookupError(f"no workspace {workspace_id}")
    if ws["stripe_customer_id"]:
        return ws["stripe_customer_id"]
    catalog = load_catalog(conn)
    if "meter" not in catalog:
        raise LookupError("no Stripe catalog yet: run `enrichment billing sync-catalog`")
    customer, subscription = billing.attach(str(ws["id"]), ws["name"], ws["plan"], catalog)
    conn.execute("UPDATE workspaces SET stripe_customer_id = %s, stripe_subscription_id = %s"
                 " WHERE id = %s", (customer, subscription, workspace_id))
    return customer


def start_checkout(conn: Connection, billing: Billing, plans: Plans, workspace_id: uuid.UUID,
                   pack_name: str, return_url: str) -> Checkout:
    pack = plans.packs[pack_name]
    customer = conn.execute("SELECT stripe_customer_id FROM workspaces WHERE id = %s",
                            (workspace_id,)).fetchone()["stripe_customer_id"]
    return billing.checkout(customer, str(workspace_id), pack, load_catalog(conn),
                            f"{return_url}?checkout=success", f"{return_url}?checkout=cancel")


# --- webhooks --------------------------------------------------------------------------------

def handle_event(conn: Connection, plans: Plans, events: Events, event: dict) -> str:
    """Apply one verified Stripe event once (event ids are recorded; a redelivery does
    nothing). Returns what was done."""
    handler = HANDLERS.get(event["type"])
    with conn.transaction():
        first = conn.execute("INSERT INTO stripe_events (id, type) VALUES (%s, %s)"
                             " ON CONFLICT DO NOTHING", (event["id"], event["type"])).rowcount
        if not first:
            return "duplicate"
        if handler is None:
            return "ignored"
        outcome = handler(conn, plans, event["data"]["object"])
    if outcome and event["type"] == "checkout.session.completed":
        workspace_id, pack, units = outcome
        events.capture("credit_pack_purchased", workspace_id, {"pack": pack, "units": units})
    return "handled"


def _checkout_completed(conn: Connection, plans: Plans, session: dict):
    meta = session.get("metadata") or {}
    workspace_id, pack = meta.get("workspace_id"), meta.get("pack")
    if session.get("payment_status") != "paid" or pack not in plans.packs or not workspace_id:
        log.warning("checkout session %s: nothing to credit", session.get("id"))
        return None
    units = plans.packs[pack].units
    added = conn.execute(
        "INSERT INTO credit_ledger (workspace_id, units, reason, checkout_session_id)"
        " SELECT id, %s, %s, %s FROM workspaces WHERE id = %s"
        " ON CONFLICT (checkout_session_id) DO NOTHING",
        (units, f"credit pack {pack}", session["id"], workspace_id)).rowcount
    return (workspace_id, pack, units) if added else None


def _invoice(conn: Connection, plans: Plans, invoice: dict):
    conn.execute(
        "INSERT INTO invoices (id, workspace_id, status, amount_due, amount_paid, currency)"
        " SELECT %s, id, %s, %s, %s, %s FROM workspaces WHERE stripe_customer_id = %s"
        " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
        " amount_due = excluded.amount_due, amount_paid = excluded.amount_paid,"
        " updated_at = now()",
        (invoice["id"], invoice["status"], invoice.get("amount_due", 0),
         invoice.get("amount_paid", 0), invoice.get("currency", "usd"), invoice["customer"]))


def _payment_failed(conn: Connection, plans: Plans, invoice: dict):
    _invoice(conn, plans, invoice | {"status": "payment_failed"})
    log.warning("invoice %s of customer %s: payment failed", invoice["id"], invoice["customer"])


HANDLERS = {
    "checkout.session.completed": _checkout_completed,
    "invoice.finalized": _invoice,
    "invoice.paid": _invoice,
    "invoice.payment_failed": _payment_failed,
}


# --- reconciliation --------------------------------------------------------------------------

def reconcile(conn: Connection, plans: Plans, billing: Billing, through: date) -> list[dict]:
    """Compare, per workspace, for the period of `through` up to that day: the overage the
    usage rows give now, what usage_reports froze, what was sent (or recorded ledger-only) and
    — with Stripe — what its meter holds. Returns the discrepancies (the seed: alert on any)."""
    period = period_start(day_start(through))
    end = day_start(min(through + timedelta(days=1), next_period_start(period)))
    expected: dict = {}
    for r in compute_reports(conn, plans, period, through, fresh=True):
        expected[r.workspace_id] = expected.get(r.workspace_id, 0) + r.units
    rows = conn.execute(
        "SELECT w.id, w.stripe_customer_id, coalesce(sum(r.units), 0) AS reported,"
        " coalesce(sum(r.units) FILTER (WHERE r.status IN ('sent', 'ledger')), 0) AS sent"
        " FROM workspaces w LEFT JOIN usage_reports r ON r.workspace_id = w.id"
        "  AND r.period = %s AND r.day <= %s GROUP BY w.id", (period, through)).fetchall()
    catalog = load_catalog(conn) if billing.sends else {}
    problems = []
    for row in rows:
        figures = {"expected": expected.get(row["id"], 0), "reported": int(row["reported"]),
                   "sent": int(row["sent"])}
        if billing.sends and row["stripe_customer_id"]:
            figures["stripe"] = billing.reported_units(row["stripe_customer_id"], catalog,
                                                       day_start(period), end)
        if len(set(figures.values())) > 1:
            problems.append({"workspace_id": str(row["id"]), **figures})
    return problems
