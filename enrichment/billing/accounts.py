"""A workspace's Stripe side: its customer and subscription, and its plan history.

Stripe being down never loses a workspace or its key, and never leaves a plan change half
done for good: `attach` and `move` are retried by the billing sync beat job (`sync`) until
the workspace has a customer and its subscription is on its plan's prices.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..config import Plans
from ..db import Conn
from ..errors import EnrichmentError, Invalid, NotFound
from ..workspaces import prefixes
from .catalog import load_catalog
from .interface import Billing

if TYPE_CHECKING:
    from ..authguard import KeyCache

log = logging.getLogger(__name__)


def attach(conn: Conn, billing: Billing, workspace_id: uuid.UUID) -> str:
    """Create the workspace's Stripe customer and subscription (once). The customer is
    stored before the subscription is asked for: a retry never makes a second customer."""
    ws = conn.execute("SELECT id, name, plan, created_at, stripe_customer_id,"
                      " stripe_subscription_id FROM workspaces WHERE id = %s",
                      (workspace_id,)).fetchone()
    if ws is None:
        raise NotFound(f"no workspace {workspace_id}")
    if ws["stripe_subscription_id"]:
        return ws["stripe_customer_id"]
    catalog = load_catalog(conn)
    if "meter" not in catalog:
        raise EnrichmentError("no Stripe catalog yet: run `enrichment billing sync-catalog`",
                              status=409, title="Conflict", slug="no-stripe-catalog")
    customer = ws["stripe_customer_id"]
    if customer is None:
        customer = billing.create_customer(str(ws["id"]), ws["name"])
        with conn.transaction():
            conn.execute("UPDATE workspaces SET stripe_customer_id = %s WHERE id = %s",
                         (customer, workspace_id))
    subscription = billing.create_subscription(customer, str(ws["id"]), ws["plan"], catalog,
                                               ws["created_at"])
    with conn.transaction():
        conn.execute("UPDATE workspaces SET stripe_subscription_id = %s, stripe_plan = %s,"
                     " stripe_plan_at = created_at WHERE id = %s",
                     (subscription, ws["plan"], workspace_id))
    return customer


def set_plan(conn: Conn, cache: KeyCache, plans: Plans, workspace_id: uuid.UUID,
             plan: str, now: datetime | None = None) -> bool:
    """Move a workspace to `plan` from `now` on (the service clock), recording when (the plan
    history the overage report prices each day with); its keys' cache entries are marked
    stale around it, so the next requests get the new plan's limits and cap. Returns False
    when it already is on that plan."""
    now = now or datetime.now(UTC)
    if plan not in plans:
        raise Invalid({"plan": [f"unknown plan {plan!r}; known: {', '.join(plans.names)}"]})
    with cache.changing(lambda: prefixes(conn, workspace_id)), conn.transaction():
        row = conn.execute("SELECT plan FROM workspaces WHERE id = %s FOR NO KEY UPDATE",
                           (workspace_id,)).fetchone()
        if row is None:
            raise NotFound(f"no workspace {workspace_id}")
        if row["plan"] == plan:
            return False
        conn.execute("UPDATE workspaces SET plan = %s, plan_since = %s WHERE id = %s",
                     (plan, now, workspace_id))
        conn.execute("INSERT INTO workspace_plans (workspace_id, effective_at, plan)"
                     " VALUES (%s, %s, %s) ON CONFLICT (workspace_id, effective_at)"
                     " DO UPDATE SET plan = excluded.plan", (workspace_id, now, plan))
    return True


def move(conn: Conn, billing: Billing, workspace_id: uuid.UUID,
         now: datetime | None = None) -> bool:
    """Put the workspace's Stripe subscription on its plan's prices. Returns True when they
    agree (now or already); raises BillingError if Stripe refused or failed. Moves of one
    workspace are serialised (an advisory lock, so admissions are not held up by the call to
    Stripe); what is recorded is the plan Stripe was moved to — if the plan changed
    meanwhile, the sync job moves it again."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('stripe-move'),"
                     " hashtext(%s::text))", (workspace_id,))
        ws = conn.execute("SELECT plan, stripe_plan, stripe_subscription_id FROM workspaces"
                          " WHERE id = %s", (workspace_id,)).fetchone()
        if ws is None or ws["stripe_subscription_id"] is None:
            return False
        if ws["stripe_plan"] == ws["plan"]:
            return True
        billing.change_plan(ws["stripe_subscription_id"], ws["plan"], load_catalog(conn))
        # When, by the service clock (the one meter-event times are judged by).
        conn.execute("UPDATE workspaces SET stripe_plan = %s, stripe_plan_at = %s"
                     " WHERE id = %s", (ws["plan"], now or datetime.now(UTC), workspace_id))
    return True


def sync(conn: Conn, billing: Billing, now: datetime | None = None) -> dict[str, int]:
    """The billing sync job: attach workspaces that have no Stripe customer yet and move
    subscriptions whose plan changed. Each workspace on its own: one failure is logged and
    retried next run, never blocks the others."""
    done = {"attached": 0, "moved": 0, "failed": 0}
    if not billing.sends:
        return done
    for ws in conn.execute("SELECT id, stripe_subscription_id FROM workspaces"
                           " WHERE stripe_subscription_id IS NULL"
                           " OR stripe_plan IS DISTINCT FROM plan").fetchall():
        try:
            if ws["stripe_subscription_id"] is None:
                attach(conn, billing, ws["id"])
                done["attached"] += 1
            elif move(conn, billing, ws["id"], now):
                done["moved"] += 1
        except EnrichmentError as exc:
            log.warning("billing sync of workspace %s: %s (retried next run)", ws["id"], exc)
            done["failed"] += 1
    return done
