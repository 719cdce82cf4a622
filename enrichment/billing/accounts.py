"""A workspace's Stripe side: its customer and subscription, and its plan history.

Stripe being down never loses a workspace or its key, and never leaves a plan change half
done for good: `attach` and `move` are retried by the billing sync beat job (`sync`) until
the workspace has a customer and its subscription is on its plan's prices.
"""

from __future__ import annotations

import logging
import uuid

from psycopg import Connection

from ..config import Plans
from .catalog import load_catalog
from .interface import Billing, BillingError, BillingNotConfigured

log = logging.getLogger(__name__)


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
    conn.execute("UPDATE workspaces SET stripe_customer_id = %s, stripe_subscription_id = %s,"
                 " stripe_plan = %s WHERE id = %s",
                 (customer, subscription, ws["plan"], workspace_id))
    return customer


def set_plan(conn: Connection, plans: Plans, workspace_id: uuid.UUID, plan: str) -> None:
    """Move a workspace to `plan` from now on, recording when (the plan history the overage
    report prices each day with)."""
    if plan not in plans:
        raise ValueError(f"unknown plan {plan!r}; known: {', '.join(plans.names)}")
    with conn.transaction():
        if conn.execute("UPDATE workspaces SET plan = %s WHERE id = %s",
                        (plan, workspace_id)).rowcount != 1:
            raise LookupError(f"no workspace {workspace_id}")
        conn.execute("INSERT INTO workspace_plans (workspace_id, effective_at, plan)"
                     " VALUES (%s, clock_timestamp(), %s)", (workspace_id, plan))


def move(conn: Connection, billing: Billing, workspace_id: uuid.UUID) -> bool:
    """Put the workspace's Stripe subscription on its plan's prices. Returns True when they
    agree (now or already); raises BillingError if Stripe refused or failed."""
    ws = conn.execute("SELECT plan, stripe_plan, stripe_subscription_id FROM workspaces"
                      " WHERE id = %s", (workspace_id,)).fetchone()
    if ws is None or ws["stripe_subscription_id"] is None:
        return False
    if ws["stripe_plan"] == ws["plan"]:
        return True
    billing.change_plan(ws["stripe_subscription_id"], ws["plan"], load_catalog(conn))
    conn.execute("UPDATE workspaces SET stripe_plan = %s WHERE id = %s AND plan = %s",
                 (ws["plan"], workspace_id, ws["plan"]))
    return True


def sync(conn: Connection, billing: Billing) -> dict[str, int]:
    """The billing sync job: attach workspaces that have no Stripe customer yet and move
    subscriptions whose plan changed. Each workspace on its own: one failure is logged and
    retried next run, never blocks the others."""
    done = {"attached": 0, "moved": 0, "failed": 0}
    if not billing.sends:
        return done
    for ws in conn.execute("SELECT id, stripe_customer_id FROM workspaces"
                           " WHERE stripe_customer_id IS NULL"
                           " OR stripe_plan IS DISTINCT FROM plan").fetchall():
        try:
            if ws["stripe_customer_id"] is None:
                attach(conn, billing, ws["id"])
                done["attached"] += 1
            elif move(conn, billing, ws["id"]):
                done["moved"] += 1
        except (BillingError, BillingNotConfigured, LookupError) as exc:
            log.warning("billing sync of workspace %s: %s (retried next run)", ws["id"], exc)
            done["failed"] += 1
    return done
