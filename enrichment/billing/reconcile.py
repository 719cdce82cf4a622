"""Reconciliation (daily, and `enrichment billing reconcile`): per workspace, the overage the
usage rows give now, what `usage_reports` froze, what was sent (or recorded ledger-only) and —
with Stripe — what its meter holds, for the period up to a closed day; and per day of the
period, the daily usage rollup against the usage rows it sums. Any difference is a
discrepancy (the billing-accuracy alert fires on any). Reports Stripe did not take (failed,
expired) are listed beside them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from ..config import Plans
from ..db import Conn
from ..periods import day_start, next_period_start, period_start
from .catalog import load_catalog
from .interface import Billing, BillingError, base_key, overage_key
from .report import unsent
from .usage import MONEY, compute, rollup_drift


def reconcile(conn: Conn, plans: Plans, billing: Billing, through: date,
              now: datetime | None = None) -> list[dict]:
    """The discrepancies of the period of `through`, up to that day."""
    period = period_start(day_start(through))
    # Stripe's meter up to now: a day reported after its subscription moved (or was attached
    # late) carries the time it was sent, not its own 23:59. Stripe takes summary bounds on
    # minute boundaries only.
    soon = ((now or datetime.now(UTC)) + timedelta(minutes=2)).replace(second=0, microsecond=0)
    end = min(day_start(next_period_start(period)),
              max(day_start(through + timedelta(days=1)), soon))
    computed = compute(conn, plans, period, through)
    expected = {ws: sum(d.units for d in days) for ws, days in computed.items()}
    expected_usd = {ws: sum((d.unit_price_usd * d.units for d in days), Decimal(0))
                    for ws, days in computed.items()}
    rows = conn.execute(
        "SELECT w.id, w.stripe_customer_id, coalesce(sum(r.units), 0) AS reported,"
        " coalesce(sum(r.units * r.unit_price_usd), 0) AS reported_usd,"
        " coalesce(sum(r.units) FILTER (WHERE r.status IN ('sent', 'ledger', 'invoiced')), 0)"
        " AS sent, coalesce(sum(r.units) FILTER (WHERE r.status = 'invoiced'), 0) AS invoiced"
        " FROM workspaces w LEFT JOIN usage_reports r ON r.workspace_id = w.id"
        "  AND r.period = %s AND r.day <= %s GROUP BY w.id", (period, through)).fetchall()
    catalog = load_catalog(conn) if billing.sends else {}
    problems = []
    for row in rows:
        figures: dict[str, int | str] = {
            "expected": expected.get(row["id"], 0), "reported": int(row["reported"]),
            "sent": int(row["sent"])}
        if billing.sends and row["stripe_customer_id"]:
            try:  # what the meter holds, plus what was billed as invoice items
                figures["stripe"] = billing.reported_units(
                    row["stripe_customer_id"], catalog, day_start(period), end) + int(
                    row["invoiced"])
            except BillingError as exc:
                figures["stripe"] = f"unavailable: {exc}"
        # Amounts too: the walk prices each day at the price in force at its end; a price
        # edited in place, or a day frozen at another price, differs here.
        amounts = (expected_usd.get(row["id"], Decimal(0)).quantize(MONEY),
                   Decimal(row["reported_usd"]).quantize(MONEY))
        if len(set(figures.values())) > 1 or amounts[0] != amounts[1]:
            problems.append({"workspace_id": str(row["id"]), **figures,
                             "expected_usd": str(amounts[0]), "reported_usd": str(amounts[1])})
    problems += price_problems(plans, billing)
    for drift in rollup_drift(conn, period):
        problems.append({"workspace_id": str(drift["workspace_id"]), "day":
                         drift["day"].isoformat(), "livemode": drift["livemode"],
                         "usage_rows": drift["rows"], "usage_daily": drift["rollup"]})
    return problems


def price_problems(plans: Plans, billing: Billing) -> list[dict]:
    """Stripe's prices (by lookup key) against the prices in force (the plans file's, which
    the API and workers check at start-up against the price history)."""
    if not billing.sends:
        return []
    wanted = {}
    for plan in plans.plans.values():
        wanted[base_key(plan.name)] = plan.base_usd
        wanted[overage_key(plan.name)] = plan.overage_usd
    try:
        found = billing.price_amounts(sorted(wanted))
    except BillingError as exc:
        return [{"prices": f"unavailable: {exc}"}]
    return [{"price": key, "in_force_usd": str(amount), "stripe_usd": str(found.get(key))}
            for key, amount in sorted(wanted.items()) if found.get(key) != amount]


def unsent_reports(conn: Conn) -> list[dict]:
    """Failed and expired reports, for the operator."""
    return [{"workspace_id": str(r["workspace_id"]), "day": r["day"].isoformat(),
             "units": r["units"], "amount_usd": str(r["unit_price_usd"] * r["units"]),
             "status": r["status"], "attempts": r["attempts"], "last_error": r["last_error"]}
            for r in unsent(conn)]
