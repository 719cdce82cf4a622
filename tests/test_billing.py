"""Billing through the real `stripe` library against the strict fake Stripe: the catalog, the
overage report (exactly once; every workspace-day on its own; retries, parking, expiry), plan
changes, credit packs (async payments, refunds, disputes, forged sessions), request paths,
reconciliation, the usage endpoint, the CLI.

Days are recent (the fake, like Stripe, refuses meter events older than 35 days): `day(n)` is
the n-th day of a billing period whose first days have all ended.

No test reads the real date: `now` is the services' clock (real time, or TEST_NOW's — see
conftest), read once per test; `today`, `period` and `day` derive from it, and the fake Stripe
runs on the services' clock too (it judges meter-event timestamps by its own clock, as Stripe
does). PostgreSQL's now() never meets that clock in an assertion."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from enrichment.billing import (
    LedgerBilling,
    StripeBilling,
    accounts,
    catalog,
    report,
    stripe_events,
    usage,
)
from enrichment.billing import operations as billing_ops
from enrichment.billing.reconcile import reconcile, unsent_reports
from enrichment.billing.report import SEND_ATTEMPTS
from enrichment.errors import Invalid
from enrichment.periods import day_start, next_period_start, period_start
from simulators.stripe_fake import StripeFakeServer, sign

from .helpers import at

SECRET = "whsec_test"


def closed_period(today: date) -> date:
    """A period whose days 1-5 have ended: today's from the 6th on, else the one before."""
    first = today.replace(day=1)
    return first if today.day >= 6 else (first - timedelta(days=1)).replace(day=1)


@pytest.fixture
def now(db) -> datetime:
    """The test's instant: the services' clock, read once."""
    return db.clock()


@pytest.fixture
def today(now) -> date:
    return now.astimezone(UTC).date()


@pytest.fixture
def period(today) -> date:
    return closed_period(today)


@pytest.fixture
def day(period):
    """`day(n)`: the n-th day of `period` (days 1-5 have ended)."""

    def day(n: int) -> date:
        return period + timedelta(days=n - 1)

    return day


@pytest.fixture(scope="session")
def fake(services):
    """The fake Stripe, on the services' clock (Stripe judges meter-event times by its own)."""
    with StripeFakeServer(now=lambda: services.clock().timestamp()) as server:
        yield server


@pytest.fixture
def stripe_svc(db, fake):
    """Services with Stripe billing (the fake), and the catalog synced."""
    fake.config.update(lose_next_meter_event_response=False, forget_idempotency=False,
                       fail_all=0, delay_seconds=0.0)
    svc = replace(db, billing=StripeBilling("sk_test_123", fake.url),
                  settings=replace(db.settings, stripe_webhook_secret=SECRET))
    with svc.db.connection() as conn:
        catalog.sync_catalog(conn, svc.billing, svc.settings.plans)
    return svc


@pytest.fixture
def attached(period):
    def attached(svc, make_workspace, plan="core", since: date | None = None):
        """A workspace (created before the days the test uses: those of `period`, or from
        `since`) with its Stripe customer."""
        ws, key = make_workspace(plan=plan)
        created = day_start(since or period) - timedelta(days=3)
        with svc.db.connection() as conn:
            conn.execute("UPDATE workspaces SET created_at = %s WHERE id = %s",
                         (created, ws.id))
            conn.execute("UPDATE workspace_plans SET effective_at = %s WHERE workspace_id = %s",
                         (created, ws.id))
            accounts.attach(conn, svc.billing, ws.id)
        return ws, key

    return attached


def use(svc, ws, on: date, units: int, **figures) -> None:
    """`units` succeeded jobs' usage rows on that UTC day."""
    with svc.db.connection() as conn:
        for i in range(units):
            conn.execute(
                "INSERT INTO enrichment_usage (workspace_id, job_id, template, units, tokens,"
                " searches, social_requests, cost_estimate_usd, created_at)"
                " VALUES (%s, %s, 'company_profile', 1, %s, %s, %s, %s, %s)",
                (ws.id, uuid.uuid4(), figures.get("tokens", 0), figures.get("searches", 0),
                 figures.get("social", 0), figures.get("cost", Decimal(0)),
                 day_start(on) + timedelta(hours=1 + i % 20)))


def run_report(svc, through: date, force: bool = False) -> dict:
    return billing_ops.report_overage(svc, through, force)


def rows(svc):
    with svc.db.connection() as conn:
        return conn.execute("SELECT workspace_id, day, units, status, used_to_date, plan,"
                            " unit_price_usd, attempts, next_attempt_at FROM usage_reports"
                            " ORDER BY day, workspace_id").fetchall()


def customer_of(svc, ws) -> str:
    with svc.db.connection() as conn:
        return conn.execute("SELECT stripe_customer_id FROM workspaces WHERE id = %s",
                            (ws.id,)).fetchone()["stripe_customer_id"]


def events_for(fake, customer):
    return [e for e in fake.meter_events if e["payload"]["stripe_customer_id"] == customer]


def state(fake) -> dict:
    return fake.app.test_client().get("/_test/state").get_json()


# --- the catalog -------------------------------------------------------------------------

def test_catalog_of_14_prices_syncs_in_chunks_stripe_accepts(stripe_svc, fake):
    import stripe

    first = stripe_svc.billing.sync_catalog(stripe_svc.settings.plans)
    second = stripe_svc.billing.sync_catalog(stripe_svc.settings.plans)
    assert first == second
    keys = [p["lookup_key"] for p in state(fake)["prices"]]
    assert len(keys) == len(set(keys)) == 6 * 2 + 2
    assert len(state(fake)["meters"]) == 1
    overage = next(p for p in state(fake)["prices"]
                   if p["lookup_key"] == "enrichment_core_overage")
    assert overage["recurring"]["usage_type"] == "metered"
    assert overage["recurring"]["meter"] == first["meter"]
    assert Decimal(overage["unit_amount_decimal"]) == Decimal("12.00")  # $0.12 in cents
    with pytest.raises(stripe.InvalidRequestError, match="at most 10"):  # as Stripe does
        stripe_svc.billing.client.v1.prices.list({"lookup_keys": keys})


def test_attach_creates_customer_with_workspace_id_and_subscription(
        stripe_svc, fake, make_workspace, attached):
    ws, _ = attached(stripe_svc, make_workspace, plan="pro")
    with stripe_svc.db.connection() as conn:
        row = conn.execute("SELECT stripe_customer_id, stripe_subscription_id, stripe_plan"
                           " FROM workspaces WHERE id = %s", (ws.id,)).fetchone()
        assert accounts.attach(conn, stripe_svc.billing, ws.id) == row["stripe_customer_id"]
    customer = next(c for c in state(fake)["customers"] if c["id"] == row["stripe_customer_id"])
    assert customer["metadata"] == {"workspace_id": str(ws.id)}
    sub = next(s for s in state(fake)["subscriptions"] if s["id"] == row["stripe_subscription_id"])
    assert {i["price"]["lookup_key"] for i in sub["items"]["data"]} == {
        "enrichment_pro_base", "enrichment_pro_overage"}
    assert row["stripe_plan"] == "pro"


# --- the report ----------------------------------------------------------------------------

def test_overage_is_reported_once_in_day_order(stripe_svc, fake, make_workspace, captured_events,
                                               attached, day):
    ws, _ = attached(stripe_svc, make_workspace)  # core: 250 included
    use(stripe_svc, ws, day(1), 200)
    use(stripe_svc, ws, day(2), 100)
    use(stripe_svc, ws, day(4), 30)
    assert run_report(stripe_svc, day(5)) == {"frozen": 3, "sent": 2}
    assert [(r["day"], r["units"], r["status"]) for r in rows(stripe_svc)] == [
        (day(1), 0, "none"), (day(2), 50, "sent"), (day(4), 30, "sent")]
    sent = events_for(fake, customer_of(stripe_svc, ws))
    assert [(e["payload"]["value"], e["identifier"]) for e in sent] == [
        ("50", f"overage-{ws.id}-{day(2)}"), ("30", f"overage-{ws.id}-{day(4)}")]
    billed = [e for e in captured_events if e[0] == "enrichment_overage_billed"]
    assert [(e[2]["units"], e[2]["amount_usd"]) for e in billed] == [(50, "6.00"), (30, "3.60")]
    assert run_report(stripe_svc, day(5)) == {"frozen": 0}  # a re-run sends nothing new
    assert len(events_for(fake, customer_of(stripe_svc, ws))) == 2


def test_missed_nights_and_a_month_end_are_caught_up(stripe_svc, fake, make_workspace, attached,
                                                     today):
    first = today.replace(day=1) if today.day >= 2 else (
        today.replace(day=1) - timedelta(days=1)).replace(day=1)
    last, before = first - timedelta(days=1), first - timedelta(days=2)
    ws, _ = attached(stripe_svc, make_workspace)
    use(stripe_svc, ws, before, 260)  # 10 over
    use(stripe_svc, ws, last, 5)  # 5 more
    use(stripe_svc, ws, first, 251)  # a new period: 1 over
    assert run_report(stripe_svc, first) == {"frozen": 3, "sent": 3}
    assert [e["payload"]["value"] for e in events_for(fake, customer_of(stripe_svc, ws))
            ] == ["10", "5", "1"]


def test_credits_are_consumed_before_overage_from_the_day_they_are_paid(
        stripe_svc, fake, make_workspace, attached, day):
    ws, _ = attached(stripe_svc, make_workspace)
    use(stripe_svc, ws, day(1), 240)
    with stripe_svc.db.connection() as conn:  # 100 credit units paid on day 2
        conn.execute("INSERT INTO credit_ledger (workspace_id, units, reason, created_at)"
                     " VALUES (%s, 100, 'pack', %s)", (ws.id, day_start(day(2)) +
                                                      timedelta(hours=8)))
    use(stripe_svc, ws, day(2), 100)  # 340 ≤ 350
    use(stripe_svc, ws, day(3), 20)  # 360: 10 over
    run_report(stripe_svc, day(3))
    assert [(r["day"], r["units"]) for r in rows(stripe_svc)] == [
        (day(1), 0), (day(2), 0), (day(3), 10)]


def test_two_concurrent_runs_send_each_report_once(stripe_svc, fake, make_workspace, attached,
                                                   day):
    spaces = [attached(stripe_svc, make_workspace)[0] for _ in range(6)]
    for ws in spaces:
        for d in range(1, 4):
            use(stripe_svc, ws, day(d), 200)  # days 2 and 3 go over (150, 200)
    results = []
    threads = [threading.Thread(target=lambda: results.append(run_report(stripe_svc, day(3))))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.get("frozen", 0) for r in results) == 18
    assert sum(r.get("sent", 0) for r in results) == 12
    idents = [e["identifier"] for e in fake.meter_events
              if e["identifier"].startswith(tuple(f"overage-{w.id}" for w in spaces))]
    assert len(idents) == len(set(idents)) == 12


def test_a_poisoned_workspace_does_not_stop_the_others(stripe_svc, fake, make_workspace, attached,
                                                       day):
    spaces = [attached(stripe_svc, make_workspace)[0] for _ in range(21)]
    poisoned = spaces[7]
    fake.app.test_client().delete(f"/v1/customers/{customer_of(stripe_svc, poisoned)}",
                                  headers={"Authorization": "Bearer sk_test_x"})
    for ws in spaces:
        use(stripe_svc, ws, day(1), 260)
    done = run_report(stripe_svc, day(1))
    assert done == {"frozen": 21, "sent": 20, "failed": 1}  # refused: parked at once
    (parked,) = [r for r in rows(stripe_svc) if r["status"] == "failed"]
    assert parked["workspace_id"] == poisoned.id
    with stripe_svc.db.connection() as conn:
        listed = unsent_reports(conn)
    assert [(r["workspace_id"], r["status"]) for r in listed] == [(str(poisoned.id), "failed")]
    assert "No such customer" in listed[0]["last_error"]
    # The operator gives the workspace a new customer (a day later: Stripe's idempotency keys
    # have expired); `billing report` by hand retries the parked report.
    fake.config["forget_idempotency"] = True
    with stripe_svc.db.connection() as conn:
        conn.execute("UPDATE workspaces SET stripe_customer_id = NULL,"
                     " stripe_subscription_id = NULL WHERE id = %s", (poisoned.id,))
        accounts.attach(conn, stripe_svc.billing, poisoned.id)
    assert run_report(stripe_svc, day(1), force=True) == {"frozen": 0, "sent": 1}
    assert len(events_for(fake, customer_of(stripe_svc, poisoned))) == 1


def test_a_stripe_outage_is_retried_with_backoff_then_parked(
        stripe_svc, fake, make_workspace, attached, day, now):
    ws, _ = attached(stripe_svc, make_workspace)
    use(stripe_svc, ws, day(1), 255)
    fake.config["fail_all"] = 503
    assert run_report(at(stripe_svc, now), day(1)) == {"frozen": 1, "pending": 1}
    (row,) = rows(stripe_svc)
    assert row["next_attempt_at"] == now + timedelta(minutes=5)
    assert billing_ops.send_due(at(stripe_svc, now + timedelta(minutes=4))) == {}  # not due
    waits = []
    for _ in range(SEND_ATTEMPTS - 1):
        (row,) = rows(stripe_svc)
        waits.append(row["next_attempt_at"] - now)
        billing_ops.send_due(at(stripe_svc, row["next_attempt_at"]))
    assert waits == [timedelta(minutes=m) for m in (5, 15, 35, 75, 155)]  # 5, 10, 20, 40, 80
    (row,) = rows(stripe_svc)
    assert (row["status"], row["attempts"]) == ("failed", SEND_ATTEMPTS)
    with stripe_svc.db.connection() as conn:
        assert [r["status"] for r in unsent_reports(conn)] == ["failed"]
    fake.config["fail_all"] = 0
    assert run_report(at(stripe_svc, now + timedelta(days=1)), day(1), force=True)["sent"] == 1


def test_an_answer_lost_after_acceptance_is_resent_within_the_hour_and_counted_once(
        stripe_svc, fake, make_workspace, attached, day, now):
    ws, _ = attached(stripe_svc, make_workspace)
    use(stripe_svc, ws, day(1), 260)
    fake.config["lose_next_meter_event_response"] = True  # accepted, answer lost
    assert run_report(at(stripe_svc, now), day(1)) == {"frozen": 1, "pending": 1}
    # The hourly sender: the retry is due 5 minutes later; Stripe says "already have it".
    assert billing_ops.send_due(at(stripe_svc, now + timedelta(hours=1))) == {"sent": 1}
    assert len(events_for(fake, customer_of(stripe_svc, ws))) == 1
    assert rows(stripe_svc)[0]["status"] == "sent"


def test_a_day_too_old_for_stripe_is_reported_to_the_operator_and_invoiced(
        stripe_svc, fake, make_workspace, attached, today):
    old = today - timedelta(days=40)
    ws, _ = attached(stripe_svc, make_workspace, since=old.replace(day=1))
    use(stripe_svc, ws, old.replace(day=1), 260)  # its period: 10 over on its first day
    with stripe_svc.db.connection() as conn:  # frozen back then, never sent (an outage)
        report.freeze(conn, stripe_svc.settings.plans, old.replace(day=1))
    assert billing_ops.send_due(stripe_svc) == {"expired": 1}
    assert events_for(fake, customer_of(stripe_svc, ws)) == []
    found = billing_ops.reconcile_billing(stripe_svc, old.replace(day=1))
    assert [(r["status"], r["units"]) for r in found["unsent"]] == [("expired", 10)]
    (item,) = billing_ops.settle_expired(stripe_svc)
    assert (item["units"], item["amount_cents"]) == (10, 120)
    assert billing_ops.settle_expired(stripe_svc) == []  # once
    assert [i["amount"] for i in state(fake)["invoice_items"]
            if i["customer"] == customer_of(stripe_svc, ws)] == [120]
    assert rows(stripe_svc)[0]["status"] == "invoiced"


def test_ledger_only_records_and_sends_nothing(db, fake, make_workspace, captured_events, day):
    svc = replace(db, billing=LedgerBilling())
    ws, _ = make_workspace(plan="core")
    use(svc, ws, day(1), 255)
    before = len(fake.meter_events)
    assert run_report(svc, day(1)) == {"frozen": 1, "ledger": 1}
    assert rows(svc)[0]["status"] == "ledger" and len(fake.meter_events) == before
    assert [e[2]["units"] for e in captured_events if e[0] == "enrichment_overage_billed"] == [5]


def test_a_day_that_has_not_ended_is_refused(db, now, today):
    with pytest.raises(Invalid, match="not ended"):
        run_report(at(db, now), today)


def test_reconciliation_finds_discrepancies(stripe_svc, fake, make_workspace, attached, day):
    ws, _ = attached(stripe_svc, make_workspace)
    use(stripe_svc, ws, day(1), 260)
    run_report(stripe_svc, day(1))
    with stripe_svc.db.connection() as conn:
        plans = stripe_svc.settings.plans
        assert reconcile(conn, plans, stripe_svc.billing, day(1), stripe_svc.clock()) == []
        use(stripe_svc, ws, day(1), 3)  # a usage row landed after the day was frozen
        (problem,) = reconcile(conn, plans, stripe_svc.billing, day(1), stripe_svc.clock())
    assert problem == {"workspace_id": str(ws.id), "expected": 13, "reported": 10,
                       "sent": 10, "stripe": 10, "expected_usd": "1.56", "reported_usd": "1.20"}


def test_a_credit_or_usage_arriving_for_a_frozen_day_is_settled_next_day_once(
        stripe_svc, fake, make_workspace, attached, day):
    ws, _ = attached(stripe_svc, make_workspace)  # core: 250 included
    use(stripe_svc, ws, day(1), 300)
    assert run_report(stripe_svc, day(1))["sent"] == 1  # 50 over
    with stripe_svc.db.connection() as conn:  # a pack paid at 23:50 on day 1, credited late
        conn.execute("INSERT INTO credit_ledger (workspace_id, units, reason, created_at)"
                     " VALUES (%s, 500, 'pack', %s)",
                     (ws.id, day_start(day(2)) - timedelta(minutes=10)))
    use(stripe_svc, ws, day(1), 3)  # and three jobs counted on day 1 after it was frozen
    use(stripe_svc, ws, day(2), 500)
    run_report(stripe_svc, day(2))
    # 803 used against 250 + 500: 53 over in all; 50 already billed, so day 2 adds 3.
    assert [(r["day"], r["units"]) for r in rows(stripe_svc)] == [(day(1), 50), (day(2), 3)]


def test_after_the_deduplication_window_a_landed_event_is_not_sent_again(
        stripe_svc, fake, make_workspace, attached, day, now):
    ws, _ = attached(stripe_svc, make_workspace)
    use(stripe_svc, ws, day(1), 260)
    fake.config["lose_next_meter_event_response"] = True  # accepted, answer lost
    assert run_report(at(stripe_svc, now), day(1)) == {"frozen": 1, "pending": 1}
    fake.forget_identifiers()  # a day later Stripe no longer knows the identifier
    later = at(stripe_svc, now + timedelta(hours=25))
    assert run_report(later, day(1), force=True) == {"frozen": 0, "sent": 1}
    assert len(events_for(fake, customer_of(stripe_svc, ws))) == 1  # not sent twice


def test_settling_expired_days_goes_row_by_row(stripe_svc, fake, make_workspace, attached, today):
    old = today - timedelta(days=40)
    good, _ = attached(stripe_svc, make_workspace, since=old.replace(day=1))
    gone, _ = attached(stripe_svc, make_workspace, since=old.replace(day=1))
    for ws in (gone, good):
        use(stripe_svc, ws, old.replace(day=1), 260)
    with stripe_svc.db.connection() as conn:
        report.freeze(conn, stripe_svc.settings.plans, old.replace(day=1))
    assert billing_ops.send_due(stripe_svc) == {"expired": 2}
    fake.app.test_client().delete(f"/v1/customers/{customer_of(stripe_svc, gone)}",
                                  headers={"Authorization": "Bearer sk_test_x"})
    (item,) = billing_ops.settle_expired(stripe_svc)
    assert item["workspace_id"] == str(good.id)
    assert billing_ops.settle_expired(stripe_svc) == []  # the good one once; the other waits
    assert {str(r["workspace_id"]): r["status"] for r in rows(stripe_svc)} == {
        str(good.id): "invoiced", str(gone.id): "expired"}


def test_a_plan_history_naming_a_removed_plan_does_not_stop_billing(
        stripe_svc, make_workspace, attached, day, period):
    ws, _ = attached(stripe_svc, make_workspace)
    with stripe_svc.db.connection() as conn:
        conn.execute("INSERT INTO workspace_plans VALUES (%s, %s, 'gold')",
                     (ws.id, day_start(period) - timedelta(days=1)))
    use(stripe_svc, ws, day(1), 260)
    assert run_report(stripe_svc, day(1)) == {"frozen": 1, "sent": 1}


# --- plan changes ----------------------------------------------------------------------------

def change_plan_on(svc, ws, plan: str, on: date) -> None:
    """A plan change made at noon of a past day (as `set-plan` records it, backdated)."""
    with svc.db.connection() as conn:
        conn.execute("UPDATE workspaces SET plan = %s WHERE id = %s", (plan, ws.id))
        conn.execute("INSERT INTO workspace_plans VALUES (%s, %s, %s)",
                     (ws.id, day_start(on) + timedelta(hours=12), plan))


def test_a_mid_month_downgrade_bills_each_day_with_the_plan_in_force(
        stripe_svc, fake, make_workspace, client, attached, day, period):
    # The whole story inside the period, on day 5 (Stripe's clock too): a subscription moved
    # in a later period would time these days' events in it (docs/decisions.md, ADR-12).
    clock, moment = fake.now, day_start(day(5)) + timedelta(hours=1)
    fake.now = lambda: moment.timestamp()
    try:
        _downgrade_story(at(stripe_svc, moment), fake, make_workspace, attached, day, period)
    finally:
        fake.now = clock


def _downgrade_story(stripe_svc, fake, make_workspace, attached, day, period):
    ws, _ = attached(stripe_svc, make_workspace, plan="pro")  # 2,500 included at $0.08
    use(stripe_svc, ws, day(1), 2000)  # inside pro's included units
    change_plan_on(stripe_svc, ws, "core", day(3))
    use(stripe_svc, ws, day(3), 100)
    use(stripe_svc, ws, day(4), 200)
    run_report(stripe_svc, day(4))
    days_in = (next_period_start(period) - period).days
    grant = 250 * (days_in - 2) // days_in  # core's included, prorated to the days left
    assert 100 < grant < 300  # core's prorated units run out on day 4
    assert [(r["day"], r["plan"], r["units"], r["unit_price_usd"]) for r in rows(stripe_svc)] == [
        (day(1), "pro", 0, Decimal("0.08")),
        (day(3), "core", 0, Decimal("0.12")),
        (day(4), "core", 300 - grant, Decimal("0.12"))]
    # The subscription moves to core's prices in the same step (set-plan calls `move`).
    with stripe_svc.db.connection() as conn:
        assert accounts.move(conn, stripe_svc.billing, ws.id, stripe_svc.clock())
        sub_id = conn.execute("SELECT stripe_subscription_id, stripe_plan FROM workspaces"
                              " WHERE id = %s", (ws.id,)).fetchone()
    assert sub_id["stripe_plan"] == "core"
    sub = next(s for s in state(fake)["subscriptions"]
               if s["id"] == sub_id["stripe_subscription_id"])
    assert {i["price"]["lookup_key"] for i in sub["items"]["data"]} == {
        "enrichment_core_base", "enrichment_core_overage"}
    # Core's days waited for the move (Stripe prices a meter event with the subscription's
    # price when it lands); now they go, timed after the move.
    later = stripe_svc.clock() + timedelta(minutes=1)
    fake.now = lambda: later.timestamp()
    assert billing_ops.send_due(at(stripe_svc, later)) == {"sent": 1}
    # Stripe prices the event at the price its subscription had at the event's time: core's.
    lines = stripe_svc.billing.upcoming_invoice(customer_of(stripe_svc, ws))["lines"]["data"]
    assert {(line["description"], line["quantity"]) for line in lines
            if line["description"].endswith("_overage")} == {("enrichment_core_overage",
                                                               300 - grant)}
    # Ledger, Stripe and the usage endpoint agree on the units.
    with stripe_svc.db.connection() as conn:
        assert reconcile(conn, stripe_svc.settings.plans, stripe_svc.billing, day(4),
                         stripe_svc.clock()) == []


def test_the_usage_endpoint_uses_the_same_walk_after_a_plan_change(
        make_workspace, db, day, period):
    from api import create_app

    ws, key = make_workspace(plan="pro")
    with db.db.connection() as conn:
        conn.execute("UPDATE workspace_plans SET effective_at = %s WHERE workspace_id = %s",
                     (day_start(period) - timedelta(days=1), ws.id))
    use(db, ws, day(1), 2000)
    change_plan_on(db, ws, "core", day(3))
    use(db, ws, day(3), 300)
    client = create_app(services=at(db, day_start(day(4)) + timedelta(hours=9))).test_client()
    body = client.get("/api/v1/enrichment/usage",
                      headers={"Authorization": f"Bearer {key}"}).get_json()
    days_in = (next_period_start(period) - period).days
    grant = 250 * (days_in - 2) // days_in
    assert (body["plan"], body["used"], body["included"]) == ("core", 2300, 2500 + grant)
    assert body["overage_units"] == 300 - grant
    assert body["overage_cost_usd"] == str((Decimal("0.12") * (300 - grant)).quantize(
        Decimal("0.01")))


def test_set_plan_moves_the_subscription_or_leaves_it_to_the_sync_job(
        stripe_svc, fake, make_workspace, attached):
    ws, _ = attached(stripe_svc, make_workspace, plan="core")
    with stripe_svc.db.connection() as conn:  # the same plan again: nothing changes
        assert accounts.set_plan(conn, stripe_svc.key_cache, stripe_svc.settings.plans, ws.id,
                                 "core") is False
        assert conn.execute("SELECT count(*) AS n FROM workspace_plans WHERE workspace_id = %s",
                            (ws.id,)).fetchone()["n"] == 1
    fake.config["fail_all"] = 503  # Stripe down during the change
    with stripe_svc.db.connection() as conn:
        accounts.set_plan(conn, stripe_svc.key_cache, stripe_svc.settings.plans, ws.id, "elite")
        with pytest.raises(Exception, match="outage"):
            accounts.move(conn, stripe_svc.billing, ws.id, stripe_svc.clock())
    assert billing_ops.sync_accounts(stripe_svc) == {"attached": 0, "moved": 0, "failed": 1}
    fake.config["fail_all"] = 0
    assert billing_ops.sync_accounts(stripe_svc) == {"attached": 0, "moved": 1, "failed": 0}
    assert billing_ops.sync_accounts(stripe_svc) == {"attached": 0, "moved": 0, "failed": 0}


# --- credit packs --------------------------------------------------------------------------

@pytest.fixture
def stripe_client(stripe_svc, fake, now):
    """The API on Stripe billing, the services and the fake Stripe both at `now`: a pack paid
    and the usage read in one period, even if the clock crosses a month end meanwhile."""
    from api import create_app

    clock, fake.now = fake.now, lambda: now.timestamp()
    yield create_app(services=at(stripe_svc, now)).test_client()
    fake.now = clock


def buy(stripe_client, key, pack="500") -> str:
    resp = stripe_client.post("/api/v1/billing/credit-packs", json={"pack": pack},
                              headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["checkout_session_id"]


def fake_post(fake, path, body=None) -> dict:
    return fake.app.test_client().post(path, json=body or {}).get_json()


def deliver(stripe_client, done: dict):
    return stripe_client.post("/api/v1/stripe/webhook", data=done["payload"], headers={
        "Stripe-Signature": done["signature"], "Content-Type": "application/json"})


def usage_of(stripe_client, key) -> dict:
    return stripe_client.get("/api/v1/enrichment/usage",
                             headers={"Authorization": f"Bearer {key}"}).get_json()


def test_credit_pack_purchase_end_to_end(stripe_client, stripe_svc, fake, make_workspace,
                                         captured_events, attached):
    ws, key = attached(stripe_svc, make_workspace)
    resp = stripe_client.post("/api/v1/billing/credit-packs", json={"pack": "500"},
                              headers={"Authorization": f"Bearer {key}", "Host": "evil.example"})
    body = resp.get_json()
    assert resp.status_code == 201 and body["pack"] == "500" and body["units"] == 500
    session = next(s for s in state(fake)["checkout_sessions"]
                   if s["id"] == body["checkout_session_id"])
    assert session["success_url"] == stripe_svc.settings.checkout_success_url  # not the Host
    done = fake_post(fake, f"/_test/checkout_sessions/{body['checkout_session_id']}/complete")
    assert deliver(stripe_client, done).get_json()["outcome"] == "handled"
    assert deliver(stripe_client, done).get_json()["outcome"] == "duplicate"
    usage = usage_of(stripe_client, key)
    assert usage["credits"] == 500 and usage["hard_cap"] == 375 + 500
    assert [(e[1], e[2]) for e in captured_events if e[0] == "credit_pack_purchased"] == [
        (str(ws.id), {"pack": "500", "units": 500})]


def test_a_delayed_payment_is_credited_when_it_succeeds_and_never_when_it_fails(
        stripe_client, stripe_svc, fake, make_workspace, attached):
    _, key = attached(stripe_svc, make_workspace)
    paid, unpaid = buy(stripe_client, key), buy(stripe_client, key, "2000")
    for sid in (paid, unpaid):
        deliver(stripe_client, fake_post(fake, f"/_test/checkout_sessions/{sid}/complete",
                                         {"async": True}))
    assert usage_of(stripe_client, key)["credits"] == 0  # completed, not paid yet
    succeeded = fake_post(fake, f"/_test/checkout_sessions/{paid}/async_result",
                          {"succeeded": True})
    for _ in range(2):
        deliver(stripe_client, succeeded)
    deliver(stripe_client, fake_post(fake, f"/_test/checkout_sessions/{unpaid}/async_result",
                                     {"succeeded": False}))
    assert usage_of(stripe_client, key)["credits"] == 500


def test_a_refund_takes_back_only_the_unused_credit(stripe_client, stripe_svc, fake,
                                                    make_workspace, attached, now):
    ws, key = attached(stripe_svc, make_workspace)  # core: 250 included
    sid = buy(stripe_client, key)
    deliver(stripe_client, fake_post(fake, f"/_test/checkout_sessions/{sid}/complete"))
    with stripe_svc.db.connection() as conn:  # 550 units reserved: 300 of the credit used
        conn.execute("INSERT INTO usage_counters VALUES (%s, %s, 550)",
                     (ws.id, period_start(now)))
        intent = conn.execute("SELECT payment_intent FROM checkout_sessions WHERE id = %s",
                              (sid,)).fetchone()["payment_intent"]
    refund = fake_post(fake, "/_test/charges/refund", {"payment_intent": intent})
    assert deliver(stripe_client, refund).get_json()["outcome"] == "handled"
    assert deliver(stripe_client, refund).get_json()["outcome"] == "duplicate"
    assert usage_of(stripe_client, key)["credits"] == 300  # the 200 unused went back


def test_a_partial_refund_and_a_lost_dispute(stripe_client, stripe_svc, fake, make_workspace,
                                             attached):
    _, key = attached(stripe_svc, make_workspace)
    sid = buy(stripe_client, key, "2000")
    deliver(stripe_client, fake_post(fake, f"/_test/checkout_sessions/{sid}/complete"))
    with stripe_svc.db.connection() as conn:
        intent = conn.execute("SELECT payment_intent FROM checkout_sessions WHERE id = %s",
                              (sid,)).fetchone()["payment_intent"]
    deliver(stripe_client, fake_post(fake, "/_test/charges/refund",
                                     {"payment_intent": intent, "amount": 3000}))  # a quarter
    assert usage_of(stripe_client, key)["credits"] == 1500
    deliver(stripe_client, fake_post(fake, "/_test/disputes", {"payment_intent": intent}))
    assert usage_of(stripe_client, key)["credits"] == 0


def test_a_refund_that_arrives_before_the_payment_is_applied_when_it_is_credited(
        stripe_client, stripe_svc, fake, make_workspace, attached):
    _, key = attached(stripe_svc, make_workspace)
    sid = buy(stripe_client, key)
    completed = fake_post(fake, f"/_test/checkout_sessions/{sid}/complete")
    intent = json.loads(completed["payload"])["data"]["object"]["payment_intent"]
    refund = fake_post(fake, "/_test/charges/refund", {"payment_intent": intent})
    assert deliver(stripe_client, refund).get_json()["outcome"] == "handled"  # first
    assert deliver(stripe_client, completed).get_json()["outcome"] == "handled"
    assert usage_of(stripe_client, key)["credits"] == 0


def test_sessions_we_did_not_create_or_that_do_not_match_credit_nothing(
        stripe_client, stripe_svc, fake, make_workspace, attached):
    victim, _ = attached(stripe_svc, make_workspace)
    _, key = attached(stripe_svc, make_workspace)
    # A session made straight at Stripe, its metadata naming another workspace.
    with stripe_svc.db.connection() as conn:
        forged = stripe_svc.billing.checkout(None, str(victim.id),
                                             stripe_svc.settings.plans.packs["2000"],
                                             catalog.load_catalog(conn), "https://x", "https://x")
    done = fake_post(fake, f"/_test/checkout_sessions/{forged.session_id}/complete")
    assert deliver(stripe_client, done).get_json()["outcome"] == "handled"
    # Our session, but the paid amount is not the pack's.
    sid = buy(stripe_client, key)
    done = fake_post(fake, f"/_test/checkout_sessions/{sid}/complete")
    event = json.loads(done["payload"])
    event["id"] = "evt_tampered"
    event["data"]["object"]["amount_total"] = 1
    with stripe_svc.db.connection() as conn:
        stripe_events.handle_event(conn, stripe_svc.settings.plans, stripe_svc.events, event)
        assert conn.execute("SELECT count(*) AS n FROM credit_ledger").fetchone()["n"] == 0


def test_a_pack_paid_before_midnight_belongs_to_that_period(
        stripe_svc, make_workspace, attached, period):
    ws, _ = attached(stripe_svc, make_workspace)
    with stripe_svc.db.connection() as conn:
        checkout = stripe_events.start_checkout(stripe_svc.db, stripe_svc.billing,
                                           stripe_svc.settings.plans, ws.id, "500",
                                           "https://x", "https://x")
        session = {"id": checkout.session_id, "customer": customer_of(stripe_svc, ws),
                   "amount_total": checkout.amount_cents, "currency": "usd",
                   "payment_status": "paid", "payment_intent": "pi_late"}
        last_minute = day_start(period) - timedelta(minutes=1)  # 23:59 of the day before
        stripe_events.handle_event(conn, stripe_svc.settings.plans, stripe_svc.events, {
            "id": "evt_late", "type": "checkout.session.completed",
            "created": int(last_minute.timestamp()), "data": {"object": session}})
        (credit,) = conn.execute("SELECT created_at FROM credit_ledger").fetchall()
    assert credit["created_at"] == last_minute


def test_tampered_or_stale_webhooks_are_rejected(stripe_client):
    payload = json.dumps({"id": "evt_x", "object": "event", "type": "invoice.paid",
                          "data": {"object": {}}})
    good = sign(payload, SECRET)
    for body, signature in [(payload.replace("paid", "void"), good),
                            (payload, sign(payload, "whsec_other")),
                            (payload, sign(payload, SECRET, timestamp=1_000_000)),
                            (payload, None)]:
        headers = {"Content-Type": "application/json"}
        if signature:
            headers["Stripe-Signature"] = signature
        resp = stripe_client.post("/api/v1/stripe/webhook", data=body, headers=headers)
        assert resp.status_code == 400 and resp.mimetype == "application/problem+json"


# --- request paths -------------------------------------------------------------------------

def test_invoices_and_upcoming_preview(stripe_client, stripe_svc, fake, make_workspace, attached,
                                       day):
    ws, key = attached(stripe_svc, make_workspace)
    headers = {"Authorization": f"Bearer {key}"}
    use(stripe_svc, ws, day(1), 260)
    run_report(stripe_svc, day(1))
    upcoming = stripe_client.get("/api/v1/billing/invoices/upcoming", headers=headers)
    lines = {line["description"]: line for line in upcoming.get_json()["lines"]}
    assert lines["enrichment_core_overage"]["quantity"] == 10
    assert lines["enrichment_core_overage"]["amount_cents"] == 120
    assert lines["enrichment_core_base"]["amount_cents"] == 4900
    delivered = fake_post(fake, "/_test/invoices", {"customer": customer_of(stripe_svc, ws),
                                                     "pay": False})
    for d in delivered:
        deliver(stripe_client, d)
    with stripe_svc.db.connection() as conn:
        (inv,) = conn.execute("SELECT status, amount_due FROM invoices").fetchall()
    assert inv == {"status": "payment_failed", "amount_due": 5020}
    listed = stripe_client.get("/api/v1/billing/invoices", headers=headers).get_json()
    assert [i["amount_due_cents"] for i in listed["invoices"]] == [5020]
    calls = fake.config["requests"]
    stripe_client.get("/api/v1/billing/invoices", headers=headers)  # cached a minute
    stripe_client.get("/api/v1/billing/invoices/upcoming", headers=headers)
    assert fake.config["requests"] == calls


def test_a_slow_or_failing_stripe_answers_503_or_502_quickly(
        stripe_svc, fake, make_workspace, attached):
    from api import create_app

    _, key = attached(stripe_svc, make_workspace)
    impatient = replace(stripe_svc, billing=StripeBilling("sk_test_123", fake.url, timeout=0.5))
    client = create_app(services=impatient).test_client()
    headers = {"Authorization": f"Bearer {key}"}
    fake.config["delay_seconds"] = 2.0
    try:
        slow = client.get("/api/v1/billing/invoices/upcoming", headers=headers)
    finally:
        fake.config["delay_seconds"] = 0.0
    assert slow.status_code == 503 and slow.headers["Retry-After"] == "30"
    assert slow.mimetype == "application/problem+json"
    fake.config["fail_all"] = 500
    failing = client.post("/api/v1/billing/credit-packs", json={"pack": "500"}, headers=headers)
    assert failing.status_code == 502 and failing.headers["Retry-After"] == "30"


def test_usage_endpoint_equals_the_rows(make_workspace, db, now):
    from api import create_app

    ws, key = make_workspace(plan="core")
    period = period_start(now)
    use(db, ws, period, 260, tokens=100, searches=2, social=1, cost=Decimal("0.0125"))
    use(db, ws, period - timedelta(days=1), 7)  # last period: not counted
    with db.db.connection() as conn:
        conn.execute("INSERT INTO usage_counters VALUES (%s, %s, 262)", (ws.id, period))
    client = create_app(services=at(db, now)).test_client()  # the period of `now`
    body = client.get("/api/v1/enrichment/usage",
                      headers={"Authorization": f"Bearer {key}"}).get_json()
    assert body == {
        "workspace_id": str(ws.id), "plan": "core",
        "period": {"start": period.isoformat(),
                   "end": next_period_start(period).isoformat()},
        "included": 250, "credits": 0, "used": 260, "reserved": 262, "overage_units": 10,
        "overage_unit_price_usd": "0.12", "overage_cost_usd": "1.20", "hard_cap": 375,
        "remaining": 113, "tokens": 26000, "searches": 520, "social_requests": 260,
        "cost_estimate_usd": "3.25", "matched": 0, "unmatched": 0, "livemode": True}


def test_billing_endpoints_without_stripe(client, auth):
    _, headers = auth
    resp = client.post("/api/v1/billing/credit-packs", json={"pack": "500"}, headers=headers)
    assert resp.status_code == 403 and resp.mimetype == "application/problem+json"
    assert client.post("/api/v1/billing/credit-packs", json={"pack": "7"},
                       headers=headers).status_code == 422
    assert client.get("/api/v1/billing/invoices", headers=headers).get_json() == {
        "invoices": []}
    assert client.get("/api/v1/billing/invoices/upcoming", headers=headers).status_code == 404


# --- the CLI -------------------------------------------------------------------------------

def test_billing_cli(db, fake, make_workspace):
    from click.testing import CliRunner

    from enrichment.cli import main

    fake.config.update(fail_all=0, delay_seconds=0.0)
    runner = CliRunner(env={"STRIPE_API_KEY": "sk_test_cli", "STRIPE_API_BASE": fake.url})
    first = runner.invoke(main, ["billing", "sync-catalog"], catch_exceptions=False)
    second = runner.invoke(main, ["billing", "sync-catalog"], catch_exceptions=False)
    assert first.exit_code == 0 and "enrichment_core_overage" in first.stdout
    assert first.stdout == second.stdout
    created = runner.invoke(main, ["workspace", "create", "--name", "Cli", "--plan", "core",
                                   "--json"], catch_exceptions=False)
    ws_id = json.loads(created.output.strip().splitlines()[-1])["workspace_id"]
    with db.db.connection() as conn:  # created with its Stripe customer
        assert conn.execute("SELECT stripe_customer_id FROM workspaces WHERE id = %s",
                            (ws_id,)).fetchone()["stripe_customer_id"].startswith("cus_")
    moved = runner.invoke(main, ["workspace", "set-plan", ws_id, "pro"], catch_exceptions=False)
    assert "Stripe subscription moved" in moved.output
    # The day it is a minute from now (the CLI reads the services' clock too): not ended.
    unended = (db.clock() + timedelta(minutes=1)).date()
    refused = runner.invoke(main, ["billing", "report", "--date", unended.isoformat()])
    assert refused.exit_code == 1 and "has not ended" in refused.output
    done = runner.invoke(main, ["billing", "report"], catch_exceptions=False)
    assert done.exit_code == 0 and json.loads(done.output.strip().splitlines()[-1])["through"]
    assert runner.invoke(main, ["billing", "reconcile"]).exit_code == 0
    ledger = CliRunner(env={"STRIPE_API_KEY": ""}).invoke(main, ["billing", "sync-catalog"])
    assert ledger.exit_code == 1 and "ledger-only" in ledger.output


def test_workspace_create_prints_the_key_when_stripe_fails_and_the_sync_job_attaches_it(
        db, fake):
    from click.testing import CliRunner

    from enrichment.cli import main

    runner = CliRunner(env={"STRIPE_API_KEY": "sk_test_cli", "STRIPE_API_BASE": fake.url})
    created = runner.invoke(main, ["workspace", "create", "--name", "Early", "--plan", "core",
                                   "--json"], catch_exceptions=False)  # no catalog yet
    assert created.exit_code == 0 and "not attached to Stripe yet" in created.output
    body = json.loads(created.output.strip().splitlines()[-1])
    assert body["api_key"].startswith("lek_")
    runner.invoke(main, ["billing", "sync-catalog"], catch_exceptions=False)
    synced = runner.invoke(main, ["billing", "sync"], catch_exceptions=False)
    assert json.loads(synced.output.strip().splitlines()[-1])["attached"] == 1


def test_a_resend_after_the_dedup_window_is_judged_on_its_own_minute(
        stripe_svc, fake, make_workspace, attached, day, now):
    """Stripe's meter summaries are eventually consistent: another day's event sent a minute
    ago may not show yet. Judged over the whole period, that made a landed event look lost
    and it was billed twice; judged on its own minute, it is not."""
    ws, _ = attached(stripe_svc, make_workspace)
    use(stripe_svc, ws, day(1), 260)  # 10 over
    clock = fake.now
    later = now + timedelta(hours=25)
    try:
        fake.now = lambda: now.timestamp()
        fake.config["lose_next_meter_event_response"] = True  # accepted, answer lost
        assert run_report(at(stripe_svc, now), day(1)) == {"frozen": 1, "pending": 1}
        with stripe_svc.db.connection() as conn:  # day 1 waits out a long backoff
            conn.execute("UPDATE usage_reports SET next_attempt_at = %s WHERE day = %s",
                         (later, day(1)))
        use(stripe_svc, ws, day(2), 5)  # 5 more
        fake.config["summary_lag_seconds"] = 3600
        fake.now = lambda: (later - timedelta(minutes=1)).timestamp()
        assert run_report(at(stripe_svc, later - timedelta(minutes=1)), day(2)) == {
            "frozen": 1, "sent": 1}
        fake.forget_identifiers()  # Stripe no longer knows day 1's identifier
        fake.now = lambda: later.timestamp()
        assert run_report(at(stripe_svc, later), day(2)) == {"frozen": 0, "sent": 1}
    finally:
        fake.now, fake.config["summary_lag_seconds"] = clock, 0
    assert [e["payload"]["value"] for e in events_for(fake, customer_of(stripe_svc, ws))
            ] == ["10", "5"]  # day 1 not sent twice


def test_a_pack_recorded_after_its_day_was_billed_pays_only_for_later_days(
        stripe_svc, fake, make_workspace, attached, day, period, now):
    ws, _ = attached(stripe_svc, make_workspace)  # core: 250 included
    use(stripe_svc, ws, day(1), 260)
    assert run_report(at(stripe_svc, now), day(1)) == {"frozen": 1, "sent": 1}  # 10 billed
    # Paid at 23:00 on day 1, but Stripe's event reached us after day 1 was billed.
    checkout = stripe_events.start_checkout(stripe_svc.db, stripe_svc.billing,
                                            stripe_svc.settings.plans, ws.id, "500",
                                            "https://x", "https://x")
    paid_at = day_start(day(1)) + timedelta(hours=23)
    with stripe_svc.db.connection() as conn:
        stripe_events.handle_event(conn, stripe_svc.settings.plans, stripe_svc.events, {
            "id": "evt_paid_late", "type": "checkout.session.completed",
            "created": int(paid_at.timestamp()), "data": {"object": {
                "id": checkout.session_id, "customer": customer_of(stripe_svc, ws),
                "amount_total": checkout.amount_cents, "currency": "usd",
                "payment_status": "paid", "payment_intent": "pi_paid_late"}}})
    use(stripe_svc, ws, day(2), 5)
    run_report(at(stripe_svc, now), day(2))
    with stripe_svc.db.connection() as conn:
        position = usage.credit_position(conn, stripe_svc.settings.plans, ws.id, period, day(2))
    # Day 1's 10 units were billed as overage: the credit pays for day 2's 5 only.
    assert position.credits_used == 5
    assert [e["payload"]["value"] for e in events_for(fake, customer_of(stripe_svc, ws))
            ] == ["10"]
