"""Test mode (sandbox keys): the real API and pipeline against the bundled simulators,
in-process — never a real provider, never billed — and each mode blind to the other's data.
Checked from both sides: what a test key can do, and what it cannot reach."""

from __future__ import annotations

from dataclasses import replace

import pytest
from flask import Flask, request

from enrichment import pipeline
from enrichment.config import Settings
from enrichment.ratelimit import minute_key
from enrichment.services import build_services
from enrichment.templates import TEMPLATES
from enrichment.workspaces import authenticate, create_api_key
from simulators.serving import ThreadedServer

LEADS = {  # one lead of each template, its domain the magic part
    "company_profile": lambda d: {"domain": d},
    "person_basic": lambda d: {"email": f"jane@{d}", "name": "Jane Doe", "company": "Acme"},
    "person_social": lambda d: {"email": f"jane@{d}", "name": "Jane Doe"},
    "person_contact": lambda d: {"name": "Jane Doe", "domain": d},
}


class Tripwire(ThreadedServer):
    """A server standing in for every real provider, Stripe and PostHog: any hit is a
    test-mode leak."""

    def __init__(self):
        self.hits: list[str] = []
        app = Flask(__name__)

        @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "DELETE"])
        @app.route("/<path:path>", methods=["GET", "POST", "PUT", "DELETE"])
        def anything(path):
            self.hits.append(f"{request.method} /{path}")
            return "", 599

        super().__init__(app)


@pytest.fixture
def tripwire():
    with Tripwire() as wire:
        yield wire


@pytest.fixture
def test_key(db, make_workspace):
    """A workspace with a live key and a test key: (workspace, live headers, test headers)."""
    ws, live = make_workspace()
    with db.db.connection() as conn:
        test = create_api_key(conn, ws.id, livemode=False)
    return ws, {"Authorization": f"Bearer {live}"}, {"Authorization": f"Bearer {test}"}


def submit(client, headers, template="person_basic", lead=None, **extra):
    return client.post("/api/v1/enrichment", headers=headers, json={
        "template": template, "lead": lead or LEADS[template]("match.test"), **extra})


def run_all(db):
    """Run every job, as the workers would: each finish hands its slot to the next."""
    finished: dict = {}
    while True:
        with db.db.connection() as conn:
            ids = [r["id"] for r in conn.execute(
                "SELECT id FROM enrichment_jobs WHERE status = 'queued' ORDER BY created_at")]
        if not ids:
            return finished
        finished |= {str(i): pipeline.run_job(db, str(i)) for i in ids}


def test_a_test_key_is_marked_and_authenticates_in_test_mode(db, test_key, client):
    _ws, _, test = test_key
    key = test["Authorization"].split()[1]
    assert key.startswith("lek_test_")
    with db.db.connection() as conn:
        assert authenticate(conn, key).livemode is False
        forged = key.replace("lek_test_", "lek_")  # the row decides the mode, not the form
        assert authenticate(conn, forged) is None
    for _ in range(2):  # from the database, then from the key cache
        body = submit(client, test).get_json()
        assert body["livemode"] is False
        assert client.get("/api/v1/workspace", headers=test).get_json()["livemode"] is False


def test_test_jobs_never_reach_a_real_provider_stripe_or_posthog(
        db, test_key, client, tripwire, captured_events):
    real = Settings.from_env()
    real = replace(real, perplexity_api_base=tripwire.url, social_links_api_base=tripwire.url,
                   hunter_api_base=tripwire.url, stripe_api_key="sk_test_tripwire",
                   stripe_api_base=tripwire.url, posthog_api_key="phc_tripwire",
                   posthog_host=tripwire.url)
    svc = build_services(real)
    try:
        _ws, _, test = test_key
        for template, lead in LEADS.items():
            for domain in ("match.test", "nomatch.test", "lowconfidence.test"):
                assert submit(client, test, template, lead(domain)).status_code == 202
        finished = run_all(svc)
        assert set(finished.values()) == {"succeeded"}
        svc.events.flush()
    finally:
        svc.close()
    assert tripwire.hits == []
    assert captured_events == []  # no PostHog event at all for test mode
    with db.db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM usage_counters").fetchone()["n"] == 0
        usage = conn.execute("SELECT sum(units) AS units, bool_and(NOT livemode) AS test"
                             " FROM enrichment_usage").fetchone()
        assert usage == {"units": 0, "test": True}


def test_a_full_hard_cap_does_not_stop_test_mode_and_test_mode_uses_none_of_it(
        db, test_key, client):
    ws, live, test = test_key
    with db.db.connection() as conn:  # the live period's cap is reached
        cap = db.settings.plans[ws.plan].hard_cap
        conn.execute("INSERT INTO usage_counters (workspace_id, period, reserved)"
                     " VALUES (%s, date_trunc('month', now())::date, %s)", (ws.id, cap))
    assert submit(client, live, lead={"email": "a@acme.com"}).status_code == 402
    assert submit(client, test).status_code == 202
    usage = client.get("/api/v1/enrichment/usage", headers=live).get_json()
    assert usage["livemode"] is True and usage["reserved"] == cap


def test_each_mode_sees_only_its_own(db, test_key, client, simulator):
    _ws, live, test = test_key
    live_job = submit(client, live, lead={"email": "jane@acme.com", "name": "Jane Doe"})
    test_job = submit(client, test)
    live_id, test_id = live_job.get_json()["job_id"], test_job.get_json()["job_id"]
    assert live_job.get_json()["livemode"] is True
    for headers, own, other in ((live, live_id, test_id), (test, test_id, live_id)):
        assert client.get(f"/api/v1/enrichment/{own}", headers=headers).status_code == 200
        assert client.get(f"/api/v1/enrichment/{other}", headers=headers).status_code == 404
        listed = client.get("/api/v1/enrichment", headers=headers).get_json()["data"]
        assert [j["job_id"] for j in listed] == [own]
        resp = client.get(f"/api/v1/enrichment?starting_after={other}", headers=headers)
        assert resp.status_code in (400, 422)  # another mode's job is no cursor here
    # batches
    batch = client.post("/api/v1/enrichment/batch", headers=test, json={
        "template": "company_profile", "leads": [{"domain": "match.test"}]}).get_json()
    assert batch["results"][0]["job"]["livemode"] is False
    path = f"/api/v1/enrichment/batches/{batch['batch_id']}"
    assert client.get(path, headers=test).get_json()["livemode"] is False
    assert client.get(path, headers=live).status_code == 404
    listed = client.get(f"/api/v1/enrichment?batch_id={batch['batch_id']}", headers=live)
    assert listed.get_json()["data"] == []
    # usage
    run_all(db)
    test_usage = client.get("/api/v1/enrichment/usage", headers=test).get_json()
    live_usage = client.get("/api/v1/enrichment/usage", headers=live).get_json()
    assert (test_usage["livemode"], test_usage["used"], test_usage["reserved"]) == (False, 2, 0)
    assert (live_usage["livemode"], live_usage["used"]) == (True, 1)


def test_webhook_endpoints_and_deliveries_belong_to_one_mode(db, test_key, client):
    _ws, live, test = test_key
    made = {}
    for name, headers in (("live", live), ("test", test)):
        resp = client.post("/api/v1/webhook-endpoints", headers=headers, json={
            "url": f"http://127.0.0.1:9/{name}", "events": ["job.succeeded"]})
        assert resp.status_code == 201 and resp.get_json()["livemode"] is (name == "live")
        made[name] = resp.get_json()["id"]
    for name, headers, other in (("live", live, "test"), ("test", test, "live")):
        ids = [e["id"] for e in client.get("/api/v1/webhook-endpoints",
                                           headers=headers).get_json()["data"]]
        assert ids == [made[name]]
        path = f"/api/v1/webhook-endpoints/{made[other]}"
        assert client.get(f"{path}/deliveries", headers=headers).status_code == 404
        assert client.patch(path, headers=headers, json={"enabled": False}).status_code == 404
        assert client.delete(path, headers=headers).status_code == 404
    job_id = submit(client, test).get_json()["job_id"]
    assert pipeline.run_job(db, job_id) == "succeeded"
    with db.db.connection() as conn:
        rows = conn.execute("SELECT endpoint_id, payload FROM webhook_deliveries").fetchall()
    assert [str(r["endpoint_id"]) for r in rows] == [made["test"]]  # the live one: nothing
    payload = rows[0]["payload"]
    assert payload["livemode"] is False and payload["data"]["livemode"] is False
    assert payload["data"]["job_id"] == job_id


def test_privacy_in_test_mode_touches_test_data_only(db, test_key, client, simulator):
    _ws, live, test = test_key
    lead = {"email": "jane@acme.com", "name": "Jane Doe"}
    live_id = submit(client, live, lead=lead).get_json()["job_id"]
    test_id = submit(client, test, lead=lead).get_json()["job_id"]
    exported = client.get("/api/v1/privacy/export?identifier=jane@acme.com",
                          headers=test).get_json()
    assert [j["job_id"] for j in exported["jobs"]] == [test_id]
    assert exported["consents"] == [] and exported["suppression"] is None
    everything = client.get("/api/v1/privacy/export?identifier=jane@acme.com",
                            headers=live).get_json()
    assert {j["job_id"] for j in everything["jobs"]} == {live_id, test_id}
    assert client.post("/api/v1/privacy/erasures", headers=test,
                       json={"identifier": "jane@acme.com"}).status_code == 204
    assert client.get(f"/api/v1/enrichment/{live_id}", headers=live).status_code == 200
    assert client.get(f"/api/v1/enrichment/{test_id}", headers=test).status_code == 404
    again = submit(client, live, lead={**lead, "company": "Acme"}, max_age_days=0)
    assert again.status_code in (200, 202)  # nothing suppressed for live mode
    resp = client.post("/api/v1/privacy/consents", headers=test, json={
        "identifier": "jane@acme.com", "purpose": "enrichment", "basis": "consent",
        "granted": False, "source": "test"})
    assert resp.status_code == 403 and resp.get_json()["type"].endswith("live-mode-only")


@pytest.mark.parametrize("path", ["/api/v1/billing/invoices",
                                  "/api/v1/billing/invoices/upcoming"])
def test_a_test_key_reaches_no_billing(test_key, client, path):
    _, _, test = test_key
    assert client.get(path, headers=test).status_code == 403
    resp = client.post("/api/v1/billing/credit-packs", headers=test, json={"pack": "500"})
    assert resp.status_code == 403 and resp.get_json()["type"].endswith("live-mode-only")


def test_test_mode_has_its_own_rate_limit_bucket(db, make_workspace, client):
    ws, live = make_workspace(plan="core")
    with db.db.connection() as conn:
        test = create_api_key(conn, ws.id, livemode=False)
    headers = {"Authorization": f"Bearer {test}"}
    statuses = [submit(client, headers, "company_profile",
                       {"domain": f"d{i}.match.test"}).status_code for i in range(40)]
    assert 429 in statuses  # the plan's limit applies in test mode too …
    assert not db.redis.hget(minute_key(), "rejected")  # (not the rejection-rate alert's)
    resp = submit(client, {"Authorization": f"Bearer {live}"}, "company_profile",
                  {"domain": "acme.com"})
    assert resp.status_code == 202  # … in a bucket of its own


# --- magic leads: the same on every template ------------------------------------------------

def magic(db, client, headers, template, domain, **extra):
    job_id = submit(client, headers, template, LEADS[template](domain), **extra
                    ).get_json()["job_id"]
    status = pipeline.run_job(db, job_id)
    body = client.get(f"/api/v1/enrichment/{job_id}", headers=headers).get_json()
    return status, body


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_magic_leads_behave_as_documented(db, test_key, client, template):
    _, _, test = test_key
    status, job = magic(db, client, test, template, "match.test")
    assert status == "succeeded" and job["match"] is True and job["usage"]["units"] == 0
    assert all(v is not None for v in job["result"]["fields"].values())
    assert all(p["confidence"] >= 0.9 for p in job["result"]["provenance"].values())
    assert job["result"]["trace"]

    status, job = magic(db, client, test, template, "nomatch.test")
    assert status == "succeeded" and job["match"] is False
    assert set(job["result"]["fields"].values()) == {None}

    status, job = magic(db, client, test, template, "lowconfidence.test")
    assert status == "succeeded" and job["match"] is False
    assert set(job["result"]["fields"].values()) == {None}
    status, job = magic(db, client, test, template, "lowconfidence.test", min_confidence=0.0,
                        max_age_days=0)
    assert all(p["confidence"] < 0.5 for p in job["result"]["provenance"].values())

    status, job = magic(db, client, test, template, "ratelimited.test")
    assert status == "succeeded" and job["match"] is True
    assert job["attempts"] >= 3  # two 429s, then the answer
    assert any(t["http_status"] == 200 for t in job["result"]["trace"])


@pytest.mark.parametrize("template", ["company_profile", "person_social"])
def test_error_test_ends_dead(db, test_key, client, template):
    _, _, test = test_key
    status, job = magic(db, client, test, template, "error.test")
    assert status == "dead" and job["status"] == "dead" and "500" in job["error"]
    assert job["usage"]["units"] == 0


def test_slow_test_takes_twenty_seconds_then_succeeds(db, test_key, client):
    _, _, test = test_key
    status, job = magic(db, client, test, "company_profile", "slow.test")
    assert status == "succeeded" and job["match"] is True
    assert job["result"]["trace"][0]["duration_ms"] >= 20_000


@pytest.mark.e2e
def test_a_test_key_end_to_end_through_the_worker(client, test_key, worker, wait_job):
    _, _, test = test_key
    job = submit(client, test, "person_contact").get_json()
    done = wait_job(client, test, job["job_id"])
    assert done["status"] == "succeeded" and done["livemode"] is False
    assert done["match"] is True and done["usage"]["units"] == 0


def test_each_mode_has_the_workspace_slots(db, test_key, client):
    ws, live, test = test_key
    slots = db.settings.slots(ws.plan)
    ids = [submit(client, live, lead={"email": f"a{i}@acme.com"}).get_json()["job_id"]
           for i in range(slots + 1)]  # every live slot taken, one live job waiting
    ids.append(submit(client, test).get_json()["job_id"])
    with db.db.connection() as conn:
        status = {str(r["id"]): r["status"] for r in conn.execute(
            "SELECT id, status FROM enrichment_jobs WHERE id = ANY(%s::uuid[])", (ids,))}
    assert [status[i] for i in ids] == ["queued"] * slots + ["waiting", "queued"]


def test_client_idempotency_keys_are_kept_per_mode(test_key, client):
    _, live, test = test_key
    body = {"template": "person_basic", "lead": {"email": "ceo@acme.com", "name": "Ceo"}}
    first = client.post("/api/v1/enrichment", json=body,
                        headers={**live, "Idempotency-Key": "test:k1"})
    assert first.status_code == 202
    again = client.post("/api/v1/enrichment", json=body,
                        headers={**test, "Idempotency-Key": "k1"})
    assert "Idempotent-Replayed" not in again.headers  # not the live answer
    assert again.get_json()["livemode"] is False
    assert again.get_json()["job_id"] != first.get_json()["job_id"]


def test_test_mode_privacy_does_not_follow_links_only_live_data_makes(test_key, client):
    _, live, test = test_key
    profile = "https://www.linkedin.com/in/jane-doe"
    submit(client, live, lead={"email": "jane@acme.com", "linkedin_url": profile})
    submit(client, test, lead={"email": "other@b.com", "linkedin_url": profile})
    exported = client.get("/api/v1/privacy/export?identifier=jane@acme.com",
                          headers=test).get_json()
    assert exported["jobs"] == []
