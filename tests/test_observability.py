"""Events through the real posthog SDK (to the local capture server), Prometheus metrics, and
alert evaluation with controllable inputs."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta

import pytest

from enrichment import alerts, pipeline
from enrichment.billing import catalog, report, stripe_events
from enrichment.events import PostHogEvents
from enrichment.ratelimit import minute_key
from simulators.posthog_fake import PostHogFakeServer

from .helpers import eventually

PII = ("jane", "acme.com", "doe")


@pytest.fixture(scope="session")
def capture_server():
    with PostHogFakeServer() as server:
        yield server


@pytest.fixture
def tracked(db, capture_server):
    """Services whose events go through the real SDK to the capture server."""
    capture_server.events.clear()
    events = PostHogEvents("phc_test_key", capture_server.url)
    yield replace(db, events=events)
    events.client.shutdown()


def sent(capture_server, tracked) -> list[dict]:
    tracked.events.flush()
    return list(capture_server.events)


def test_every_event_once_with_properties_and_no_personal_data(tracked, capture_server,
                                                              make_workspace, simulator):
    from api import create_app
    from simulators.stripe_fake import StripeFakeServer

    client = create_app(services=tracked).test_client()
    ws, key = make_workspace(plan="core")
    h = {"Authorization": f"Bearer {key}"}
    lead = {"template": "person_basic",
            "lead": {"email": "jane@acme.com", "name": "Jane Doe", "company": "Acme"}}
    job_id = client.post("/api/v1/enrichment", json=lead, headers=h).get_json()["job_id"]
    assert client.post("/api/v1/enrichment", json=lead, headers=h).status_code == 429
    simulator.config.null_rate = 1.0  # the "model" finds nothing: a quality issue
    assert pipeline.run_job(tracked, job_id) == "succeeded"
    simulator.config.null_rate = 0.1
    simulator.config.outage_status = 400
    tracked.redis.flushdb()
    failing = client.post("/api/v1/enrichment", json={
        "template": "company_profile", "lead": {"domain": "globex.com"}}, headers=h)
    assert pipeline.run_job(tracked, failing.get_json()["job_id"]) == "failed"
    simulator.config.outage_status = 0
    with tracked.db.connection() as conn:  # yesterday's usage beyond the core plan
        conn.execute("INSERT INTO enrichment_usage (workspace_id, job_id, template, units,"
                     " created_at) SELECT %s, gen_random_uuid(), 'x', 1, %s"
                     " FROM generate_series(1, 252)",
                     (ws.id, tracked.clock() - timedelta(days=1)))
    now = tracked.clock()
    report.report(tracked.db, tracked.settings.plans, tracked.billing, tracked.events,
                  now.date() - timedelta(days=1), now)
    with StripeFakeServer(now=lambda: tracked.clock().timestamp()) as fake, \
            tracked.db.connection() as conn:
        from enrichment.billing import StripeBilling

        billing = StripeBilling("sk_test_obs", fake.url)
        catalog.sync_catalog(conn, billing, tracked.settings.plans)
        session = stripe_events.start_checkout(tracked.db, billing, tracked.settings.plans,
                                               ws.id, "500", "http://x/ok", "http://x/no")
        done = fake.app.test_client().post(
            f"/_test/checkout_sessions/{session.session_id}/complete").get_json()
        for _ in range(2):  # redelivered: still one event
            stripe_events.handle_event(conn, tracked.settings.plans, tracked.events, done["event"])

    eventually(lambda: len(sent(capture_server, tracked)) >= 8, 10)
    events = sent(capture_server, tracked)
    names = [e["event"] for e in events]
    assert sorted(names) == sorted([
        "enrichment_requested", "enrichment_requested", "enrichment_throttled",
        "enrichment_succeeded", "enrichment_quality_issue", "api_error",
        "enrichment_overage_billed", "credit_pack_purchased"])
    assert all(e["distinct_id"] == str(ws.id) for e in events)
    by_name = {e["event"]: e["properties"] for e in events}
    assert by_name["enrichment_succeeded"]["job_id"] == job_id
    assert by_name["enrichment_succeeded"]["plan"] == "core"
    assert by_name["enrichment_quality_issue"]["completeness"] < 0.8
    assert by_name["api_error"]["status_code"] == 400
    assert by_name["enrichment_overage_billed"]["units"] == 2
    assert by_name["credit_pack_purchased"] == by_name["credit_pack_purchased"] | {
        "pack": "500", "units": 500}
    blob = json.dumps(events).lower()
    assert not [word for word in PII if word in blob]


def scrape(client) -> str:
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    return resp.get_data(as_text=True)


def sample(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_are_exposed_and_move(client, auth, db, simulator):
    ws, headers = auth
    before = scrape(client)
    job_id = client.post("/api/v1/enrichment", headers=headers, json={
        "template": "person_basic", "lead": {"email": "m@acme.com"}}).get_json()["job_id"]
    assert pipeline.run_job(db, job_id) == "succeeded"
    after = scrape(client)
    for name, labels in [
        ("enrichment_api_requests_total", {"plan": "pro", "outcome": "admitted"}),
        ("enrichment_provider_calls_total", {"provider": "perplexity", "outcome": "ok"}),
        ("enrichment_provider_calls_total", {"provider": "social_links", "outcome": "ok"}),
        ("enrichment_queue_wait_seconds_count", {"tier": "pro"}),
        ("enrichment_result_completeness_count", {"template": "person_basic"}),
        ("enrichment_jobs_finished_total", {"status": "succeeded"}),
    ]:
        assert sample(after, name, **labels) == sample(before, name, **labels) + 1, name
    assert re.search(r'enrichment_queue_depth\{tier="elite"\} \d', after)
    assert "workspace_id" not in after and job_id not in after  # low cardinality
    assert str(ws.id) not in after


@pytest.mark.e2e
def test_worker_processes_metrics_reach_the_api(client, auth, worker, wait_job):
    _, headers = auth
    before = sample(scrape(client), "enrichment_jobs_finished_total", status="succeeded")
    job_id = client.post("/api/v1/enrichment", headers=headers, json={
        "template": "person_social", "lead": {"email": "w@acme.com"}}).get_json()["job_id"]
    assert wait_job(client, headers, job_id)["status"] == "succeeded"
    after = sample(scrape(client), "enrichment_jobs_finished_total", status="succeeded")
    assert after >= before + 1


def rule(name: str) -> alerts.Rule:
    return next(r for r in alerts.load_rules() if r.name == name)


def test_rejection_rate_alert_fires_and_resolves(db, captured_events):
    now = db.clock()
    db.redis.hset(minute_key(now.timestamp()), mapping={"requests": 100, "rejected": 10})
    with db.db.connection() as conn:
        fired = alerts.evaluate(conn, db.redis, db.events, now, [rule("api_rejection_rate")])
        assert fired == [{"rule": "api_rejection_rate", "state": "firing", "value": 0.1,
                          "threshold": 0.05, "op": ">"}]
        assert alerts.evaluate(conn, db.redis, db.events, now, [rule("api_rejection_rate")]
                               ) == []  # no change, nothing recorded again
        later = now + timedelta(minutes=10)  # the window has moved past the burst
        resolved = alerts.evaluate(conn, db.redis, db.events, later,
                                   [rule("api_rejection_rate")])
        assert [c["state"] for c in resolved] == ["resolved"]
        history = conn.execute("SELECT state FROM alert_events ORDER BY id").fetchall()
        assert [h["state"] for h in history] == ["firing", "ok"]
    assert [e[2]["state"] for e in captured_events if e[0] == "enrichment_alert"] == [
        "firing", "resolved"]


def admit_jobs(db, ws, n):
    from enrichment.jobs import intake
    from enrichment.templates import TEMPLATES

    with db.db.connection() as conn:
        return [str(intake.admit(conn, slots=1, workspace=ws, plan=db.settings.plans["pro"],
                                    template=TEMPLATES["company_profile"],
                                    lead={"domain": f"c{i}.example.com"}, metadata={},
                                    now=db.clock()).job["id"]) for i in range(n)]


def evaluate(db, *names, ahead: float = 1):
    with db.db.connection() as conn:
        now = db.clock() + timedelta(seconds=ahead)
        return {c["rule"]: c for c in alerts.evaluate(conn, db.redis, db.events, now,
                                                     [rule(name) for name in names])}


def test_completeness_and_queue_wait_alerts_from_the_tables(db, make_workspace, simulator):
    ws, _ = make_workspace()
    simulator.config.null_rate = 1.0
    for job_id in admit_jobs(db, ws, 5):
        with db.db.connection() as conn:  # runnable for a minute before a worker took it
            conn.execute("UPDATE enrichment_jobs SET runnable_at = now() - interval '60 s'"
                         " WHERE id = %s AND status = 'queued'", (job_id,))
        assert pipeline.run_job(db, job_id) == "succeeded"
    assert set(evaluate(db, "result_completeness", "queue_wait")) == {
        "result_completeness", "queue_wait"}


def test_waiting_behind_the_own_workspace_is_not_queue_wait(db, make_workspace):
    ws, _ = make_workspace()
    ids = admit_jobs(db, ws, 6)  # a big batch: one runnable, five waiting behind it
    with db.db.connection() as conn:
        conn.execute("UPDATE enrichment_jobs SET created_at = created_at - interval '1 hour'")
    for job_id in ids:
        assert pipeline.run_job(db, job_id) == "succeeded"  # each finish hands the slot on
    assert evaluate(db, "queue_wait") == {}


def test_queue_wait_fires_when_nothing_starts(db, make_workspace):
    ws, _ = make_workspace()
    admit_jobs(db, ws, 1)  # runnable, and no worker takes it
    assert evaluate(db, "queue_wait") == {}
    with db.db.connection() as conn:  # 45 s later (a job's timeline is PostgreSQL's clock)
        conn.execute("UPDATE enrichment_jobs SET runnable_at = runnable_at - interval '45 s'")
    fired = evaluate(db, "queue_wait")
    assert fired["queue_wait"]["state"] == "firing" and fired["queue_wait"]["value"] > 30


def test_alerts_cli_prints_every_rule(db):
    from click.testing import CliRunner

    from enrichment.cli import main

    with db.db.connection() as conn:
        alerts.evaluate(conn, db.redis, db.events, db.clock(), alerts.load_rules())
    out = CliRunner().invoke(main, ["alerts"], catch_exceptions=False).output
    for r in alerts.load_rules():
        assert r.name in out
    assert "unknown" not in out


