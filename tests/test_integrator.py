"""The integrator's API on the real stack: job lists with cursors and filters, batches with
progress, the 7-day result cache, charging only for matches, and signed outgoing webhooks
(verified with the `standardwebhooks` package)."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from enrichment import admission, pipeline, webhooks
from enrichment.templates import TEMPLATES


def h(key):
    return {"Authorization": f"Bearer {key}"}


def admit(db, ws, n, tag="l", template="company_profile", batch_id=None):
    ids = []
    for i in range(n):
        lead = {"domain": f"{tag}{i}.example.com"} if template == "company_profile" else {
            "email": f"{tag}{i}@example.com"}
        with db.db.connection() as conn:
            ids.append(str(admission.admit(
                conn, slots=1, workspace=ws, plan=db.settings.plans[ws.plan],
                template=TEMPLATES[template], lead=lead, metadata={}, now=datetime.now(UTC),
                batch_id=batch_id).job["id"]))
    return ids


# --- lists ---------------------------------------------------------------------------------

def test_cursor_pages_walk_every_job_once_while_new_ones_arrive(client, make_workspace, db):
    ws, key = make_workspace()
    expected = set(admit(db, ws, 250))
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 100} | ({"starting_after": cursor} if cursor else {})
        body = client.get("/api/v1/enrichment", headers=h(key), query_string=query).get_json()
        seen += [j["job_id"] for j in body["data"]]
        pages += 1
        admit(db, ws, 5, tag=f"new{pages}-")  # newer jobs land before the cursor
        if not body["has_more"]:
            break
        cursor = body["data"][-1]["job_id"]
    assert pages == 3 and len(seen) == len(set(seen)) == 250 and set(seen) == expected
    created = [j["created_at"] for j in client.get(
        "/api/v1/enrichment", headers=h(key), query_string={"limit": 100}).get_json()["data"]]
    assert created == sorted(created, reverse=True)  # newest first


def test_filters_and_bad_filters(client, make_workspace, db):
    ws, key = make_workspace()
    first = admit(db, ws, 3)
    assert pipeline.run_job(db, first[0]) == "succeeded"
    social = admit(db, ws, 1, tag="p", template="person_social")

    def ids(**query):
        resp = client.get("/api/v1/enrichment", headers=h(key), query_string=query)
        assert resp.status_code == 200, resp.get_json()
        return [j["job_id"] for j in resp.get_json()["data"]]

    assert ids(status="succeeded") == [first[0]]
    assert set(ids(status="queued")) == {*first[1:], *social}  # waiting ones show as queued
    assert ids(template="person_social") == social
    assert ids(created_after="2999-01-01T00:00:00Z") == []
    assert len(ids(created_before="2999-01-01T00:00:00Z")) == 4
    for bad in ({"limit": 0}, {"limit": 101}, {"status": "done"}, {"template": "x"},
                {"created_after": "yesterday"}, {"batch_id": "nope"}, {"color": "red"},
                {"starting_after": str(uuid.uuid4())}):
        resp = client.get("/api/v1/enrichment", headers=h(key), query_string=bad)
        assert resp.status_code == 422 and resp.mimetype == "application/problem+json", bad


# --- batches -------------------------------------------------------------------------------

def test_a_batch_has_an_id_on_every_job_and_counts_that_add_up(client, make_workspace, db):
    _, key = make_workspace()
    resp = client.post("/api/v1/enrichment/batch", headers=h(key), json={
        "template": "company_profile",
        "leads": [{"domain": "a.example.com"}, {"domain": "b.example.com"},
                  {"domain": "not a domain"}, {"domain": "a.example.com"}]})
    body = resp.get_json()
    batch_id = body["batch_id"]
    jobs = [r["job"] for r in body["results"] if "job" in r]
    assert {j["batch_id"] for j in jobs} == {batch_id}
    progress = client.get(f"/api/v1/enrichment/batches/{batch_id}", headers=h(key)).get_json()
    assert progress["total"] == 4 and progress["template"] == "company_profile"
    assert progress["counts"] == {"queued": 3, "processing": 0, "succeeded": 0, "failed": 0,
                                  "dead": 0, "rejected": 1}
    assert sum(progress["counts"].values()) == progress["total"] and not progress["done"]
    listed = client.get("/api/v1/enrichment", headers=h(key),
                        query_string={"batch_id": batch_id}).get_json()["data"]
    assert {j["job_id"] for j in listed} == {j["job_id"] for j in jobs}
    for job_id in [jobs[0]["job_id"], jobs[1]["job_id"]]:
        assert pipeline.run_job(db, job_id) == "succeeded"
    done = client.get(f"/api/v1/enrichment/batches/{batch_id}", headers=h(key)).get_json()
    assert done["counts"]["succeeded"] == 3 and done["done"]  # the repeat is the same job
    assert client.get(f"/api/v1/enrichment/batches/{uuid.uuid4()}",
                      headers=h(key)).status_code == 404


# --- cache and matches ---------------------------------------------------------------------

def backdate(db, job_id, days):
    """As if the job had run `days` ago (its same-day idempotency key then was another)."""
    with db.db.connection() as conn:
        conn.execute("UPDATE enrichment_jobs SET created_at = created_at - %s,"
                     " completed_at = completed_at - %s,"
                     " idempotency_key = idempotency_key || '-' || %s WHERE id = %s",
                     (timedelta(days=days), timedelta(days=days), days, job_id))


def test_a_repeat_within_seven_days_is_answered_from_the_cache(client, make_workspace, db,
                                                              simulator):
    _, key = make_workspace()
    body = {"template": "company_profile", "lead": {"domain": "acme.com"}}
    first = client.post("/api/v1/enrichment", headers=h(key), json=body).get_json()["job_id"]
    assert pipeline.run_job(db, first) == "succeeded"
    backdate(db, first, 3)
    calls = simulator.stats.snapshot()["counts"].get("perplexity.received", 0)
    resp = client.post("/api/v1/enrichment", headers=h(key), json=body)
    cached = resp.get_json()
    assert resp.status_code == 200 and "Idempotent-Replayed" not in resp.headers
    assert cached["status"] == "succeeded" and cached["cached"] is True
    assert cached["cached_from"] == first and cached["job_id"] != first
    assert cached["usage"]["units"] == 0 and cached["result"]["citations"]
    assert simulator.stats.snapshot()["counts"].get("perplexity.received", 0) == calls
    again = client.post("/api/v1/enrichment", headers=h(key), json=body)  # same day: replay
    assert again.get_json()["job_id"] == cached["job_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    fresh = client.post("/api/v1/enrichment", headers=h(key),
                        json={"template": "company_profile", "lead": {"domain": "globex.com"},
                              "max_age_days": 0})
    assert fresh.status_code == 202 and fresh.get_json()["cached"] is False


def test_max_age_zero_skips_the_cache_and_is_charged(client, make_workspace, db):
    _, key = make_workspace()
    body = {"template": "company_profile", "lead": {"domain": "acme.com"}}
    first = client.post("/api/v1/enrichment", headers=h(key), json=body).get_json()["job_id"]
    assert pipeline.run_job(db, first) == "succeeded"
    backdate(db, first, 3)
    resp = client.post("/api/v1/enrichment", headers=h(key), json=body | {"max_age_days": 0})
    assert resp.status_code == 202 and resp.get_json()["cached"] is False
    assert pipeline.run_job(db, resp.get_json()["job_id"]) == "succeeded"
    with db.db.connection() as conn:
        assert conn.execute("SELECT sum(units) AS n FROM enrichment_usage").fetchone()["n"] == 2
    rerun = resp.get_json()["job_id"]
    backdate(db, first, 5)  # 8 days old now: too old to answer
    backdate(db, rerun, 2)
    answer = client.post("/api/v1/enrichment", headers=h(key), json=body).get_json()
    assert answer["cached_from"] == rerun


def test_suppression_wins_over_the_cache(client, make_workspace, db):
    _, key = make_workspace()
    body = {"template": "person_social", "lead": {"email": "jane@acme.com"}}
    first = client.post("/api/v1/enrichment", headers=h(key), json=body).get_json()["job_id"]
    assert pipeline.run_job(db, first) == "succeeded"
    backdate(db, first, 2)
    client.post("/api/v1/privacy/consents", headers=h(key), json={
        "identifier": "jane@acme.com", "purpose": "enrichment",
        "basis": "legitimate_interest", "granted": False, "source": "mail"})
    assert client.post("/api/v1/enrichment", headers=h(key), json=body).status_code == 403


def test_a_job_that_finds_nothing_is_not_charged(client, make_workspace, db, simulator):
    _, key = make_workspace()
    simulator.config.found_nothing = True
    job_id = client.post("/api/v1/enrichment", headers=h(key), json={
        "template": "company_profile", "lead": {"domain": "nothing.example.com"}}
    ).get_json()["job_id"]
    assert pipeline.run_job(db, job_id) == "succeeded"
    body = client.get(f"/api/v1/enrichment/{job_id}", headers=h(key)).get_json()
    assert body["match"] is False and body["usage"]["units"] == 0
    assert body["usage"]["tokens"] > 0  # what was spent is still metered
    simulator.config.found_nothing = False
    other = client.post("/api/v1/enrichment", headers=h(key), json={
        "template": "company_profile", "lead": {"domain": "found.example.com"}}
    ).get_json()["job_id"]
    assert pipeline.run_job(db, other) == "succeeded"
    usage = client.get("/api/v1/enrichment/usage", headers=h(key)).get_json()
    assert (usage["used"], usage["reserved"], usage["matched"], usage["unmatched"]) == (1, 1, 1, 1)


# --- webhooks ------------------------------------------------------------------------------

class Receiver:
    """A local endpoint: answers 500 to its first `fail` requests, then 200; keeps every
    request (headers and body)."""

    def __init__(self, fail: int = 0):
        self.fail, self.requests = fail, []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append((dict(self.headers), body))
                code = 500 if len(receiver.requests) <= receiver.fail else 200
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    made = []

    def make(fail=0):
        made.append(Receiver(fail))
        return made[-1]

    yield make
    for r in made:
        r.close()


def endpoint(client, key, url, events=("job.succeeded", "batch.completed")):
    resp = client.post("/api/v1/webhook-endpoints", headers=h(key),
                       json={"url": url, "events": list(events)})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def deliver_all(db, rounds=10):
    """Run every due delivery, as the webhook workers would, making retries due at once."""
    for _ in range(rounds):
        with db.db.connection() as conn:
            due = [r["id"] for r in conn.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = now()"
                " WHERE status = 'pending' RETURNING id")]
        if not due:
            return
        for delivery_id in due:
            webhooks.deliver(db.db, delivery_id, allow_private=True, concurrency=2)


def test_signed_deliveries_retried_with_the_same_id_until_they_succeed(client, make_workspace,
                                                                        db, receiver):
    _, key = make_workspace()
    hook = receiver(fail=3)
    created = endpoint(client, key, hook.url)
    assert created["secret"].startswith("whsec_")
    listed = client.get("/api/v1/webhook-endpoints", headers=h(key)).get_json()["data"]
    assert [e["id"] for e in listed] == [created["id"]] and "secret" not in listed[0]
    batch = client.post("/api/v1/enrichment/batch", headers=h(key), json={
        "template": "company_profile", "leads": [{"domain": "hook.example.com"}]}).get_json()
    job_id = batch["results"][0]["job"]["job_id"]
    assert pipeline.run_job(db, job_id) == "succeeded"
    deliver_all(db)
    verifier = Webhook(created["secret"])
    received = [(headers, verifier.verify(body, headers)) for headers, body in hook.requests]
    by_id: dict = {}
    for headers, payload in received:
        by_id.setdefault(headers["webhook-id"], []).append(payload)
    assert len(hook.requests) == 3 + 2  # three failures, then each message once
    assert sorted(p[0]["type"] for p in by_id.values()) == ["batch.completed", "job.succeeded"]
    job_event = next(p[-1] for p in by_id.values() if p[-1]["type"] == "job.succeeded")
    assert job_event["data"]["job_id"] == job_id and job_event["data"]["status"] == "succeeded"
    batch_event = next(p[-1] for p in by_id.values() if p[-1]["type"] == "batch.completed")
    assert batch_event["data"]["batch_id"] == batch["batch_id"] and batch_event["data"]["done"]
    log = client.get(f"/api/v1/webhook-endpoints/{created['id']}/deliveries",
                     headers=h(key)).get_json()["data"]
    assert sorted(d["status"] for d in log) == ["succeeded", "succeeded"]
    assert sum(d["attempts"] for d in log) == 5


def test_the_ssrf_guard_refuses_private_targets(client, make_workspace, db, monkeypatch):
    from dataclasses import replace

    from api import create_app

    _, key = make_workspace()
    strict = create_app(services=replace(db, settings=replace(
        db.settings, webhooks_allow_private_urls=False))).test_client()
    for url in ("http://example.com/hook", "https://127.0.0.1/hook", "https://localhost/x",
                "https://10.1.2.3/x", "https://169.254.169.254/latest", "https://[::1]/x"):
        resp = strict.post("/api/v1/webhook-endpoints", headers=h(key),
                           json={"url": url, "events": ["job.succeeded"]})
        assert resp.status_code == 422, url
    assert endpoint(client, key, "http://127.0.0.1:9/x")  # allowed when configured


def test_erasure_deletes_queued_deliveries_that_carry_the_subject(client, make_workspace, db,
                                                                 receiver):
    _, key = make_workspace()
    endpoint(client, key, receiver(fail=100).url, ["job.succeeded"])
    job_id = client.post("/api/v1/enrichment", headers=h(key), json={
        "template": "person_social", "lead": {"email": "jane@acme.com"}}).get_json()["job_id"]
    assert pipeline.run_job(db, job_id) == "succeeded"
    with db.db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM webhook_deliveries").fetchone()["n"] == 1
    client.post("/api/v1/privacy/erasures", headers=h(key), json={"identifier": "jane@acme.com"})
    with db.db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM webhook_deliveries").fetchone()["n"] == 0
    assert "jane" not in json.dumps(client.get("/api/v1/enrichment", headers=h(key)).get_json())
