"""Seams of the units ledger (docs/architecture.md, "Invariants and their owners": units,
credits, suppression): a refund while units are only reserved, an objection while a job
runs, a job admitted on the month's last minute and run on the next month's first. Every
time comes from the injected clock."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from enrichment import pipeline, privacy, webhooks
from enrichment.billing.stripe_events import handle_event
from enrichment.jobs import intake
from enrichment.templates import TEMPLATES

MID_MONTH = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
LAST_MINUTE = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)


def at(svc, when: datetime):
    return replace(svc, clock=lambda: when)


def submit(svc, ws, n: int, plan: str = "core", first: int = 0) -> list[str]:
    """n leads of distinct subjects, all runnable (as many slots as leads)."""
    ids = []
    with svc.db.connection() as conn:
        for i in range(first, first + n):
            ids.append(str(intake.admit(
                conn, workspace=ws, plan=svc.settings.plans[plan],
                template=TEMPLATES["person_basic"], lead={"email": f"p{i}@acme.com"},
                metadata={}, now=svc.clock(), slots=10_000).job["id"]))
    return ids


def stripe_event(svc, kind: str, obj: dict) -> None:
    with svc.db.connection() as conn:
        handle_event(conn, svc.settings.plans, svc.events, {
            "id": f"evt_{uuid.uuid4().hex}", "type": kind,
            "created": int(svc.clock().timestamp()), "data": {"object": obj}})


def pay_pack(svc, ws, units: int, intent: str, amount: int = 3500) -> None:
    """A credit pack sold here and paid now (the checkout session as start_checkout stores it)."""
    with svc.db.connection() as conn:
        conn.execute("INSERT INTO checkout_sessions (id, workspace_id, pack, units,"
                     " amount_cents, currency) VALUES (%s, %s, '500', %s, %s, 'usd')",
                     (f"cs_{intent}", ws.id, units, amount))
    stripe_event(svc, "checkout.session.completed", {
        "id": f"cs_{intent}", "payment_status": "paid", "amount_total": amount,
        "currency": "usd", "payment_intent": intent})


def counters(svc, ws) -> dict:
    with svc.db.connection() as conn:
        return {r["period"].isoformat(): r["reserved"] for r in conn.execute(
            "SELECT period, reserved FROM usage_counters WHERE workspace_id = %s", (ws.id,))}


def test_a_refund_while_its_units_are_reserved_is_never_spendable_again(
        db, make_workspace, simulator):
    svc = at(db, MID_MONTH)
    ws, _ = make_workspace(plan="core")  # 250 included: cap 375
    pay_pack(svc, ws, 10, "pi_reserved")  # cap 385
    queued = submit(svc, ws, 385)  # every unit reserved, none charged
    stripe_event(svc, "charge.refunded",
                 {"payment_intent": "pi_reserved", "amount": 3500, "amount_refunded": 3500})
    simulator.config.found_nothing = True  # the ten jobs find nothing: their units come back
    for job_id in queued[:10]:
        assert pipeline.run_job(svc, job_id) == "succeeded"
    assert counters(svc, ws) == {"2026-11-01": 375}
    with pytest.raises(intake.Refused) as refused:
        submit(svc, ws, 1, first=1000)
    assert refused.value.status == 402 and refused.value.extra["hard_cap"] == 375


def test_an_objection_while_the_job_runs_stops_it(db, make_workspace, simulator):
    svc = at(db, MID_MONTH)
    ws, _ = make_workspace(plan="pro")
    with db.db.connection() as conn:
        webhooks.create_endpoint(conn, ws.id, "https://127.0.0.1:9/hook",
                                 ["job.succeeded", "job.failed"], allow_private=True)
    (job_id,) = submit(svc, ws, 1, plan="pro")
    research = svc.providers["perplexity"]

    class ObjectsMidRun:  # the subject objects while the provider is being asked
        configured = True

        def fill(self, ask):
            with db.db.connection() as conn:
                privacy.record_consent(conn, ws.id, privacy.Consent(
                    "p0@acme.com", "enrichment", "legitimate_interest", False, "test"))
            return research.fill(ask)

    providers = {**svc.providers, "perplexity": ObjectsMidRun()}
    assert pipeline.run_job(replace(svc, providers=providers), job_id) == "failed"
    with db.db.connection() as conn:
        job = conn.execute("SELECT status, error, match FROM enrichment_jobs WHERE id = %s",
                           (job_id,)).fetchone()
        assert job["status"] == "failed" and "objected" in job["error"]
        assert conn.execute("SELECT count(*) AS n FROM enrichment_results").fetchone()["n"] == 0
        assert conn.execute("SELECT coalesce(sum(units), 0) AS n FROM enrichment_usage"
                            ).fetchone()["n"] == 0
        sent = conn.execute("SELECT event_type, payload::text AS body FROM webhook_deliveries"
                            ).fetchall()
    assert all("p0@acme.com" not in d["body"] for d in sent)
    assert [d["event_type"] for d in sent] == []
    assert counters(svc, ws) == {"2026-11-01": 0}


def test_a_job_admitted_on_the_last_minute_is_charged_in_the_month_it_runs(
        db, make_workspace, simulator):
    ws, _ = make_workspace(plan="core")
    (job_id,) = submit(at(db, LAST_MINUTE), ws, 1)
    assert counters(db, ws) == {"2026-11-01": 1}
    first_of_december = LAST_MINUTE + timedelta(minutes=2)
    assert pipeline.run_job(at(db, first_of_december), job_id) == "succeeded"
    assert counters(db, ws) == {"2026-11-01": 0, "2026-12-01": 1}
    with db.db.connection() as conn:
        (usage,) = conn.execute("SELECT units, created_at FROM enrichment_usage").fetchall()
    assert usage["units"] == 1 and usage["created_at"] == first_of_december


def test_a_job_that_runs_into_a_full_month_fails_before_any_provider_is_paid(
        db, make_workspace, simulator):
    ws, _ = make_workspace(plan="core")
    late = submit(at(db, LAST_MINUTE), ws, 1)[0]
    december = at(db, LAST_MINUTE + timedelta(hours=1))
    submit(december, ws, 375, first=1)  # December's cap is full
    asked = sum(simulator.stats.counts.values())
    assert pipeline.run_job(december, late) == "failed"
    assert counters(db, ws) == {"2026-11-01": 0, "2026-12-01": 375}
    with db.db.connection() as conn:
        job = conn.execute("SELECT error FROM enrichment_jobs WHERE id = %s", (late,)).fetchone()
        assert job["error"].startswith("hard-cap-reached")
        assert conn.execute("SELECT count(*) AS n FROM enrichment_usage WHERE units > 0"
                            ).fetchone()["n"] == 0
    assert sum(simulator.stats.counts.values()) == asked  # no provider was asked


def test_a_message_queued_before_the_subject_is_suppressed_is_never_sent(
        db, make_workspace, simulator):
    svc = at(db, MID_MONTH)
    ws, _ = make_workspace(plan="pro")
    with db.db.connection() as conn:
        webhooks.create_endpoint(conn, ws.id, "https://127.0.0.1:9/hook", ["job.succeeded"],
                                 allow_private=True)
    (job_id,) = submit(svc, ws, 1, plan="pro")
    assert pipeline.run_job(svc, job_id) == "succeeded"
    with db.db.connection() as conn:
        (delivery,) = conn.execute("SELECT id FROM webhook_deliveries").fetchall()
        # Suppressed by a path that did not drop the message (the fence must hold anyway).
        conn.execute("INSERT INTO suppressions (workspace_id, subject_hash, reason)"
                     " SELECT workspace_id, subject_hash, 'objection' FROM enrichment_jobs")
    outcome = webhooks.deliver(db.db, delivery["id"], allow_private=True, concurrency=1)
    assert outcome.outcome != "delivered"
    with db.db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM webhook_deliveries").fetchone()["n"] == 0


def test_a_job_moved_into_a_new_month_counts_against_the_plan_in_force_then(
        db, make_workspace, simulator):
    from enrichment.billing import accounts
    from enrichment.jobs import lifecycle

    ws, _ = make_workspace(plan="core")  # cap 375
    late = submit(at(db, LAST_MINUTE), ws, 1)[0]
    december = at(db, LAST_MINUTE + timedelta(hours=1))
    job = lifecycle.claim(db.db, late, 60)  # claimed on the core plan ...
    with db.db.connection() as conn:  # ... which an upgrade replaces while it runs
        accounts.set_plan(conn, db.key_cache, db.settings.plans, ws.id, "pro", december.clock())
    submit(december, ws, 375, plan="pro", first=1)  # the old plan's cap, not the new one's
    assert pipeline.in_this_period(december, job)
    assert counters(db, ws) == {"2026-11-01": 0, "2026-12-01": 376}
