"""Plan prices in force, with their history: the one owner of `plan_prices`.

A plan's base fee and overage price are data in the plans file, but once they are synced to
Stripe they are also Stripe prices, which never change amount: a price changes by a new price
that takes over the lookup key, the subscriptions moved to it, the old one archived (kept:
past invoices name it). So:

* `record_first` records a plan's prices the first time, as in force since always: as
  Stripe holds them when the catalog is synced (`enrichment billing sync-catalog`), else as
  the plans file says when the API or a worker starts;
* `check` is the start-up check — the API and the workers refuse to start while the plans
  file disagrees with the prices in force (an in-place edit would make invoices disagree
  with the usage endpoint);
* `change` is `enrichment billing change-price PLAN`: the Stripe way, then the new prices in
  force from now on (resumable: a rerun moves the subscriptions a failure left behind);
* `overage_on` prices a day's overage at the price in force at the day's end, where the
  day's meter event is timestamped (23:59) — the billing walk uses it. (Stripe's classic
  billing mode bills a metered item's usage before a mid-period price change not at all:
  docs/operations.md#changing-a-price.)
"""

from __future__ import annotations

import bisect
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from ..config import Plan, Plans
from ..db import Conn
from ..errors import EnrichmentError
from ..periods import day_start
from . import catalog
from .interface import Billing, BillingError, base_key, overage_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Price:
    base_usd: Decimal
    overage_usd: Decimal
    effective_at: datetime


History = dict[str, list[Price]]  # per plan, oldest first


def history(conn: Conn) -> History:
    out: History = defaultdict(list)
    for r in conn.execute("SELECT plan, base_usd, overage_usd, effective_at FROM plan_prices"
                          " ORDER BY plan, effective_at"):
        out[r["plan"]].append(Price(r["base_usd"], r["overage_usd"], r["effective_at"]))
    return out


def overage_on(prices: History, plan: Plan, day: date) -> Decimal:
    """The overage price in force at the end of `day` (the plans file's for a plan never
    recorded)."""
    rows = prices.get(plan.name) or []
    if not rows:
        return plan.overage_usd
    i = bisect.bisect_left([p.effective_at for p in rows], day_start(day + timedelta(days=1)))
    return rows[max(i, 1) - 1].overage_usd


ALWAYS = datetime(1970, 1, 1, tzinfo=UTC)  # a first recorded price: in force since always


def record_first(conn: Conn, plans: Plans, amounts: dict[str, Decimal] | None = None) -> None:
    """Each plan's prices, the first time (a plan already recorded keeps its history): as
    Stripe holds them (`amounts`, by lookup key) or as the plans file says."""
    amounts = amounts or {}
    for plan in plans.plans.values():
        conn.execute("INSERT INTO plan_prices (plan, base_usd, overage_usd, effective_at)"
                     " SELECT %s, %s, %s, %s WHERE NOT EXISTS"
                     " (SELECT 1 FROM plan_prices WHERE plan = %s) ON CONFLICT DO NOTHING",
                     (plan.name, amounts.get(base_key(plan.name), plan.base_usd),
                      amounts.get(overage_key(plan.name), plan.overage_usd), ALWAYS,
                      plan.name))


def sync_catalog(conn: Conn, billing: Billing, plans: Plans) -> dict[str, str]:
    """Create in Stripe what the plans file needs and is missing (`catalog.sync_catalog`),
    and record each plan's prices as Stripe holds them the first time — so a price Stripe
    already had at another amount shows as a mismatch (the start-up check), not as a new
    price. A plan already recorded keeps its history."""
    stored = catalog.sync_catalog(conn, billing, plans)
    record_first(conn, plans, billing.price_amounts(sorted(
        k for p in plans.names for k in (base_key(p), overage_key(p)))))
    return stored


def mismatches(conn: Conn, plans: Plans) -> list[str]:
    """Plans whose prices in the plans file differ from the prices in force."""
    found = []
    for name, rows in history(conn).items():
        plan, now = plans.plans.get(name), rows[-1]
        if plan is None:
            continue
        for what, file_value, in_force in (("base_usd", plan.base_usd, now.base_usd),
                                           ("overage_usd", plan.overage_usd, now.overage_usd)):
            if file_value != in_force:
                since = "" if now.effective_at == ALWAYS else (
                    f" (since {now.effective_at:%Y-%m-%d %H:%M}Z)")
                found.append(f"plan {name}: {what} is {file_value} in the plans file, but"
                             f" {in_force} is in force{since}")
    return found


class PricesChanged(EnrichmentError):
    """The plans file changed a price in place."""


def check(conn: Conn, plans: Plans) -> None:
    """The start-up check: PricesChanged if the plans file changed a recorded price in place.
    A plan not recorded yet (a new plan, a first start) is recorded as the file says."""
    record_first(conn, plans)
    if found := mismatches(conn, plans):
        raise PricesChanged(
            "; ".join(found) + ". A recorded price is changed with `enrichment billing"
            " change-price PLAN` (a new Stripe price, subscriptions moved, history kept), not"
            " by editing the plans file alone: see docs/operations.md#changing-a-price")


@dataclass
class Changed:
    plan: str
    prices: dict[str, str]  # lookup key → the new Stripe price
    moved: int  # subscriptions moved to the new prices
    failed: list[dict]  # subscriptions that could not be moved (rerun the command)
    recorded: bool  # a new row of prices in force


def change(conn: Conn, billing: Billing, plans: Plans, plan_name: str,
           now: datetime) -> Changed:
    """Make the plans file's prices for `plan_name` the prices in force: new Stripe prices
    (taking over the lookup keys; the old ones archived), the plan's subscriptions moved to
    them, a history row dated `now`. Ledger-only: the history row alone."""
    plan = plans[plan_name]
    new: dict[str, str] = {}
    if billing.sends:
        synced = catalog.load_catalog(conn)
        if "meter" not in synced:
            raise EnrichmentError("no Stripe catalog yet: run `enrichment billing sync-catalog`")
        new = billing.replace_prices(plan, synced)
        catalog.save_catalog(conn, new)
    rows = history(conn).get(plan_name) or []
    recorded = not rows or (rows[-1].base_usd, rows[-1].overage_usd) != (
        plan.base_usd, plan.overage_usd)
    if recorded:
        conn.execute("INSERT INTO plan_prices (plan, base_usd, overage_usd, effective_at)"
                     " VALUES (%s, %s, %s, %s)",
                     (plan_name, plan.base_usd, plan.overage_usd, now))
    moved, failed = 0, []
    if billing.sends:
        synced = catalog.load_catalog(conn)
        # Only subscriptions on this plan's prices: one whose plan move is pending is moved by
        # `accounts.move` (with the plan change's proration), under the same lock.
        for ws in conn.execute(
                "SELECT id, stripe_subscription_id FROM workspaces WHERE plan = %s"
                " AND stripe_plan = plan AND stripe_subscription_id IS NOT NULL ORDER BY id",
                (plan_name,)).fetchall():
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext('stripe-move'),"
                                 " hashtext(%s::text))", (ws["id"],))
                    moved += billing.move_to_prices(ws["stripe_subscription_id"], plan_name,
                                                    synced)
            except BillingError as exc:
                log.error("workspace %s: subscription not moved to the new prices: %s",
                          ws["id"], exc)
                failed.append({"workspace_id": str(ws["id"]), "error": str(exc)})
    return Changed(plan_name, new, moved, failed, recorded)
