"""Usage, overage and the nightly report (DESIGN §3, issue: billing accuracy 100%).

Overage of a closed UTC day d in period P (calendar month):
    allowance(d) = included + credit units bought in P by the end of d
    overage to date = max(0, units used in P through d - allowance(d))
    units reported for d = max(0, overage to date - units already reported for earlier days)
computed in day order. Each (workspace, day) with usage is FROZEN into `usage_reports` before
anything is sent; sending then walks the pending rows one at a time under FOR UPDATE SKIP
LOCKED (two runs never send one row twice) with a stable identifier that is also the
Idempotency-Key; Stripe's duplicate-identifier answer counts as sent. So a re-run sends
nothing new, a crash between Stripe accepting and our commit is settled by the next run, a
missed night is caught up, and concurrent runs share the work.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from psycopg import Connection
from psycopg_pool import ConnectionPool

from .admission import day_start, next_period_start, period_start
from .billing import Billing
from .config import Plans
from .events import Events

log = logging.getLogger(__name__)
MONEY = Decimal("0.01")


def usage_summary(conn: Connection, plans: Plans, workspace: dict, now: datetime) -> dict:
    """The usage endpoint's body for the current period, from the rows."""
    plan = plans[workspace["plan"]]
    period = period_start(now)
    row = conn.execute(
        "SELECT coalesce(sum(units), 0) AS used, coalesce(sum(tokens), 0) AS tokens,"
        " coalesce(sum(searches), 0) AS searches,"
        " coalesce(sum(social_requests), 0) AS social_requests,"
        " coalesce(sum(cost_estimate_usd), 0) AS cost"
        " FROM enrichment_usage WHERE workspace_id = %s AND created_at >= %s AND created_at < %s",
        (workspace["id"], day_start(period), day_start(next_period_start(period)))).fetchone()
    extra = conn.execute(
        "SELECT (SELECT coalesce(sum(units), 0) FROM credit_ledger WHERE workspace_id = %(ws)s"
        "        AND created_at >= %(start)s) AS credits,"
        " (SELECT coalesce(reserved, 0) FROM usage_counters WHERE workspace_id = %(ws)s"
        "        AND period = %(period)s) AS reserved",
        {"ws": workspace["id"], "start": day_start(period), "period": period}).fetchone()
    credits, reserved = int(extra["credits"]), int(extra["reserved"] or 0)
    used = int(row["used"])
    overage = max(0, used - plan.included - credits)
    hard_cap = plan.hard_cap + credits
    return {
        "workspace_id": str(workspace["id"]),
        "plan": plan.name,
        "period": {"start": period.isoformat(), "end": next_period_start(period).isoformat()},
        "included": plan.included,
        "credits": credits,
        "used": used,
        "reserved": reserved,
        "overage_units": overage,
        "overage_unit_price_usd": str(plan.overage_usd),
        "overage_cost_usd": str((plan.overage_usd * overage).quantize(MONEY)),
        "hard_cap": hard_cap,
        "remaining": max(0, hard_cap - reserved),
        "tokens": int(row["tokens"]),
        "searches": int(row["searches"]),
        "social_requests": int(row["social_requests"]),
        "cost_estimate_usd": str(Decimal(row["cost"]).quantize(MONEY)),
    }


@dataclass
class DayReport:
    workspace_id: object
    day: date
    period: date
    used_to_date: int
    allowance: int
    units: int
    unit_price_usd: Decimal

    @property
    def identifier(self) -> str:
        return f"overage-{self.workspace_id}-{self.day.isoformat()}"


def compute_reports(conn: Connection, plans: Plans, period: date, through: date,
                    fresh: bool = False) -> list:
    """Reports for every day of `period` up to `through` (inclusive) with usage that has not
    been frozen yet (all of them with `fresh`), in day order, per workspace."""
    end = min(through, next_period_start(period) - timedelta(days=1))
    daily = conn.execute(
        "SELECT u.workspace_id, (u.created_at AT TIME ZONE 'UTC')::date AS day,"
        " sum(u.units) AS units FROM enrichment_usage u"
        " WHERE u.created_at >= %s AND u.created_at < %s"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        (day_start(period), day_start(end + timedelta(days=1)))).fetchall()
    if not daily:
        return []
    frozen = {} if fresh else {
        r["workspace_id"]: (r["last_day"], int(r["reported"])) for r in conn.execute(
            "SELECT workspace_id, max(day) AS last_day, sum(units) AS reported"
            " FROM usage_reports WHERE period = %s GROUP BY 1", (period,))}
    credits: dict = defaultdict(list)
    for r in conn.execute(
            "SELECT workspace_id, created_at, units FROM credit_ledger"
            " WHERE units > 0 AND created_at >= %s AND created_at < %s ORDER BY created_at",
            (day_start(period), day_start(end + timedelta(days=1)))):
        credits[r["workspace_id"]].append((r["created_at"], int(r["units"])))
    workspaces = {r["id"]: plans[r["plan"]] for r in conn.execute(
        "SELECT id, plan FROM workspaces WHERE id = ANY(%s)",
        (list({r["workspace_id"] for r in daily}),))}
    reports = []
    current, cum, reported, last_day = None, 0, 0, None
    for row in daily:
        ws = row["workspace_id"]
        if ws != current:
            current, cum = ws, 0
            last_day, reported = frozen.get(ws, (None, 0))
        cum += int(row["units"])
        if (last_day is not None and row["day"] <= last_day) or ws not in workspaces:
            continue
        plan = workspaces[ws]
        end_of_day = day_start(row["day"] + timedelta(days=1))
        bought = sum(u for at, u in credits.get(ws, ()) if at < end_of_day)
        allowance = plan.included + bought
        units = max(0, max(0, cum - allowance) - reported)
        reported += units
        reports.append(DayReport(ws, row["day"], period, cum, allowance, units, plan.overage_usd))
    return reports


def freeze(conn: Connection, plans: Plans, through: date) -> int:
    """Freeze the reports of every closed day up to `through`, in this period and the one
    before (a missed month end is caught up). Concurrent runs insert each row once."""
    count = 0
    for period in (period_start(day_start(through.replace(day=1) - timedelta(days=1))),
                   period_start(day_start(through))):
        with conn.transaction():
            # One freezer per period at a time: the second waits, then finds the days frozen.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('freeze'), %s)",
                         (period.toordinal(),))
            # Aggregating a period of every workspace: sort and hash in memory, not on disk.
            conn.execute("SET LOCAL work_mem = '64MB'")
            reports = compute_reports(conn, plans, period, through)
            with conn.cursor().copy(
                    "COPY usage_reports (workspace_id, day, period, used_to_date, allowance,"
                    " units, unit_price_usd, identifier, status) FROM STDIN") as copy:
                for r in reports:
                    copy.write_row((r.workspace_id, r.day, r.period, r.used_to_date,
                                    r.allowance, r.units, r.unit_price_usd, r.identifier,
                                    "pending" if r.units else "none"))
            count += len(reports)
    return count


def send_pending(pool: ConnectionPool, billing: Billing, events: Events,
                 batch: int = 100) -> dict[str, int]:
    """Send each pending report once, in batches locked with FOR UPDATE SKIP LOCKED (two runs
    never take the same rows). Returns counts by outcome. Reports of workspaces without a
    Stripe customer stay pending (reconciliation shows them) until it is attached."""
    done: dict[str, int] = defaultdict(int)
    while True:
        marked, failed = [], False
        with pool.connection() as conn, conn.transaction():
            rows = conn.execute(
                "SELECT r.*, w.plan, w.stripe_customer_id FROM usage_reports r"
                " JOIN workspaces w ON w.id = r.workspace_id"
                " WHERE r.status = 'pending' AND (NOT %s OR w.stripe_customer_id IS NOT NULL)"
                " ORDER BY r.day, r.workspace_id LIMIT %s FOR UPDATE OF r SKIP LOCKED",
                (billing.sends, batch)).fetchall()
            for row in rows:
                status = "ledger"
                if billing.sends:
                    try:
                        billing.send_overage(row["stripe_customer_id"], row["units"],
                                             row["identifier"],
                                             day_start(row["day"]) + timedelta(hours=23,
                                                                               minutes=59))
                        status = "sent"
                    except Exception as exc:
                        conn.execute("UPDATE usage_reports SET attempts = attempts + 1,"
                                     " last_error = %s WHERE workspace_id = %s AND day = %s",
                                     (str(exc)[:500], row["workspace_id"], row["day"]))
                        log.warning("overage report %s not sent: %s", row["identifier"], exc)
                        done["failed"] += 1
                        failed = True  # Stripe is unhappy: stop here, the next run goes on
                        break
                conn.execute("UPDATE usage_reports SET status = %s, sent_at = now(),"
                             " attempts = attempts + 1, last_error = NULL"
                             " WHERE workspace_id = %s AND day = %s",
                             (status, row["workspace_id"], row["day"]))
                marked.append((row, status))
        for row, status in marked:  # committed: now tell the world, once per report
            done[status] += 1
            events.capture("enrichment_overage_billed", str(row["workspace_id"]), {
                "plan": row["plan"], "day": row["day"].isoformat(), "units": row["units"],
                "amount_usd": str((row["unit_price_usd"] * row["units"]).quantize(MONEY)),
                "sent_to_stripe": status == "sent"})
        if failed or len(rows) < batch:
            return dict(done)


def report(pool: ConnectionPool, plans: Plans, billing: Billing, events: Events,
           through: date, today: date) -> dict:
    """The nightly overage report for closed days up to `through`."""
    if through >= today:
        raise ValueError(f"{through} has not ended yet (UTC); the latest closed day is "
                         f"{today - timedelta(days=1)}")
    with pool.connection() as conn:
        frozen = freeze(conn, plans, through)
    return {"frozen": frozen, **send_pending(pool, billing, events)}
