"""What a period's usage costs: included units per plan segment, credits, and overage by UTC
day — the one computation behind the usage endpoint, the nightly report and reconciliation.

The walk, per workspace and period (calendar month, UTC), day by day in order:

* The plan in force on a day is the last plan-history row effective before the day ends.
  A *segment* is a run of days on one plan. The period's first segment grants its plan's
  full monthly `included`; a segment that starts later (a plan change) grants the new plan's
  `included` prorated to the days left in the period (rounded down), and what the earlier
  segment left unused is not carried over. So no day is billed with more included units than
  the plan in force on it grants, a downgrade does not bill the units the old plan included,
  and an upgrade does not bill, at the new price, what was used before it.
* Credits (packs, net of refunds) belong to the period they were paid in and are available
  from the end of the day they were paid; they carry across segments.
* Each day's units use the segment's included units first, then credits; the rest is that
  day's overage, priced at the plan in force that day, at its overage price in force at the
  day's end (`prices.overage_on`: Stripe prices the day's meter event, timestamped 23:59, at
  the subscription's price at that moment).

For a period on one plan this equals the simple rule "overage to date = used - (included +
credits bought so far), minus what earlier days reported".

Usage is read from `usage_daily` (per workspace, mode and UTC day), which triggers keep equal to
the `enrichment_usage` rows in the statement that writes them (migration 0014): a period costs
at most 31 rows to read however many jobs it ran. `rollup_drift` checks the equality
(reconciliation runs it).
"""

from __future__ import annotations

import bisect
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from ..config import Plan, Plans, cap_for
from ..db import Conn, one
from ..jobs.units import CREDITS_IN_PERIOD, period_bounds
from ..periods import day_start, next_period_start, period_start
from . import prices

log = logging.getLogger(__name__)
MONEY = Decimal("0.01")


@dataclass
class DayReport:
    workspace_id: object
    day: date
    period: date
    plan: str
    used_to_date: int  # units used in the period through this day
    allowance: int  # included units granted so far + credits paid by the end of the day
    units: int  # overage units this day adds
    unit_price_usd: Decimal
    overage_to_date: int = 0  # overage units of the period through this day

    @property
    def identifier(self) -> str:
        return f"overage-{self.workspace_id}-{self.day.isoformat()}"


@dataclass(frozen=True)
class Segment:
    start: date
    plan: Plan


def plan_segments(conn: Conn, plans: Plans, workspace_ids: list, period: date
                  ) -> dict[object, list[Segment]]:
    """Per workspace, the plans in force during the period, as segments by first day. Days
    before a workspace's first plan (none in practice) count under that first plan."""
    out: dict[object, list[Segment]] = defaultdict(list)
    for row in conn.execute(
            "SELECT workspace_id, (effective_at AT TIME ZONE 'UTC')::date AS day, plan"
            " FROM workspace_plans WHERE workspace_id = ANY(%s)"
            " ORDER BY workspace_id, effective_at", (workspace_ids,)):
        segments = out[row["workspace_id"]]
        if segments and row["day"] >= next_period_start(period):
            continue  # later changes do not concern this period
        if row["plan"] not in plans:  # a plan since removed from the plans file
            log.warning("workspace %s: plan %r in its history is no longer configured",
                        row["workspace_id"], row["plan"])
            continue
        start = max(row["day"], period)
        if segments and segments[-1].start >= start:
            segments.pop()  # superseded before its first day in the period began
        segments.append(Segment(start, plans[row["plan"]]))
    missing = [ws for ws in workspace_ids if ws not in out]
    if missing:  # no history (rows written by hand): the current plan, never nothing
        for row in conn.execute("SELECT id, plan FROM workspaces WHERE id = ANY(%s)",
                                (missing,)):
            out[row["id"]].append(Segment(period, plans[row["plan"]]))
    return out


def grant(segment: Segment, period: date, first: bool) -> int:
    """Included units a segment grants: the period's first segment its plan's full monthly
    `included` (a workspace created mid-month too), a later one (a plan change) the new
    plan's prorated to the days left."""
    if first:
        return segment.plan.included
    days = (next_period_start(period) - period).days
    left = (next_period_start(period) - segment.start).days
    return segment.plan.included * left // days


@dataclass
class WalkEnd:
    """Where a walk ends: the current segment's included units left, credits bought and
    used."""

    included_left: int = 0
    credits_bought: int = 0
    credits_used: int = 0
    used: int = 0  # units used


def walk(workspace_id, period: date, daily: list[tuple[date, int]], segments: list[Segment],
         paid: list[tuple[datetime, int]]) -> tuple[list[DayReport], WalkEnd]:
    """The day reports of one workspace's period (see the module docstring). `daily`: units
    used per day, in order; `paid`: credit ledger rows (time, units), in order."""
    starts = [s.start for s in segments]
    paid_at = [at for at, _ in paid]
    current: Segment | None = None
    end, granted = WalkEnd(), 0
    used = overage = 0
    reports = []
    for day, units in daily:
        index = max(0, bisect.bisect_right(starts, day) - 1)
        segment = segments[index]
        if segment is not current:
            current = segment
            end.included_left = grant(segment, period, first=index == 0)
            granted += end.included_left
        end_of_day = day_start(day + timedelta(days=1))
        end.credits_bought = sum(u for _, u in paid[:bisect.bisect_left(paid_at, end_of_day)])
        from_included = min(units, end.included_left)
        end.included_left -= from_included
        from_credits = min(units - from_included,
                           max(0, end.credits_bought - end.credits_used))
        end.credits_used += from_credits
        used += units
        end.used = used
        overage += units - from_included - from_credits
        reports.append(DayReport(
            workspace_id, day, period, segment.plan.name, used, granted + end.credits_bought,
            units - from_included - from_credits, segment.plan.overage_usd, overage))
    return reports, end


# Units per workspace and UTC day, from the daily rollup (both modes: a test job's units are 0).
# Not ordered in SQL; the caller sorts the days.
DAILY = (
    "SELECT workspace_id, day, sum(units) AS units FROM usage_daily"
    " WHERE day >= %(first)s AND day <= %(last)s GROUP BY 1, 2"
)
DAILY_OF_ONE = DAILY.replace(" WHERE ", " WHERE workspace_id = %(ws)s AND ")


def compute(conn: Conn, plans: Plans, period: date, through: date, workspace_id=None,
            segments: dict[object, list[Segment]] | None = None
            ) -> dict[object, list[DayReport]]:
    """Day reports of `period` up to `through` (inclusive), per workspace with usage — every
    workspace, or one (`segments`: its plan segments, when the caller has them)."""
    end = min(through, next_period_start(period) - timedelta(days=1))
    args = {"first": period, "last": end, "ws": workspace_id}
    daily: dict[object, list[tuple[date, int]]] = defaultdict(list)
    for r in conn.execute(DAILY if workspace_id is None else DAILY_OF_ONE, args):
        daily[r["workspace_id"]].append((r["day"], int(r["units"])))
    for days in daily.values():
        days.sort()
    if not daily:
        return {}
    ids = list(daily)
    paid: dict[object, list[tuple[datetime, int]]] = defaultdict(list)
    for r in conn.execute(
            "SELECT workspace_id, created_at, units FROM credit_ledger"
            " WHERE workspace_id = ANY(%s) AND created_at >= %s AND created_at < %s"
            " ORDER BY created_at", (ids, day_start(period), day_start(end + timedelta(days=1)))):
        paid[r["workspace_id"]].append((r["created_at"], int(r["units"])))
    segments = segments or plan_segments(conn, plans, ids, period)
    in_force = prices.history(conn)
    out = {ws: walk(ws, period, days, segments[ws], paid.get(ws, []))[0]
           for ws, days in daily.items() if segments.get(ws)}
    for reports in out.values():
        for report in reports:
            report.unit_price_usd = prices.overage_on(in_force, plans[report.plan], report.day)
    return out


# The rollup beside the rows it sums, per workspace, mode and day of a period: any difference.
DRIFT = """
WITH raw AS (
  SELECT workspace_id, livemode, (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS jobs,
         sum(units) AS units, count(*) FILTER (WHERE match) AS matched,
         count(*) FILTER (WHERE NOT match) AS unmatched, sum(tokens) AS tokens,
         sum(searches) AS searches, sum(social_requests) AS social_requests,
         sum(cost_estimate_usd) AS cost_estimate_usd
  FROM enrichment_usage WHERE created_at >= %(start)s AND created_at < %(end)s GROUP BY 1, 2, 3),
rollup AS (SELECT * FROM usage_daily WHERE day >= %(first)s AND day < %(after)s)
SELECT workspace_id, livemode, day, to_jsonb(raw) - '{workspace_id,livemode,day}'::text[] AS rows,
       to_jsonb(rollup) - '{workspace_id,livemode,day}'::text[] AS rollup
FROM raw FULL JOIN rollup USING (workspace_id, livemode, day)
WHERE (raw.jobs, raw.units, raw.matched, raw.unmatched, raw.tokens, raw.searches,
       raw.social_requests, raw.cost_estimate_usd)
  IS DISTINCT FROM (rollup.jobs, rollup.units, rollup.matched, rollup.unmatched, rollup.tokens,
                    rollup.searches, rollup.social_requests, rollup.cost_estimate_usd)
ORDER BY 1, 2, 3
"""


def rollup_drift(conn: Conn, period: date) -> list[dict]:
    """Days of a period on which `usage_daily` differs from the usage rows (none, unless
    something wrote the rollup by hand or around its triggers)."""
    return conn.execute(DRIFT, {**period_bounds(period), "first": period,
                                "after": next_period_start(period)}).fetchall()


def credit_position(conn: Conn, plans: Plans, workspace_id, period: date,
                    through: date) -> WalkEnd:
    """The period's included units left and credits used, by the same walk, through a day."""
    end = min(through, next_period_start(period) - timedelta(days=1))
    bounds = {"start": day_start(period), "end": day_start(end + timedelta(days=1)),
              "first": period, "last": end, "ws": workspace_id}
    days = sorted((r["day"], int(r["units"])) for r in conn.execute(DAILY_OF_ONE, bounds))
    paid = [(r["created_at"], int(r["units"])) for r in conn.execute(
        "SELECT created_at, units FROM credit_ledger WHERE workspace_id = %(ws)s"
        " AND created_at >= %(start)s AND created_at < %(end)s ORDER BY created_at", bounds)]
    segments = plan_segments(conn, plans, [workspace_id], period)[workspace_id]
    if not days or days[-1][0] < end:  # walk to `end`: its segment's included units left
        days.append((end, 0))
    position = walk(workspace_id, period, days, segments, paid)[1]
    position.credits_bought = sum(u for _, u in paid)
    return position


def hard_cap(conn: Conn, plan: Plan, workspace_id, period: date,
             plan_since: datetime | None) -> int:
    """Units the period may use before credits: included + 50%, by the plan in force. After
    a plan change in the period: what was used before it, plus the current plan's prorated
    grant and half again — a downgraded workspace can use what its new plan grants."""
    if plan_since is None or plan_since < day_start(period):
        return plan.hard_cap
    start = plan_since.astimezone(UTC).date()
    before = one(conn.execute(
        "SELECT coalesce(sum(units), 0) AS n FROM usage_daily WHERE workspace_id = %s"
        " AND day >= %s AND day < %s", (workspace_id, period, start)))["n"]
    granted = grant(Segment(start, plan), period, first=start <= period)
    return int(before) + cap_for(granted)


# A mode's usage rows of a period, summed from the daily rollup (at most 31 rows).
TOTALS = (
    "SELECT coalesce(sum(units), 0) AS used, coalesce(sum(tokens), 0) AS tokens,"
    " coalesce(sum(searches), 0) AS searches,"
    " coalesce(sum(social_requests), 0) AS social_requests,"
    " coalesce(sum(cost_estimate_usd), 0) AS cost, coalesce(sum(matched), 0) AS matched,"
    " coalesce(sum(unmatched), 0) AS unmatched{extra} FROM usage_daily"
    " WHERE workspace_id = %(ws)s AND livemode = {mode} AND day >= %(period)s"
    " AND day < %(after)s"
)
# Live: with the period's credits and reserved units, in the same round trip.
LIVE_TOTALS = TOTALS.format(mode="true", extra=(
    ", " + CREDITS_IN_PERIOD + " AS credits, (SELECT reserved FROM usage_counters"  # noqa: S608
    " WHERE workspace_id = %(ws)s AND period = %(period)s) AS reserved"))
TEST_TOTALS = TOTALS.format(mode="false", extra="")


def usage_summary(conn: Conn, plans: Plans, workspace: dict, now: datetime,
                  livemode: bool = True) -> dict:
    """The usage endpoint's body for the current period, from the same walk as billing (test
    mode: `sandbox_usage`)."""
    plan = plans[workspace["plan"]]
    period = period_start(now)
    bounds = period_bounds(period)
    if not livemode:
        return sandbox_usage(conn, plan, workspace, period)
    row = one(conn.execute(LIVE_TOTALS, {"ws": workspace["id"], "period": period,
                                         "after": next_period_start(period), **bounds}))
    credit_units, reserved = int(row["credits"]), int(row["reserved"] or 0)
    of_plans = plan_segments(conn, plans, [workspace["id"]], period)
    segments = of_plans.get(workspace["id"], [])
    included = sum(grant(s, period, first=i == 0) for i, s in enumerate(segments)) or (
        plan.included)
    # On one plan all period, units within its included ones cannot be overage: no walk.
    days = [] if len(segments) <= 1 and int(row["used"]) <= included else compute(
        conn, plans, period, now.date(), workspace["id"], of_plans).get(workspace["id"], [])
    overage = sum(d.units for d in days)
    cap = hard_cap(conn, plan, workspace["id"], period, workspace.get("plan_since")
                   ) + credit_units
    return {
        "workspace_id": str(workspace["id"]),
        "plan": plan.name,
        "period": {"start": period.isoformat(), "end": next_period_start(period).isoformat()},
        "included": included,
        "credits": credit_units,
        "used": int(row["used"]),
        "reserved": reserved,
        "overage_units": overage,
        "overage_unit_price_usd": str(plan.overage_usd),
        "overage_cost_usd": str(sum((d.unit_price_usd * d.units for d in days), Decimal(0))
                                .quantize(MONEY)),
        "hard_cap": cap,
        "remaining": max(0, cap - reserved),
        "tokens": int(row["tokens"]),
        "searches": int(row["searches"]),
        "social_requests": int(row["social_requests"]),
        "cost_estimate_usd": str(Decimal(row["cost"]).quantize(MONEY)),
        "matched": int(row["matched"]),  # jobs that found something (charged; cached: not)
        "unmatched": int(row["unmatched"]),  # succeeded jobs that found nothing (not charged)
        "livemode": True,
    }


def sandbox_usage(conn: Conn, plan: Plan, workspace: dict, period: date) -> dict:
    """Test mode's usage: nothing is reserved, capped or billed; `used` counts the test jobs
    live mode would have charged: the matches (a cached answer's usage row has no `match`)."""
    row = one(conn.execute(TEST_TOTALS, {"ws": workspace["id"], "period": period,
                                         "after": next_period_start(period)}))
    return {
        "workspace_id": str(workspace["id"]), "plan": plan.name,
        "period": {"start": period.isoformat(), "end": next_period_start(period).isoformat()},
        "included": plan.included, "credits": 0, "used": int(row["matched"]), "reserved": 0,
        "overage_units": 0, "overage_unit_price_usd": str(plan.overage_usd),
        "overage_cost_usd": "0.00", "hard_cap": plan.hard_cap, "remaining": plan.hard_cap,
        "tokens": int(row["tokens"]), "searches": int(row["searches"]),
        "social_requests": int(row["social_requests"]),
        "cost_estimate_usd": str(Decimal(row["cost"]).quantize(MONEY)),
        "matched": int(row["matched"]), "unmatched": int(row["unmatched"]), "livemode": False,
    }
