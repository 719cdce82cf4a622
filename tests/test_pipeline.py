"""The pipeline as a plain function on real Postgres and the simulator (no worker)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from enrichment import pipeline
from enrichment.config import PERPLEXITY_MAX_TOKENS
from enrichment.jobs import dead_letters, intake, lifecycle, read, states
from enrichment.templates import TEMPLATES

from .helpers import eventually

LEAD = {"email": "jane@acme.com", "name": "Jane Doe", "company": "Acme"}


@pytest.fixture
def new_job(db, make_workspace):
    def make(template="person_basic", plan="pro", lead=LEAD):
        ws, _ = make_workspace(plan=plan)
        with db.db.connection() as conn:
            admitted = intake.admit(conn, slots=1, workspace=ws, plan=db.settings.plans[plan],
                                       template=TEMPLATES[template], lead=lead, metadata={},
                                       now=db.clock())
        return str(admitted.job["id"]), ws

    return make


def job_row(db, job_id):
    with db.db.connection() as conn:
        return read.get_job(conn, conn.execute(
            "SELECT workspace_id FROM enrichment_jobs WHERE id = %s", (job_id,)
        ).fetchone()["workspace_id"], job_id)


def usage_rows(db, job_id):
    with db.db.connection() as conn:
        return conn.execute("SELECT * FROM enrichment_usage WHERE job_id = %s",
                            (job_id,)).fetchall()


def test_person_basic_succeeds_with_fields_citations_and_usage(db, new_job):
    job_id, _ = new_job()
    assert pipeline.run_job(db, job_id) == "succeeded"
    body = read.job_body(job_row(db, job_id))
    assert body["status"] == "succeeded" and body["attempts"] == 1
    assert set(body["result"]["fields"]) == set(TEMPLATES["person_basic"].fields)
    assert body["result"]["citations"]
    assert 0 < body["result"]["completeness"] <= 1
    found = sum(1 for v in body["result"]["fields"].values() if v)
    assert body["result"]["completeness"] == round(found / 7, 3)
    usage = body["usage"]
    assert usage["units"] == 1 and usage["tokens"] > 0 and usage["social_requests"] == 1
    assert Decimal(usage["cost_estimate_usd"]) > 0
    assert body["started_at"] and body["completed_at"]
    (row,) = usage_rows(db, job_id)
    assert (row["max_tokens"], row["max_searches"]) == (2500, 3)  # pro: 2,500; template wants 3


def test_caps_follow_the_plan_and_the_provider_ceiling():
    from enrichment.config import load_plans

    plans = load_plans()
    assert pipeline.caps(plans["core"], TEMPLATES["company_profile"]) == (1500, 2)
    assert pipeline.caps(plans["elite"], TEMPLATES["company_profile"]) == (3500, 3)
    assert pipeline.caps(plans["scale"], TEMPLATES["company_profile"]) == (
        PERPLEXITY_MAX_TOKENS, 3)


def test_social_only_template_makes_no_research_call(db, new_job, simulator):
    job_id, _ = new_job(template="person_social")
    assert pipeline.run_job(db, job_id) == "succeeded"
    counts = simulator.stats.snapshot()["counts"]
    assert "perplexity.ok" not in counts and counts["social_links.ok"] == 1
    assert job_row(db, job_id)["tokens"] == 0


def test_duplicate_delivery_does_nothing(db, new_job, simulator):
    job_id, _ = new_job()
    assert pipeline.run_job(db, job_id) == "succeeded"
    assert pipeline.run_job(db, job_id) == "skipped"
    assert len(usage_rows(db, job_id)) == 1
    assert simulator.stats.snapshot()["counts"]["perplexity.ok"] == 1


def test_retries_count_as_attempts(db, new_job, simulator):
    simulator.config.perplexity_rps = 1
    first, _ = new_job(lead={"email": "a@acme.com", "name": "A"})
    second, _ = new_job(lead={"email": "b@acme.com", "name": "B"})
    assert pipeline.run_job(db, first) == "succeeded"
    assert pipeline.run_job(db, second) == "succeeded"  # hits the 1 rps limit, retries
    assert job_row(db, second)["attempts"] >= 2


def test_provider_outage_ends_dead_with_a_zero_unit_usage_row(db, new_job, simulator):
    simulator.config.outage_status = 503
    job_id, _ = new_job()
    svc = replace(db, base_policy=replace(db.base_policy, max_attempts=2))
    assert pipeline.run_job(svc, job_id) == "dead"
    row = job_row(db, job_id)
    assert row["status"] == "dead" and row["attempts"] == 2 and "503" in row["error"]
    assert row["fields"] is None
    (usage,) = usage_rows(db, job_id)
    assert usage["units"] == 0


def test_final_4xx_ends_failed(db, new_job, simulator):
    simulator.config.outage_status = 403
    job_id, _ = new_job()
    assert pipeline.run_job(db, job_id) == "failed"
    row = job_row(db, job_id)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert usage_rows(db, job_id)[0]["units"] == 0


def claim(db, job_id):
    return lifecycle.claim(db.db, job_id, db.settings.job_lease_seconds)


def expire_lease(db, job_id, **extra):
    sets = "".join(f", {k} = {v}" for k, v in extra.items())
    with db.db.connection() as conn:
        conn.execute("UPDATE enrichment_jobs SET lease_until = now() - interval '1 second'"
                     + sets + " WHERE id = %s", (job_id,))


def test_expired_lease_is_swept_back_and_finishes_once(db, new_job):
    job_id, _ = new_job()
    claimed = claim(db, job_id)  # a worker claims it, then "dies"
    assert claimed is not None
    assert claim(db, job_id) is None  # while the lease holds nobody else can
    expire_lease(db, job_id)
    sent = []
    db_sent = replace(db, publisher=type("P", (), {"publish": lambda s, j, q: sent.append(j)})())
    assert pipeline.sweep(db_sent) == {"requeued": 1, "dead": 0, "resent": 0, "filled": 0,
                                       "published": 1}
    assert sent == [job_id]
    with db.db.connection() as conn:
        assert conn.execute("SELECT status FROM enrichment_jobs WHERE id = %s",
                            (job_id,)).fetchone()["status"] == "queued"
    assert pipeline.run_job(db, job_id) == "succeeded"
    # The "dead" worker wakes up and tries to finish with its old lease: fenced off.
    with db.db.connection() as conn:
        outcome = states.Outcome(states.JobStatus.SUCCEEDED, units=1, result={
            "fields": {}, "citations": [], "completeness": 0.0})
        assert lifecycle.finish(conn, claimed, outcome, limit=1, now=db.clock()) is None
    assert len(usage_rows(db, job_id)) == 1
    assert job_row(db, job_id)["attempts"] == 2


def test_sweeper_buries_jobs_that_used_their_attempts(db, new_job):
    job_id, _ = new_job()
    claim(db, job_id)
    expire_lease(db, job_id, runs=5)
    assert pipeline.sweep(db)["dead"] == 1
    row = job_row(db, job_id)
    assert row["status"] == "dead" and "lease expired after 5 runs" in row["error"]
    with db.db.connection() as conn:  # like every dead path: unit back, a dead letter
        assert conn.execute("SELECT reserved FROM usage_counters").fetchone()["reserved"] == 0
        (letter,) = dead_letters.list_dead_letters(conn)
        assert str(letter["job_id"]) == job_id and letter["status"] == "dead"
    assert usage_rows(db, job_id)[0]["units"] == 0


@pytest.mark.parametrize(("error", "outbox_rows"), [
    (lambda: __import__("redis").ConnectionError("blip"), 0),  # the task's own retry sends it
    (lambda: ZeroDivisionError("bug"), 1),  # nothing retries it: the relay sends it at once
])
def test_an_unexpected_error_hands_the_job_back_at_once(db, new_job, monkeypatch, error,
                                                        outbox_rows):
    job_id, _ = new_job()
    with db.db.connection() as conn:  # its admission's message went out
        conn.execute("DELETE FROM job_outbox")
    exc = error()

    def blip(*a, **k):
        raise exc

    monkeypatch.setattr(db.providers["social_links"], "fill", blip)
    with pytest.raises(type(exc)):
        pipeline.run_job(db, job_id)
    with db.db.connection() as conn:
        row = conn.execute("SELECT status, lease_token FROM enrichment_jobs").fetchone()
        assert row == {"status": "queued", "lease_token": None}
        assert conn.execute("SELECT count(*) AS n FROM job_outbox").fetchone()["n"] == outbox_rows
    monkeypatch.undo()
    assert pipeline.run_job(db, job_id) == "succeeded"


def test_a_job_that_keeps_crashing_is_buried(db, new_job, monkeypatch):
    job_id, _ = new_job()
    monkeypatch.setattr(db.providers["social_links"], "fill", lambda *a, **k: 1 / 0)
    for _ in range(pipeline.MAX_RUNS):
        with pytest.raises(ZeroDivisionError):
            pipeline.run_job(db, job_id)
    row = job_row(db, job_id)
    assert row["status"] == "dead" and "interrupted 5 times" in row["error"]
    assert pipeline.run_job(db, job_id) == "skipped"
    with db.db.connection() as conn:
        assert conn.execute("SELECT reserved FROM usage_counters").fetchone()["reserved"] == 0


def test_a_job_whose_paid_call_outlives_the_round_ends_dead_without_a_second_call(
        db, new_job, simulator):
    simulator.config.latency_ms = 2500
    job_id, _ = new_job()
    short = replace(db, settings=replace(db.settings, provider_round_seconds=1.5))
    assert pipeline.run_job(short, job_id) == "dead"
    row = job_row(db, job_id)
    assert "not re-sent" in row["error"] and row["units"] == 0
    assert simulator.stats.snapshot()["counts"]["perplexity.received"] == 1
    with db.db.connection() as conn:
        assert [d["job_id"] for d in dead_letters.list_dead_letters(conn)] == [row["id"]]
    eventually(lambda: "perplexity.ok" in simulator.stats.snapshot()["counts"], 10)  # drained


def test_tokens_of_failed_runs_are_metered_on_the_job(db, new_job, simulator):
    simulator.config.agent_failed_rate = 1.0
    job_id, _ = new_job()
    assert pipeline.run_job(db, job_id) == "dead"
    row = job_row(db, job_id)
    assert row["units"] == 0 and row["tokens"] > 0 and Decimal(row["cost_estimate_usd"]) > 0
