"""The overage report: each (workspace, closed UTC day) with usage is FROZEN into
`usage_reports` (from `usage.compute`) before anything is sent, then sent on its own.

Sending: rows are taken in batches under FOR UPDATE SKIP LOCKED (two runs never send one row
twice) with a stable identifier that is also the Idempotency-Key; Stripe's duplicate-
identifier answer counts as sent. Every row stands alone — one workspace's refusal never
holds up another's:

* a retryable failure (network, rate limit, Stripe 5xx, an answer lost after Stripe accepted)
  stays `pending` and is retried with backoff — 5, 10, 20, 40, 80 minutes — by the hourly
  sender, well inside the 24 h in which Stripe deduplicates the identifier; after
  SEND_ATTEMPTS it is parked `failed`;
* a refusal (a deleted customer, a permission error) is parked `failed` at once;
* a day older than the 35 days Stripe's meter accepts is `expired`: never dropped, it is listed
  by `billing reconcile`, counted by the `billing_unsent` alert, and `billing settle-expired`
  bills it as an invoice item on the customer's next invoice (then `invoiced`).

`enrichment billing report` run by hand sends every unsent row that may still go through
(pending and failed) at once, whatever its backoff: the operator's override.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date, datetime, timedelta

from ..config import Plans
from ..db import Conn, Pool
from ..errors import Invalid
from ..events import Events
from ..periods import day_start, period_start
from .catalog import load_catalog
from .interface import Billing, BillingError, cents
from .usage import MONEY, DayReport, compute

log = logging.getLogger(__name__)
SEND_ATTEMPTS = 6
FIRST_RETRY = timedelta(minutes=5)


def backoff(attempts: int) -> timedelta:
    """Wait before the next try after `attempts` failed ones: 5, 10, 20, 40, 80 min."""
    return FIRST_RETRY * 2 ** (attempts - 1)


def unfrozen(conn: Conn, plans: Plans, period: date, through: date) -> list[DayReport]:
    """Day reports of the period up to `through` that are not frozen yet. A new day reports
    the walk's overage to date minus what the period's frozen days already report — so a
    credit or a usage row that arrives for a day already frozen is settled on the next day,
    never billed twice or lost."""
    frozen = {r["workspace_id"]: (r["last_day"], int(r["reported"])) for r in conn.execute(
        "SELECT workspace_id, max(day) AS last_day, sum(units) AS reported FROM usage_reports"
        " WHERE period = %s GROUP BY 1", (period,))}
    out = []
    for ws, days in compute(conn, plans, period, through).items():
        last_day, reported = frozen.get(ws, (None, 0))
        for r in days:
            if last_day is not None and r.day <= last_day:
                continue
            r.units = max(0, r.overage_to_date - reported)
            reported += r.units
            out.append(r)
    return out


def freeze(conn: Conn, plans: Plans, through: date) -> int:
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
            reports = unfrozen(conn, plans, period, through)
            with conn.cursor().copy(
                    "COPY usage_reports (workspace_id, day, period, plan, used_to_date,"
                    " allowance, units, unit_price_usd, identifier, status) FROM STDIN") as copy:
                for r in reports:
                    copy.write_row((r.workspace_id, r.day, r.period, r.plan, r.used_to_date,
                                    r.allowance, r.units, r.unit_price_usd, r.identifier,
                                    "pending" if r.units else "none"))
            count += len(reports)
    return count


DEDUP_WINDOW = timedelta(hours=23)  # Stripe remembers an identifier for at least 24 h
SUMMARY_LAG = timedelta(hours=1)  # Stripe's meter summaries are eventually consistent


def _meter_time(row: dict) -> datetime:
    """The meter event's time: the day's last minute — or, for a day before the subscription
    was on this plan's prices (attached or moved late), the first second after it was, so
    that Stripe bills the event on this subscription at this price."""
    at = day_start(row["day"]) + timedelta(hours=23, minutes=59)
    since = row["stripe_plan_at"]
    return max(at, since + timedelta(seconds=1)) if since else at


def _landed(conn: Conn, billing: Billing, catalog: dict, row: dict, now: datetime
            ) -> bool | None:
    """After Stripe's deduplication window, whether an earlier attempt whose answer was lost
    did land: Stripe's meter holds more in the minute of this report's event than the other
    reports marked sent to that minute. Summaries are eventually consistent, so the answer
    is None (not yet) while another report to that minute was sent within SUMMARY_LAG; the
    one-minute window (summaries take minute-aligned bounds) keeps every other day's event,
    however recent, out of the comparison."""
    minute = _meter_time(row).replace(second=0, microsecond=0)
    others = [r for r in conn.execute(
        "SELECT day, units, sent_at FROM usage_reports WHERE workspace_id = %s AND period = %s"
        " AND status = 'sent' AND day <> %s", (row["workspace_id"], row["period"], row["day"]))
        if _meter_time(row | {"day": r["day"]}).replace(second=0, microsecond=0) == minute]
    if any(r["sent_at"] is None or now - r["sent_at"] < SUMMARY_LAG for r in others):
        return None
    stripe_units = billing.reported_units(row["stripe_customer_id"], catalog, minute,
                                          minute + timedelta(minutes=1))
    return stripe_units - sum(int(r["units"]) for r in others) >= row["units"]


def _outcome(conn: Conn, billing: Billing, catalog: dict, row: dict,
             now: datetime) -> tuple[str, str | None]:
    """Send one report: (status, error); ('wait', None) leaves it untouched."""
    if not billing.sends:
        return "ledger", None
    try:
        if row["plan"] != row["stripe_plan"]:
            if row["plan"] == row["current_plan"]:
                return "wait", None  # the subscription is being moved to this plan's prices
            # A day of an earlier plan whose prices the subscription has left: bill it
            # exactly, as a line on the next invoice.
            item = billing.invoice_item(
                row["stripe_customer_id"], cents(row["unit_price_usd"] * row["units"]),
                f"Enrichment overage {row['day']}: {row['units']} units at "
                f"${row['unit_price_usd']} ({row['plan']} plan)", f"item-{row['identifier']}")
            conn.execute("UPDATE usage_reports SET invoice_item = %s WHERE workspace_id = %s"
                         " AND day = %s", (item, row["workspace_id"], row["day"]))
            return "invoiced", None
        if row["first_attempt_at"] is not None and now - row["first_attempt_at"] > DEDUP_WINDOW:
            landed = _landed(conn, billing, catalog, row, now)
            if landed is None:
                return "wait", None  # Stripe's summary may not show that minute's events yet
            if landed:
                return "sent", None  # an earlier attempt landed; sending again would bill twice
        billing.send_overage(row["stripe_customer_id"], row["units"], row["identifier"],
                             _meter_time(row))
    except BillingError as exc:
        log.warning("overage report %s not sent: %s", row["identifier"], exc)
        if exc.too_old:
            return "expired", str(exc)
        if exc.retryable and row["attempts"] + 1 < SEND_ATTEMPTS:
            return "pending", str(exc)
        return "failed", str(exc)
    return "sent", None


def send_pending(pool: Pool, billing: Billing, events: Events, now: datetime,
                 force: bool = False, batch: int = 100) -> dict[str, int]:
    """Send the reports that are due (with `force`: every pending or failed one). Returns
    counts by outcome. Reports of workspaces without a Stripe customer wait (the billing sync
    job attaches them), as do those of a subscription not yet moved to their plan."""
    done: dict[str, int] = defaultdict(int)
    with pool.connection() as conn:
        catalog = load_catalog(conn)
    while True:
        with pool.connection() as conn, conn.transaction():
            rows = conn.execute(
                "SELECT r.*, w.stripe_customer_id, w.stripe_plan, w.stripe_plan_at,"
                " w.plan AS current_plan FROM usage_reports r"
                " JOIN workspaces w ON w.id = r.workspace_id"
                " WHERE (r.status = 'pending' OR (%(force)s AND r.status = 'failed'))"
                " AND (%(force)s OR r.next_attempt_at IS NULL OR r.next_attempt_at <= %(now)s)"
                " AND (NOT %(sends)s OR w.stripe_customer_id IS NOT NULL)"
                " AND (r.last_attempt_at IS NULL OR r.last_attempt_at < %(now)s)"  # once a run
                " ORDER BY r.day, r.workspace_id LIMIT %(batch)s FOR UPDATE OF r SKIP LOCKED",
                {"force": force, "now": now, "sends": billing.sends, "batch": batch}
            ).fetchall()
            sent = []
            for row in rows:
                status, error = _outcome(conn, billing, catalog, row, now)
                if status == "wait":
                    conn.execute("UPDATE usage_reports SET last_attempt_at = %s"
                                 " WHERE workspace_id = %s AND day = %s",
                                 (now, row["workspace_id"], row["day"]))
                    continue
                conn.execute(
                    "UPDATE usage_reports SET status = %s, last_error = %s,"
                    " attempts = attempts + 1, first_attempt_at = coalesce(first_attempt_at, %s),"
                    " last_attempt_at = %s, next_attempt_at = %s,"
                    " sent_at = CASE WHEN %s THEN %s END WHERE workspace_id = %s AND day = %s",
                    (status, error, now, now,
                     now + backoff(row["attempts"] + 1) if status == "pending" else None,
                     status in ("sent", "ledger", "invoiced"), now, row["workspace_id"],
                     row["day"]))
                done[status] += 1
                if status in ("sent", "ledger", "invoiced"):
                    sent.append((row, status))
        for row, status in sent:  # committed: now tell the world, once per report
            events.capture("enrichment_overage_billed", str(row["workspace_id"]), {
                "plan": row["plan"], "day": row["day"].isoformat(), "units": row["units"],
                "amount_usd": str((row["unit_price_usd"] * row["units"]).quantize(MONEY)),
                "sent_to_stripe": status != "ledger"})
        if len(rows) < batch:
            return dict(done)


def report(pool: Pool, plans: Plans, billing: Billing, events: Events,
           through: date, now: datetime, force: bool = False) -> dict:
    """The overage report for closed days up to `through`: freeze, then send."""
    today = now.date()
    if through >= today:
        raise Invalid({"through": [f"{through} has not ended yet (UTC); the latest closed "
                                    f"day is {today - timedelta(days=1)}"]})
    with pool.connection() as conn:
        frozen = freeze(conn, plans, through)
    return {"frozen": frozen, **send_pending(pool, billing, events, now, force)}


def unsent(conn: Conn) -> list[dict]:
    """Reports Stripe did not take: failed (retries used up, or refused) and expired."""
    return conn.execute(
        "SELECT workspace_id, day, units, unit_price_usd, status, attempts, last_error"
        " FROM usage_reports WHERE status IN ('failed', 'expired')"
        " ORDER BY day, workspace_id").fetchall()


def settle_expired(pool: Pool, billing: Billing) -> list[dict]:
    """Bill each expired report as an invoice item on the customer's next invoice, each in
    its own transaction (one refusal never holds up, or undoes, the others; the report's
    identifier keys the item). Returns what was billed."""
    billed = []
    with pool.connection() as conn:
        todo = conn.execute(
            "SELECT r.workspace_id, r.day FROM usage_reports r"
            " JOIN workspaces w ON w.id = r.workspace_id"
            " WHERE r.status = 'expired' AND w.stripe_customer_id IS NOT NULL"
            " ORDER BY r.day").fetchall()
    for key in todo:
        with pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT r.*, w.stripe_customer_id FROM usage_reports r"
                " JOIN workspaces w ON w.id = r.workspace_id WHERE r.workspace_id = %s"
                " AND r.day = %s AND r.status = 'expired' FOR UPDATE OF r SKIP LOCKED",
                (key["workspace_id"], key["day"])).fetchone()
            if row is None:
                continue
            amount = cents(row["unit_price_usd"] * row["units"])
            try:
                item = billing.invoice_item(
                    row["stripe_customer_id"], amount,
                    f"Enrichment overage {row['day']}: {row['units']} units at "
                    f"${row['unit_price_usd']} (reported late)", f"settle-{row['identifier']}")
            except BillingError as exc:
                log.warning("expired report %s not settled: %s", row["identifier"], exc)
                conn.execute("UPDATE usage_reports SET last_error = %s WHERE workspace_id = %s"
                             " AND day = %s", (str(exc)[:500], row["workspace_id"], row["day"]))
                continue
            conn.execute("UPDATE usage_reports SET status = 'invoiced', invoice_item = %s,"
                         " sent_at = now() WHERE workspace_id = %s AND day = %s",
                         (item, row["workspace_id"], row["day"]))
            billed.append({"workspace_id": str(row["workspace_id"]), "day": str(row["day"]),
                           "units": row["units"], "amount_cents": amount, "invoice_item": item})
    return billed
