"""Billing through the real `stripe` library against the fake Stripe: catalog, customers,
the overage report exactly once (double run, concurrent run, crash after acceptance, missed
night), credits, webhooks, invoices, reconciliation, the usage endpoint."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from enrichment import metering, payments
from enrichment.billing import LedgerBilling, StripeBilling
from simulators.stripe_fake import StripeFakeServer, sign

SECRET = "whsec_test"


@pytest.fixture(scope="session")
def fake():
    with StripeFakeServer() as server:
        yield server


@pytest.fixture
def stripe_svc(db, fake):
    """Services with Stripe billing (the fake), and the catalog synced."""
    fake.config.update(lose_next_meter_event_response=False, forget_idempotency=False)
    svc = replace(db, billing=StripeBilling("sk_test_123", fake.url),
                  settings=replace(db.settings, stripe_webhook_secret=SECRET))
    with svc.db.connection() as conn:
        payments.save_catalog(conn, svc.billing.sync_catalog(svc.settings.plans))
    return svc



def attached(svc, make_workspace, plan="core"):
    ws, key = make_workspace(plan=plan)
    with svc.db.connection() as conn:
        payments.attach(conn, svc.billing, ws.id)
    return ws, key


def use(svc, ws, day: date, units: int, **figures) -> None:
    """`units` succeeded jobs' usage rows on that UTC day."""
    with svc.db.connection() as conn:
        for i in range(units):
            conn.execute(
                "INSERT INTO enrichment_usage (workspace_id, job_id, template, units, tokens,"
                " searches, social_requests, cost_estimate_usd, created_at)"
                " VALUES (%s, %s, 'company_profile', 1, %s, %s, %s, %s, %s)",
                (ws.id, uuid.uuid4(), figures.get("tokens", 0), figures.get("searches", 0),
                 figures.get("social", 0), figures.get("cost", Decimal(0)),
                 datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=1 + i % 20)))


def report(svc, through: date) -> dict:
    return metering.report(svc.db, svc.settings.plans, svc.billing, svc.events, through,
                           through + timedelta(days=1))


def rows(svc):
    with svc.db.connection() as conn:
        return conn.execute("SELECT day, units, status, used_to_date FROM usage_reports"
                            " ORDER BY day").fetchall()


def events_for(fake, customer):
    return [e for e in fake.meter_events if e["payload"]["stripe_customer_id"] == customer]


OCT = [date(2026, 10, d) for d in range(1, 32)]


def test_catalog_sync_is_idempotent(stripe_svc, fake):
    first = stripe_svc.billing.sync_catalog(stripe_svc.settings.plans)
    second = stripe_svc.billing.sync_catalog(stripe_svc.settings.plans)
    assert first == second
    state = fake.app.test_client().get("/_test/state").get_json()
    assert len(state["meters"]) == 1
    keys = [p["lookup_key"] for p in state["prices"]]
    assert len(keys) == len(set(keys)) == 6 * 2 + 2
    overage = next(p for p in state["prices"] if p["lookup_key"] == "enrichment_core_overage")
    assert overage["recurring"]["usage_type"] == "metered"
    assert overage["recurring"]["meter"] == first["meter"]
    assert Decimal(overage["unit_amount_decimal"]) == Decimal("12.00")  # $0.12 in cents


def test_attach_creates_customer_with_workspace_id_and_subscription(stripe_svc, fake,
                                                                   make_workspace):
    ws, _ = attached(stripe_svc, make_workspace, plan="pro")
    state = fake.app.test_client().get("/_test/state").get_json()
    with stripe_svc.db.connection() as conn:
        row = conn.execute("SELECT stripe_customer_id, stripe_subscription_id FROM workspaces"
                           " WHERE id = %s", (ws.id,)).fetchone()
        assert payments.attach(conn, stripe_svc.billing, ws.id) == row["stripe_customer_id"]
    customer = next(c for c in state["customers"] if c["id"] == row["stripe_customer_id"])
    assert customer["metadata"] == {"workspace_id": str(ws.id)}
    sub = next(s for s in state["subscriptions"] if s["id"] == row["stripe_subscription_id"])
    assert {i["price"]["lookup_key"] for i in sub["items"]["data"]} == {
        "enrichment_pro_base", "enrichment_pro_overage"}


def test_overage_is_reported_once_in_day_order(stripe_svc, fake, make_workspace, captured_events):
    ws, _ = attached(stripe_svc, make_workspace)  # core: 250 included
    use(stripe_svc, ws, OCT[0], 200)
    use(stripe_svc, ws, OCT[1], 100)
    use(stripe_svc, ws, OCT[3], 30)
    done = report(stripe_svc, OCT[4])
    assert done == {"frozen": 3, "sent": 2}
    assert [(r["day"].day, r["units"], r["status"]) for r in rows(stripe_svc)] == [
        (1, 0, "none"), (2, 50, "sent"), (4, 30, "sent")]
    customer = events_for(fake, payments_customer(stripe_svc, ws))
    assert [(e["payload"]["value"], e["identifier"]) for e in customer] == [
        ("50", f"overage-{ws.id}-2026-10-02"), ("30", f"overage-{ws.id}-2026-10-04")]
    billed = [e for e in captured_events if e[0] == "enrichment_overage_billed"]
    assert [(e[2]["units"], e[2]["amount_usd"]) for e in billed] == [(50, "6.00"), (30, "3.60")]
    # A re-run sends nothing new.
    assert report(stripe_svc, OCT[4]) == {"frozen": 0}
    assert len(events_for(fake, payments_customer(stripe_svc, ws))) == 2


def payments_customer(svc, ws) -> str:
    with svc.db.connection() as conn:
        return conn.execute("SELECT stripe_customer_id FROM workspaces WHERE id = %s",
                            (ws.id,)).fetchone()["stripe_customer_id"]


def test_missed_nights_and_a_month_end_are_caught_up(stripe_svc, fake, make_workspace):
    ws, _ = attached(stripe_svc, make_workspace)
    use(stripe_svc, ws, OCT[29], 260)  # Oct 30: 10 over
    use(stripe_svc, ws, OCT[30], 5)  # Oct 31: 5 more
    use(stripe_svc, ws, date(2026, 11, 1), 251)  # a new period: 1 over
    assert report(stripe_svc, date(2026, 11, 2)) == {"frozen": 3, "sent": 3}
    assert [e["payload"]["value"] for e in events_for(fake, payments_customer(stripe_svc, ws))
            ] == ["10", "5", "1"]


def test_credits_are_consumed_before_overage(stripe_svc, fake, make_workspace):
    ws, _ = attached(stripe_svc, make_workspace)
    use(stripe_svc, ws, OCT[0], 240)
    with stripe_svc.db.connection() as conn:  # 100 credit units bought on Oct 2
        conn.execute("INSERT INTO credit_ledger (workspace_id, units, reason, created_at)"
                     " VALUES (%s, 100, 'pack', '2026-10-02T08:00:00Z')", (ws.id,))
    use(stripe_svc, ws, OCT[1], 100)  # 340 ≤ 350
    use(stripe_svc, ws, OCT[2], 20)  # 360: 10 over
    report(stripe_svc, OCT[2])
    assert [(r["day"].day, r["units"]) for r in rows(stripe_svc)] == [(1, 0), (2, 0), (3, 10)]


def test_two_concurrent_runs_send_each_report_once(stripe_svc, fake, make_workspace):
    spaces = [attached(stripe_svc, make_workspace)[0] for _ in range(6)]
    for ws in spaces:
        for d in range(3):
            use(stripe_svc, ws, OCT[d], 200)  # days 2 and 3 go over (150, 200)
    results = []
    threads = [threading.Thread(target=lambda: results.append(report(stripe_svc, OCT[2])))
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


def test_crash_after_stripe_accepted_is_settled_without_double_reporting(stripe_svc, fake,
                                                                         make_workspace):
    ws, _ = attached(stripe_svc, make_workspace)
    use(stripe_svc, ws, OCT[0], 260)
    fake.config["lose_next_meter_event_response"] = True  # accepted, answer lost
    first = report(stripe_svc, OCT[0])
    assert first == {"frozen": 1, "failed": 1}
    assert rows(stripe_svc)[0]["status"] == "pending"
    second = report(stripe_svc, OCT[0])  # Stripe: duplicate identifier → sent
    assert second == {"frozen": 0, "sent": 1}
    assert len(events_for(fake, payments_customer(stripe_svc, ws))) == 1


def test_ledger_only_records_and_sends_nothing(db, fake, make_workspace, captured_events):
    svc = replace(db, billing=LedgerBilling())
    ws, _ = make_workspace(plan="core")
    use(svc, ws, OCT[0], 255)
    before = len(fake.meter_events)
    assert report(svc, OCT[0]) == {"frozen": 1, "ledger": 1}
    assert rows(svc)[0]["status"] == "ledger" and len(fake.meter_events) == before
    assert [e[2]["units"] for e in captured_events if e[0] == "enrichment_overage_billed"] == [5]


def test_a_day_that_has_not_ended_is_refused(db):
    today = datetime.now(UTC).date()
    with pytest.raises(ValueError, match="not ended"):
        metering.report(db.db, db.settings.plans, db.billing, db.events, today, today)


def test_reconciliation_finds_discrepancies(stripe_svc, fake, make_workspace):
    ws, _ = attached(stripe_svc, make_workspace)
    use(stripe_svc, ws, OCT[0], 260)
    report(stripe_svc, OCT[0])
    with stripe_svc.db.connection() as conn:
        assert payments.reconcile(conn, stripe_svc.settings.plans, stripe_svc.billing,
                                  OCT[0]) == []
        use(stripe_svc, ws, OCT[0], 3)  # a usage row landed after the day was frozen
        (problem,) = payments.reconcile(conn, stripe_svc.settings.plans, stripe_svc.billing,
                                        OCT[0])
    assert problem == {"workspace_id": str(ws.id), "expected": 13, "reported": 10,
                       "sent": 10, "stripe": 10}


# --- HTTP ------------------------------------------------------------------------------------

@pytest.fixture
def stripe_client(stripe_svc):
    from api import create_app

    return create_app(services=stripe_svc).test_client()


def test_credit_pack_purchase_end_to_end(stripe_client, stripe_svc, fake, make_workspace,
                                         captured_events):
    ws, key = attached(stripe_svc, make_workspace)
    headers = {"Authorization": f"Bearer {key}"}
    resp = stripe_client.post("/api/v1/billing/credit-packs", json={"pack": "500"},
                              headers=headers)
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["pack"] == "500" and body["units"] == 500
    assert body["checkout_url"].startswith("http") and body["checkout_session_id"]
    done = fake.app.test_client().post(
        f"/_test/checkout_sessions/{body['checkout_session_id']}/complete").get_json()
    hook = {"Stripe-Signature": done["signature"], "Content-Type": "application/json"}
    first = stripe_client.post("/api/v1/stripe/webhook", data=done["payload"], headers=hook)
    again = stripe_client.post("/api/v1/stripe/webhook", data=done["payload"], headers=hook)
    assert first.get_json()["outcome"] == "handled" and again.get_json()["outcome"] == "duplicate"
    usage = stripe_client.get("/api/v1/enrichment/usage", headers=headers).get_json()
    assert usage["credits"] == 500 and usage["hard_cap"] == 375 + 500
    assert [(e[1], e[2]) for e in captured_events if e[0] == "credit_pack_purchased"] == [
        (str(ws.id), {"pack": "500", "units": 500})]


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


def test_invoices_and_upcoming_preview(stripe_client, stripe_svc, fake, make_workspace):
    ws, key = attached(stripe_svc, make_workspace)
    headers = {"Authorization": f"Bearer {key}"}
    use(stripe_svc, ws, OCT[0], 260)
    report(stripe_svc, OCT[0])
    upcoming = stripe_client.get("/api/v1/billing/invoices/upcoming", headers=headers)
    lines = {line["description"]: line for line in upcoming.get_json()["lines"]}
    assert lines["enrichment_core_overage"]["quantity"] == 10
    assert lines["enrichment_core_overage"]["amount_cents"] == 120
    assert lines["enrichment_core_base"]["amount_cents"] == 4900
    delivered = fake.app.test_client().post("/_test/invoices", json={
        "customer": payments_customer(stripe_svc, ws), "pay": False}).get_json()
    for d in delivered:
        stripe_client.post("/api/v1/stripe/webhook", data=d["payload"], headers={
            "Stripe-Signature": d["signature"], "Content-Type": "application/json"})
    with stripe_svc.db.connection() as conn:
        (inv,) = conn.execute("SELECT status, amount_due FROM invoices").fetchall()
    assert inv == {"status": "payment_failed", "amount_due": 5020}
    listed = stripe_client.get("/api/v1/billing/invoices", headers=headers).get_json()
    assert [i["amount_due_cents"] for i in listed["invoices"]] == [5020]


def test_usage_endpoint_equals_the_rows(client, make_workspace, db):
    ws, key = make_workspace(plan="core")
    now = datetime.now(UTC)
    use(db, ws, now.date().replace(day=1), 260, tokens=100, searches=2, social=1,
        cost=Decimal("0.0125"))
    use(db, ws, (now.replace(day=1) - timedelta(days=1)).date(), 7)  # last period: not counted
    with db.db.connection() as conn:
        conn.execute("INSERT INTO usage_counters VALUES (%s, %s, 262)",
                     (ws.id, now.date().replace(day=1)))
    body = client.get("/api/v1/enrichment/usage",
                      headers={"Authorization": f"Bearer {key}"}).get_json()
    assert body == {
        "workspace_id": str(ws.id), "plan": "core",
        "period": {"start": now.date().replace(day=1).isoformat(),
                   "end": metering.next_period_start(now.date().replace(day=1)).isoformat()},
        "included": 250, "credits": 0, "used": 260, "reserved": 262, "overage_units": 10,
        "overage_unit_price_usd": "0.12", "overage_cost_usd": "1.20", "hard_cap": 375,
        "remaining": 113, "tokens": 26000, "searches": 520, "social_requests": 260,
        "cost_estimate_usd": "3.25"}


def test_billing_endpoints_without_stripe(client, auth):
    _, headers = auth
    resp = client.post("/api/v1/billing/credit-packs", json={"pack": "500"}, headers=headers)
    assert resp.status_code == 403 and resp.mimetype == "application/problem+json"
    assert client.post("/api/v1/billing/credit-packs", json={"pack": "7"},
                       headers=headers).status_code == 422
    assert client.get("/api/v1/billing/invoices", headers=headers).get_json() == {
        "invoices": []}
    assert client.get("/api/v1/billing/invoices/upcoming", headers=headers).status_code == 404


def test_billing_cli(db, fake, make_workspace):
    from click.testing import CliRunner

    from enrichment.cli import main

    runner = CliRunner(env={"STRIPE_API_KEY": "sk_test_cli", "STRIPE_API_BASE": fake.url})
    first = runner.invoke(main, ["billing", "sync-catalog"], catch_exceptions=False)
    second = runner.invoke(main, ["billing", "sync-catalog"], catch_exceptions=False)
    assert first.exit_code == 0 and "enrichment_core_overage" in first.output
    assert first.output == second.output
    created = runner.invoke(main, ["workspace", "create", "--name", "Cli", "--plan", "core",
                                   "--json"], catch_exceptions=False)
    ws_id = json.loads(created.output.strip().splitlines()[-1])["workspace_id"]
    with db.db.connection() as conn:  # created with its Stripe customer
        assert conn.execute("SELECT stripe_customer_id FROM workspaces WHERE id = %s",
                            (ws_id,)).fetchone()["stripe_customer_id"].startswith("cus_")
    today = datetime.now(UTC).date().isoformat()
    refused = runner.invoke(main, ["billing", "report", "--date", today])
    assert refused.exit_code == 1 and "has not ended" in refused.output
    done = runner.invoke(main, ["billing", "report"], catch_exceptions=False)
    assert done.exit_code == 0 and json.loads(done.output.strip().splitlines()[-1])["through"]
    assert runner.invoke(main, ["billing", "reconcile"]).exit_code == 0
    ledger = CliRunner(env={"STRIPE_API_KEY": ""}).invoke(main, ["billing", "sync-catalog"])
    assert ledger.exit_code == 1 and "ledger-only" in ledger.output
