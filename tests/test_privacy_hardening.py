"""Privacy and security hardening: what reaches the providers where person-level enrichment
is off, suppression everywhere (worker, parked jobs, dead-letter replay), subjects found by
every personal identifier, the purge, erasure without identifiers in URLs, strict input,
closed defaults, cheap rejection of bad keys."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from enrichment import pipeline, privacy
from enrichment.jobs import dead_letters, intake
from enrichment.templates import TEMPLATES
from enrichment.workspaces import set_region

LEAD = {"email": "jane@acme.com", "name": "Jane Doe", "company": "Acme", "domain": "acme.com",
        "linkedin_url": "https://www.linkedin.com/in/janedoe"}


def h(key):
    return {"Authorization": f"Bearer {key}"}


def admit(db, ws, lead, template="person_basic"):
    with db.db.connection() as conn:
        return intake.admit(conn, slots=1, workspace=ws, plan=db.settings.plans[ws.plan],
                               template=TEMPLATES[template], lead=lead, metadata={"crm": "x"},
                               now=db.clock())


def job_row(db, job_id):
    with db.db.connection() as conn:
        return conn.execute("SELECT * FROM enrichment_jobs WHERE id = %s", (job_id,)).fetchone()


def provider_calls(simulator) -> int:
    counts = simulator.stats.snapshot()["counts"]
    return sum(n for k, n in counts.items() if k.endswith(".received"))


# --- what reaches a provider -------------------------------------------------------------

def test_an_eu_company_level_job_sends_and_keeps_company_fields_only(client, make_workspace,
                                                                    db, simulator):
    _, key = make_workspace(region="eu")
    resp = client.post("/api/v1/enrichment", headers=h(key),
                       json={"template": "company_profile", "lead": LEAD})
    assert resp.status_code == 202
    job_id = resp.get_json()["job_id"]
    assert job_row(db, job_id)["lead"] == {"domain": "acme.com", "company": "Acme"}
    assert pipeline.run_job(db, job_id) == "succeeded"
    (sent,) = simulator.stats.snapshot()["received"]["perplexity"]
    assert "acme.com" in sent
    for personal in ("jane", "Jane Doe", "linkedin"):
        assert personal.lower() not in sent.lower(), personal


def test_an_eu_company_level_lead_without_company_fields_is_422(client, make_workspace):
    _, key = make_workspace(region="eu")
    resp = client.post("/api/v1/enrichment", headers=h(key), json={
        "template": "company_profile", "lead": {"email": "jane@acme.com", "name": "Jane"}})
    assert resp.status_code == 422
    assert resp.get_json()["type"].endswith("company-fields-required")


def test_a_workspace_moved_to_the_eu_while_queued_sends_company_fields_only(
        make_workspace, db, simulator):
    ws, _ = make_workspace()  # us: the lead is stored whole
    job_id = str(admit(db, ws, LEAD, "company_profile").job["id"])
    with db.db.connection() as conn:
        set_region(conn, db.key_cache, ws.id, "eu")
    assert pipeline.run_job(db, job_id) == "succeeded"
    (sent,) = simulator.stats.snapshot()["received"]["perplexity"]
    assert "jane" not in sent.lower() and "acme.com" in sent


# --- suppression everywhere --------------------------------------------------------------

def test_an_objection_stops_queued_and_parked_jobs_without_a_provider_call(
        client, make_workspace, db, simulator):
    ws, key = make_workspace()
    first = str(admit(db, ws, {"email": "a@acme.com", "name": "A"}).job["id"])
    parked = str(admit(db, ws, {"email": "jane@acme.com", "name": "Jane"}).job["id"])
    assert job_row(db, parked)["status"] == "waiting"
    client.post("/api/v1/privacy/consents", headers=h(key), json={
        "identifier": "jane@acme.com", "purpose": "enrichment", "basis": "legitimate_interest",
        "granted": False, "source": "email"})
    assert pipeline.run_job(db, first) == "succeeded"  # hands its slot to the parked one
    before = provider_calls(simulator)
    assert pipeline.run_job(db, parked) == "failed"
    row = job_row(db, parked)
    assert "objected" in row["error"] and provider_calls(simulator) == before
    with db.db.connection() as conn:  # its unit was given back: only the first one counts
        assert conn.execute("SELECT reserved FROM usage_counters").fetchone()["reserved"] == 1


def test_dead_letters_of_a_suppressed_or_purged_subject_are_not_replayed(make_workspace, db,
                                                                         simulator):
    ws, _ = make_workspace()
    simulator.config.outage_status = 403
    objected = str(admit(db, ws, {"email": "jane@acme.com", "name": "J"}).job["id"])
    assert pipeline.run_job(db, objected) == "failed"
    purged = str(admit(db, ws, {"email": "old@acme.com", "name": "O"}).job["id"])
    assert pipeline.run_job(db, purged) == "failed"
    simulator.config.outage_status = 0
    now = db.clock()
    with db.db.connection() as conn:
        privacy.record_consent(conn, ws.id, privacy.Consent(
            "jane@acme.com", "enrichment", "legitimate_interest", False, "phone"))
        conn.execute("UPDATE enrichment_jobs SET completed_at = %s WHERE id = %s",
                     (now - timedelta(days=100), purged))
        assert privacy.purge(conn, now)["raw"] == 1
        assert dead_letters.replay(conn, db.settings, objected, now) == "suppressed"
        assert dead_letters.replay(conn, db.settings, purged, now) == "purged"
        letter = conn.execute("SELECT error FROM dead_letters WHERE job_id = %s",
                              (purged,)).fetchone()
        job = conn.execute("SELECT lead, metadata, error FROM enrichment_jobs WHERE id = %s",
                           (purged,)).fetchone()
    assert letter["error"] is None  # the purge clears the dead letter's text too
    assert job == {"lead": {}, "metadata": {}, "error": None}


# --- subjects by every identifier --------------------------------------------------------

def test_a_subject_is_found_and_erased_by_every_personal_identifier(client, make_workspace, db):
    ws, key = make_workspace()
    by_email = str(admit(db, ws, {"email": "Jane@Acme.com", "name": "Jane",
                                  "linkedin_url": LEAD["linkedin_url"]}).job["id"])
    by_profile = str(admit(db, ws, {"linkedin_url": LEAD["linkedin_url"].upper() + " ",
                                    "name": "J"}).job["id"])
    company = str(admit(db, ws, {"domain": "acme.com"}, "company_profile").job["id"])
    exported = client.get("/api/v1/privacy/export", headers=h(key),
                          query_string={"identifier": "jane@acme.com"}).get_json()
    assert {j["job_id"] for j in exported["jobs"]} == {by_email, by_profile}
    resp = client.post("/api/v1/privacy/erasures", headers=h(key),
                       json={"identifier": LEAD["linkedin_url"]})
    assert resp.status_code == 204
    assert job_row(db, by_email) is None and job_row(db, by_profile) is None
    assert job_row(db, company) is not None  # the company is not the person
    for lead in ({"email": "jane@acme.com", "name": "J"},
                 {"linkedin_url": LEAD["linkedin_url"], "name": "J"}):  # both suppressed
        again = client.post("/api/v1/enrichment", headers=h(key),
                            json={"template": "person_social", "lead": lead})
        assert again.status_code == 403, lead


def test_the_old_erasure_route_still_works_and_says_it_is_deprecated(client, auth):
    _, headers = auth
    resp = client.delete("/api/v1/privacy/subjects/jane@acme.com", headers=headers)
    assert resp.status_code == 204 and resp.headers["Deprecation"] == "true"
    assert "/api/v1/privacy/erasures" in resp.headers["Link"]
    bad = client.post("/api/v1/privacy/erasures", headers=headers, json={"who": "jane"})
    assert bad.status_code == 422


# --- input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    '{"template": "company_profile", "lead": {"domain": "acme.com"}, "metadata": '
    + '{"a": ' * 10_000 + "1" + "}" * 10_000 + "}",
    '{"template": "company_profile", "lead": {"domain": "acme.com"}, "metadata": '
    + "[" * 40 + "]" * 40 + "}",
    '{"template": "company_profile", "lead": {"domain": "acme.com"}, "metadata": {"x": NaN}}',
    '{"template": "company_profile", "lead": {"domain": "acme.com"}, "metadata": '
    '{"x": Infinity}}',
    '{"template": "company_profile", "lead": {"domain": "acme.com"}, "metadata": '
    '{"x": -Infinity}}',
    '{"template": "company_profile", "lead": {"domain": "acme.com"}, "metadata": {"x": 1e400}}',
    '{"template": "company_profile", "lead": {"domain": "acme.com"}, "metadata": '
    '{"x": "\\ud800"}}',
    '{"template": "company_profile", "lead": {"domain": "acme.com"}, "metadata": '
    '{"x": "a\\u0000b"}}',
    '{"template": "company_profile", "lead": {"domain": "acme.com"}, "metadata": '
    '{"x": ' + "9" * 5000 + "}}",
])
def test_hostile_json_is_a_400_never_a_500(client, auth, raw):
    _, headers = auth
    resp = client.post("/api/v1/enrichment", data=raw,
                       headers={**headers, "Content-Type": "application/json"})
    assert resp.status_code == 400, resp.get_data(as_text=True)[:200]
    assert resp.mimetype == "application/problem+json"


# --- closed defaults -----------------------------------------------------------------------

def test_metrics_need_the_token_when_one_is_set(db):
    from api import create_app

    app = create_app(services=replace(db, settings=replace(db.settings, metrics_token="s3cr")))
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cr"}).status_code == 200


# --- cheap rejection -----------------------------------------------------------------------

def test_an_address_that_keeps_failing_is_refused_before_the_database(client, auth, db,
                                                                      monkeypatch):
    _, good = auth
    lookups = []
    import api.auth

    real = api.auth.authenticate
    monkeypatch.setattr(api.auth, "authenticate", lambda c, k: lookups.append(k) or real(c, k))
    attacker = {"REMOTE_ADDR": "10.9.9.9"}
    statuses = [client.get("/api/v1/templates", environ_base=attacker,
                           headers=h(f"lek_{i:012x}_notasecret")).status_code
                for i in range(db.settings.auth_fails_per_address + 20)]
    assert statuses.count(401) == db.settings.auth_fails_per_address
    assert statuses.count(429) == 20
    assert len(lookups) == db.settings.auth_fails_per_address  # the 429s cost no lookup
    blocked = client.get("/api/v1/templates", environ_base=attacker, headers=good)
    assert blocked.status_code == 429  # refused before the key is looked at
    assert client.get("/api/v1/templates", headers=good).status_code == 200  # others unaffected


def test_guessing_secrets_for_one_key_prefix_is_refused(client, make_workspace, db):
    _, key = make_workspace()
    prefix = key.split("_")[1]
    statuses = [client.get("/api/v1/templates", environ_base={"REMOTE_ADDR": f"10.0.0.{i}"},
                           headers=h(f"lek_{prefix}_guess{i}")).status_code
                for i in range(db.settings.auth_fails_per_key + 3)]
    assert statuses[-3:] == [429] * 3


def test_requests_over_the_limit_raise_one_throttled_event_per_window(client, make_workspace,
                                                                      captured_events):
    _, key = make_workspace(plan="core")
    body = {"template": "company_profile", "lead": {"domain": "acme.com"}}
    statuses = [client.post("/api/v1/enrichment", headers=h(key), json=body).status_code
                for _ in range(6)]
    assert statuses.count(429) >= 4
    assert [e[0] for e in captured_events].count("enrichment_throttled") == 1


# --- found in review -----------------------------------------------------------------------

def test_an_eu_company_lead_with_a_company_name_but_no_domain_is_accepted(client,
                                                                        make_workspace, db):
    _, key = make_workspace(region="eu")
    resp = client.post("/api/v1/enrichment", headers=h(key), json={
        "template": "company_profile", "lead": {"email": "jane@acme.com", "company": "Acme"}})
    assert resp.status_code == 202 and resp.get_json()["lead"] == {"company": "Acme"}


def test_two_people_of_one_company_are_two_subjects_and_erasure_finds_the_named_one(
        client, make_workspace, db):
    _, key = make_workspace()
    jane = client.post("/api/v1/enrichment", headers=h(key), json={
        "template": "person_social",
        "lead": {"name": "Jane Doe", "domain": "acme.com", "email": "jane@acme.com"}})
    jane_by_name = client.post("/api/v1/enrichment", headers=h(key), json={
        "template": "person_basic", "lead": {"name": "Jane  Doe", "domain": "acme.com"}})
    bob = client.post("/api/v1/enrichment", headers=h(key), json={
        "template": "person_basic", "lead": {"name": "Bob Roe", "domain": "acme.com"}})
    assert bob.status_code == 202 and bob.get_json()["lead"]["name"] == "Bob Roe"
    client.post("/api/v1/privacy/erasures", headers=h(key), json={"identifier": "jane@acme.com"})
    for gone in (jane, jane_by_name):
        assert job_row(db, gone.get_json()["job_id"]) is None
    assert job_row(db, bob.get_json()["job_id"]) is not None
    again = client.post("/api/v1/enrichment", headers=h(key), json={
        "template": "person_social", "lead": {"name": "Jane Doe", "company": "x",
                                              "domain": "acme.com"}})
    assert again.status_code == 403


def test_erasure_follows_identifiers_across_jobs(client, make_workspace, db):
    ws, key = make_workspace()
    url = "https://www.linkedin.com/in/janedoe"
    for lead in ({"email": "jane@a.com", "linkedin_url": url}, {"email": "jane@b.com",
                 "linkedin_url": url}, {"email": "jane@b.com", "name": "Jane"}):
        admit(db, ws, lead)
    client.post("/api/v1/privacy/erasures", headers=h(key), json={"identifier": "jane@a.com"})
    with db.db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM enrichment_jobs").fetchone()["n"] == 0
    assert client.post("/api/v1/enrichment", headers=h(key), json={
        "template": "person_social", "lead": {"email": "jane@b.com"}}).status_code == 403


def test_guessing_at_a_key_prefix_does_not_lock_its_owner_out(client, make_workspace, db):
    _, key = make_workspace()
    assert client.get("/api/v1/templates", headers=h(key)).status_code == 200
    prefix = key.split("_")[1]
    for i in range(db.settings.auth_fails_per_key + 5):
        client.get("/api/v1/templates", environ_base={"REMOTE_ADDR": f"10.1.0.{i}"},
                   headers=h(f"lek_{prefix}_guess{i}"))
    assert client.get("/api/v1/templates", environ_base={"REMOTE_ADDR": "10.2.0.1"},
                      headers=h(key)).status_code == 200


def test_an_answer_showing_an_erased_job_is_not_kept_for_replay(make_workspace, db):
    ws, _ = make_workspace()
    gone = str(admit(db, ws, {"email": "jane@acme.com"}).job["id"])
    with db.db.connection() as conn:
        privacy.erase(conn, ws.id, "jane@acme.com", slots=1)
        intake.store_answer(conn, ws.id, "k1", "h", 202, {"job_id": gone})
        assert conn.execute("SELECT count(*) AS n FROM api_idempotency").fetchone()["n"] == 0
