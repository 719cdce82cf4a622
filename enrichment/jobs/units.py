"""The units ledger: the one owner of a workspace's units — the only writer of
`usage_counters` and `credit_ledger`, and of what a refund still owes (`credit_reversals.owed`).

Per workspace and billing period (calendar month, UTC) one counter row: `reserved` counts the
units held by its unfinished jobs plus the units charged. The rules (docs/architecture.md,
"Invariants and their owners"):

* **reserve** — one unit per admitted job, only while `reserved + 1 ≤ hard cap + credits` of
  the period; so charged + reserved never exceeds the cap.
* **charge** — a job that found something keeps its unit: its usage row says `units = 1`.
  Nothing is written here: the unit was counted when it was reserved.
* **release** — a job that ends without a charge (no match, failed, dead, suppressed) or is
  erased unfinished gives its unit back, once: the caller's fenced transition of the job out of
  an unfinished state is what makes it once.
* **one period per unit** — a unit is reserved in the period the job was admitted in. A job
  that first runs in a later period *moves* its unit at claim (released in the old period,
  reserved in the new one under that period's cap, or the job fails `hard-cap-reached` before
  any provider is paid), and its usage row is dated by its finish, clamped into the period
  of its unit (`charge_time`): every charged unit was reserved in its own period.
* **credit** — a paid pack adds its units to the period it was paid in.
* **take back** — a refund or lost dispute takes back at once what of the pack is free (not
  used, not reserved). What was then only reserved by unfinished jobs is *owed*: each unit of a
  job admitted before the reversal that comes back in that period pays the debt first (a -1
  credit row), so refunded credit never becomes spendable again. A period that has ended
  takes nothing back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from ..db import Conn, one
from ..periods import day_start, next_period_start, period_start

# Credit units of a period (bought, less what refunds and lost disputes took back).
# Parameters: %(ws)s, %(start)s, %(end)s (period_bounds).
CREDITS_IN_PERIOD = (
    "(SELECT coalesce(sum(units), 0) FROM credit_ledger WHERE workspace_id = %(ws)s"
    " AND created_at >= %(start)s AND created_at < %(end)s)"
)


def period_bounds(period: date) -> dict:
    return {"start": day_start(period), "end": day_start(next_period_start(period))}


def charge_time(period: date, at: datetime) -> datetime:
    """When a unit of `period` is charged if its job ends at `at`: then, or the period's last
    microsecond for a run that straddled the month's end."""
    return min(at, day_start(next_period_start(period)) - timedelta(microseconds=1))


def credits(conn: Conn, workspace_id: uuid.UUID, period: date) -> int:
    """Credit units available in the period (bought, less refunds and lost disputes)."""
    return int(one(conn.execute("SELECT " + CREDITS_IN_PERIOD + " AS n",
                                {"ws": workspace_id, **period_bounds(period)}))["n"])


def reserved(conn: Conn, workspace_id: uuid.UUID, period: date) -> int:
    row = conn.execute("SELECT reserved FROM usage_counters WHERE workspace_id = %s"
                       " AND period = %s", (workspace_id, period)).fetchone()
    return int(row["reserved"]) if row else 0


# --- reserve ------------------------------------------------------------------------------

# The unit of a job being inserted, in the job's own statement (admission stays one round
# trip). Follows a CTE named `job` that returns the inserted row (workspace_id,
# billing_period); parameters %(cap)s and those of CREDITS_IN_PERIOD for the job's period.
# Yields a row in `unit` when the cap allowed the unit.
RESERVE_FOR_JOB = (
    "unit AS (INSERT INTO usage_counters (workspace_id, period, reserved)"  # noqa: S608
    " SELECT workspace_id, billing_period, 1 FROM job WHERE 1 <= %(cap)s + "
    + CREDITS_IN_PERIOD + " ON CONFLICT (workspace_id, period) DO UPDATE"
    " SET reserved = usage_counters.reserved + 1"
    " WHERE usage_counters.reserved + 1 <= %(cap)s + " + CREDITS_IN_PERIOD + " RETURNING 1)"
)

RESERVE = (
    "INSERT INTO usage_counters (workspace_id, period, reserved)"
    " SELECT %(ws)s, %(period)s, 1 WHERE 1 <= %(cap)s + " + CREDITS_IN_PERIOD +
    " ON CONFLICT (workspace_id, period) DO UPDATE SET reserved = usage_counters.reserved + 1"
    " WHERE usage_counters.reserved + 1 <= %(cap)s + " + CREDITS_IN_PERIOD + " RETURNING 1"
)


def room(conn: Conn, workspace_id: uuid.UUID, period: date, cap: int) -> int:
    """Units the period can still reserve under the hard cap (plus credits). Exact while the
    caller holds the workspace lock."""
    args = {"ws": workspace_id, "period": period, "cap": cap, **period_bounds(period)}
    return int(one(conn.execute(
        "SELECT %(cap)s + " + CREDITS_IN_PERIOD + " - coalesce((SELECT reserved"  # noqa: S608
        " FROM usage_counters WHERE workspace_id = %(ws)s AND period = %(period)s), 0)"
        " AS room", args))["room"])


def reserve(conn: Conn, workspace_id: uuid.UUID, period: date, cap: int) -> bool:
    """Reserve one unit of the period if the hard cap (plus credits) allows it. The caller
    holds the workspace lock (taken in an earlier statement) so that concurrent reservations
    and take-backs of the workspace see each other."""
    args = {"ws": workspace_id, "period": period, "cap": cap, **period_bounds(period)}
    return conn.execute(RESERVE, args).fetchone() is not None


# --- release ------------------------------------------------------------------------------

# One unit back to its period; if a reversal of a pack paid in that period still owes units
# and the job was admitted before that reversal, the unit pays one of them instead of
# becoming free — only while the period is current (`live`). `at` dates the take-back row.
RELEASE = """
WITH counter AS (
  UPDATE usage_counters SET reserved = reserved - 1
  WHERE workspace_id = %(ws)s AND period = %(period)s AND reserved > 0 RETURNING 1),
owing AS (
  SELECT r.payment_intent FROM credit_reversals r
  JOIN checkout_sessions c ON c.payment_intent = r.payment_intent AND c.status = 'paid'
  WHERE r.owed > 0 AND %(live)s AND c.workspace_id = %(ws)s AND c.paid_at >= %(start)s
    AND c.paid_at < %(end)s AND %(admitted)s < r.owed_before
    AND EXISTS (SELECT 1 FROM counter)
  ORDER BY r.updated_at LIMIT 1 FOR UPDATE OF r),
paid AS (
  UPDATE credit_reversals r SET owed = r.owed - 1 FROM owing o
  WHERE r.payment_intent = o.payment_intent RETURNING r.payment_intent, r.reason)
INSERT INTO credit_ledger (workspace_id, units, reason, payment_intent, created_at)
SELECT %(ws)s, -1, reason || ': a reserved unit came back', payment_intent, %(at)s FROM paid
"""


def release(conn: Conn, workspace_id: uuid.UUID, period: date | None,
            admitted_at: datetime, now: datetime) -> None:
    """Give back one unit of `period` (see RELEASE), in the caller's transaction."""
    if period is None:
        return
    conn.execute(RELEASE, {"ws": workspace_id, "period": period, "admitted": admitted_at,
                           "live": period_start(now) == period,
                           "at": charge_time(period, now), **period_bounds(period)})


def move(conn: Conn, workspace_id: uuid.UUID, old: date, new: date, cap: int,
         admitted_at: datetime, now: datetime) -> bool:
    """A job admitted in period `old` runs first in `new`: its unit moves there if `new`'s
    cap allows it (False: nothing changed). The caller holds the workspace lock."""
    if not reserve(conn, workspace_id, new, cap):
        return False
    release(conn, workspace_id, old, admitted_at, now)
    return True


# --- credits ------------------------------------------------------------------------------

def credit_time(conn: Conn, workspace_id: uuid.UUID, paid_at: datetime) -> datetime:
    """When a pack's credit counts: when it was paid — unless the report has already frozen
    that day's overage (the payment reached us late): then from the first day not frozen,
    so that no unit is both billed as overage and paid with credit. Within the period it
    was paid in (a pack recorded after its period's last day was frozen still tops up that
    period, and can then pay for that day's units too: see docs/decisions.md, ADR-9)."""
    period = period_start(paid_at)
    frozen = one(conn.execute(
        "SELECT max(day) AS day FROM usage_reports WHERE workspace_id = %s AND period = %s",
        (workspace_id, period)))["day"]
    if frozen is None or frozen < paid_at.astimezone(UTC).date():
        return paid_at
    return min(day_start(frozen + timedelta(days=1)),
               day_start(next_period_start(period)) - timedelta(microseconds=1))


def credit(conn: Conn, workspace_id: uuid.UUID, units: int, reason: str, at: datetime, *,
           event_id: str | None = None, session_id: str | None = None,
           payment_intent: str | None = None) -> None:
    """Credit a paid pack's units, counting from `at` (see credit_time)."""
    conn.execute(
        "INSERT INTO credit_ledger (workspace_id, units, reason, stripe_event_id,"
        " checkout_session_id, payment_intent, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (workspace_id, units, reason, event_id, session_id, payment_intent, at))


@dataclass(frozen=True)
class Position:
    """Where a period's credits stand (from the billing walk): bought (net), used by charged
    units, and the units reserved by unfinished jobs beyond the included units left."""

    bought: int
    used: int
    pending: int


@dataclass(frozen=True)
class TakeBack:
    now: int  # units taken back at once
    owed: int  # units to take back as reserved units come back
    wanted: int  # what the reversal called for, not yet taken or owed


def take_back(conn: Conn, workspace_id: uuid.UUID, payment_intent: str, units: int,
              fraction: Decimal, reason: str, key: str, paid_period: date,
              position: Position | None, now: datetime) -> TakeBack:
    """Take back `fraction` (cumulative) of a pack of `units` paid in `paid_period`: what is
    free at once, what only unfinished jobs hold as owed (see the module docstring). Nothing
    once the period has ended (`position` None). The caller holds the workspace lock and the
    reversal's row; rounded for the customer."""
    done = one(conn.execute(
        "SELECT coalesce((SELECT -sum(units) FROM credit_ledger WHERE payment_intent = %(pi)s"
        " AND units < 0), 0) + coalesce((SELECT owed FROM credit_reversals"
        " WHERE payment_intent = %(pi)s), 0) AS n", {"pi": payment_intent}))["n"]
    # Rounded down for the customer, after rounding away the last digits of a repeating
    # fraction (a third of 300 units is 100, not 99).
    share = (units * fraction).quantize(Decimal("0.000001")).to_integral_value(ROUND_FLOOR)
    wanted = max(0, int(share) - int(done))
    if position is None or period_start(now) != paid_period or wanted == 0:
        return TakeBack(0, 0, wanted)
    left = max(0, position.bought - position.used)  # credit not charged
    held = min(position.pending, left)  # of which unfinished jobs hold this much
    taken = min(wanted, left - held)
    owed = min(wanted - taken, held)
    if taken:
        conn.execute(
            "INSERT INTO credit_ledger (workspace_id, units, reason, stripe_event_id,"
            " payment_intent, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (workspace_id, -taken, reason, f"{key}:reversal", payment_intent, now))
    if owed:
        conn.execute("UPDATE credit_reversals SET owed = owed + %s, owed_before = now()"
                     " WHERE payment_intent = %s", (owed, payment_intent))
    return TakeBack(taken, owed, wanted)
