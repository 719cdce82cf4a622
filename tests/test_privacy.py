"""Subject rights and retention on real Postgres and Redis; workspaces isolated."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from enrichment import pipeline, privacy
from enrichment.jobs import intake
from enrichment.leads import subject_hash
from enrichment.templates import TEMPLATES

JANE = "Jane@Acme.com "
SUBJECT = subject_hash(JANE)
TABLES_WITH_SUBJECT = ("enrichment_jobs", "suppressions", "consents")


def admit(db, ws, email="jane@acme.com", template="person_basic"):
    with db.db.connection() as conn:
        return str(intake.admit(conn, slots=1, workspace=ws, plan=db.settings.plans[ws.plan],
                                   template=TEMPLATES[template],
                                   lead={"email": email, "name": "Jane Doe"}, metadata={},
                                   now=db.clock()).job["id"])


def h(key):
    return {"Authorization": f"Bearer {key}"}


def test_export_returns_all_and_only_this_workspaces_data(client, make_workspace, db,
                                                          simulator):
    a, key_a = make_workspace(name="A")
    b, key_b = make_workspace(name="B")
    done = admit(db, a)
    assert pipeline.run_job(db, done) == "succeeded"
    admit(db, a, template="person_social")
    admit(db, b)
    admit(db, a, email="other@acme.com")
    client.post("/api/v1/privacy/consents", headers=h(key_a), json={
        "identifier": JANE, "purpose": "enrichment", "basis": "consent", "granted": True,
        "source": "web-form"})
    body = client.get("/api/v1/privacy/export", query_string={"identifier": JANE},
                      headers=h(key_a)).get_json()
    assert body["identifier"] == "jane@acme.com" and body["subject_hash"] == SUBJECT
    assert len(body["jobs"]) == 2 and {j["template"] for j in body["jobs"]} == {
        "person_basic", "person_social"}
    succeeded = next(j for j in body["jobs"] if j["status"] == "succeeded")
    assert succeeded["result"]["fields"] and succeeded["lead"]["email"] == "jane@acme.com"
    assert [c["basis"] for c in body["consents"]] == ["consent"] and body["suppression"] is None
    other = client.get("/api/v1/privacy/export", query_string={"identifier": JANE},
                       headers=h(key_b)).get_json()
    assert len(other["jobs"]) == 1 and other["consents"] == []
    nobody = client.get("/api/v1/privacy/export", query_string={"identifier": "x@y.com"},
                        headers=h(key_a))
    assert nobody.status_code == 200 and nobody.get_json()["jobs"] == []


def every_trace(db, ws_id, job_ids) -> dict:
    """Rows anywhere that still point at the subject or its jobs in this workspace."""
    ids = [str(j) for j in job_ids]
    with db.db.connection() as conn:
        found = {t: conn.execute(f"SELECT count(*) AS n FROM {t} WHERE workspace_id = %s"
                                 " AND subject_hash = %s", (ws_id, SUBJECT)).fetchone()["n"]
                 for t in ("enrichment_jobs", "consents")}
        for table in ("enrichment_results", "job_outbox", "dead_letters"):
            found[table] = conn.execute(f"SELECT count(*) AS n FROM {table}"
                                        " WHERE job_id::text = ANY(%s)", (ids,)).fetchone()["n"]
        found["api_idempotency"] = conn.execute(
            "SELECT count(*) AS n FROM api_idempotency WHERE response::text LIKE ANY(%s)",
            ([f"%{i}%" for i in ids],)).fetchone()["n"]
        found["leads"] = conn.execute(
            "SELECT count(*) AS n FROM enrichment_jobs WHERE workspace_id = %s"
            " AND lead::text ILIKE '%%jane@acme%%'", (ws_id,)).fetchone()["n"]
    keys = [k.decode() for k in db.redis.scan_iter("*")]
    found["redis"] = sum(1 for k in keys for needle in (*ids, SUBJECT, "jane") if needle in k)
    return found


def test_erasure_removes_every_trace_and_suppresses(client, make_workspace, db, simulator):
    a, key_a = make_workspace(name="A")
    b, _ = make_workspace(name="B")
    h_a = h(key_a) | {"Idempotency-Key": "crm-1"}
    first = client.post("/api/v1/enrichment", headers=h_a, json={
        "template": "person_basic", "lead": {"email": "jane@acme.com"}}).get_json()["job_id"]
    assert pipeline.run_job(db, first) == "succeeded"
    simulator.config.outage_status = 500
    dead = admit(db, a, template="person_social")
    assert pipeline.run_job(db, dead) == "dead"  # a dead letter too
    simulator.config.outage_status = 0
    queued = admit(db, a, template="company_profile")
    b_job = admit(db, b)
    before = every_trace(db, a.id, [first, dead, queued])
    assert before["enrichment_jobs"] == 3 and before["api_idempotency"] == 1
    resp = client.delete("/api/v1/privacy/subjects/Jane@Acme.com", headers=h(key_a))
    assert resp.status_code == 204
    after = every_trace(db, a.id, [first, dead, queued])
    assert after == dict.fromkeys(after, 0), after
    with db.db.connection() as conn:
        assert conn.execute("SELECT reason FROM suppressions WHERE workspace_id = %s"
                            " AND subject_hash = %s", (a.id, SUBJECT)).fetchone() == {
            "reason": "erasure"}
        # The queued job's unit came back; the succeeded one stays used (it was delivered).
        assert conn.execute("SELECT reserved FROM usage_counters WHERE workspace_id = %s",
                            (a.id,)).fetchone()["reserved"] == 1
        assert conn.execute("SELECT count(*) AS n FROM enrichment_jobs WHERE id = %s",
                            (b_job,)).fetchone()["n"] == 1  # B untouched
    again = client.post("/api/v1/enrichment", headers=h(key_a), json={
        "template": "company_profile", "lead": {"email": "JANE@acme.com", "domain": "a.com"}})
    assert again.status_code == 403
    assert client.delete("/api/v1/privacy/subjects/nobody@x.com",
                         headers=h(key_a)).status_code == 204


def test_erasure_while_a_job_runs_leaves_nothing_behind(make_workspace, db, monkeypatch):
    ws, _ = make_workspace()
    job_id = admit(db, ws)
    real = db.providers["perplexity"].fill

    def research(ask):  # the subject is erased while the provider round runs
        result = real(ask)
        with db.db.connection() as conn:
            privacy.erase(conn, ws.id, JANE, slots=1)
        return result

    monkeypatch.setattr(db.providers["perplexity"], "fill", research)
    assert pipeline.run_job(db, job_id) == "lost"
    with db.db.connection() as conn:
        for table in ("enrichment_jobs", "enrichment_results", "enrichment_usage"):
            assert conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"] == 0
        assert conn.execute("SELECT reserved FROM usage_counters").fetchone()["reserved"] == 0


def test_objection_suppresses_without_deleting_the_consent_record(client, make_workspace, db):
    _, key = make_workspace()
    body = {"identifier": JANE, "purpose": "enrichment", "basis": "legitimate_interest",
            "granted": False, "source": "email-reply"}
    resp = client.post("/api/v1/privacy/consents", headers=h(key), json=body)
    assert resp.status_code == 201
    record = resp.get_json()
    assert record["identifier"] == "jane@acme.com" and record["granted"] is False
    assert record["recorded_at"].endswith("Z")
    submit = {"template": "company_profile", "lead": {"email": "jane@acme.com"}}
    assert client.post("/api/v1/enrichment", headers=h(key), json=submit).status_code == 403
    client.post("/api/v1/privacy/consents", headers=h(key), json=body | {"granted": True,
                                                                        "basis": "consent"})
    assert client.post("/api/v1/enrichment", headers=h(key), json=submit).status_code == 202
    exported = client.get("/api/v1/privacy/export", query_string={"identifier": JANE},
                          headers=h(key)).get_json()
    assert [c["granted"] for c in exported["consents"]] == [False, True]
    # A grant never lifts an erasure.
    client.delete("/api/v1/privacy/subjects/jane@acme.com", headers=h(key))
    client.post("/api/v1/privacy/consents", headers=h(key), json=body | {"granted": True})
    assert client.post("/api/v1/enrichment", headers=h(key), json=submit).status_code == 403


@pytest.mark.parametrize(("path", "kwargs"), [
    ("/api/v1/privacy/export", {}),
    ("/api/v1/privacy/export", {"query_string": {"identifier": "x" * 501}}),
])
def test_bad_privacy_requests_are_422(client, auth, path, kwargs):
    _, headers = auth
    assert client.get(path, headers=headers, **kwargs).status_code == 422


def test_bad_consent_bodies_are_422(client, auth):
    _, headers = auth
    for body in ({}, {"identifier": JANE, "purpose": "x", "basis": "because", "granted": True,
                      "source": "s"}, {"identifier": JANE, "purpose": "x", "basis": "consent",
                                       "granted": "maybe", "source": "s"}):
        assert client.post("/api/v1/privacy/consents", headers=headers,
                           json=body).status_code == 422


def test_retention_purge_with_a_controllable_clock(db, make_workspace, simulator):
    ws, _ = make_workspace()
    ids = {name: admit(db, ws, email=f"{name}@acme.com") for name in
           ("fresh", "old", "ancient", "stuck")}
    for name in ("fresh", "old", "ancient"):
        assert pipeline.run_job(db, ids[name]) == "succeeded"
    now = db.clock()
    with db.db.connection() as conn:
        for name, age in (("old", 100), ("ancient", 400), ("stuck", 400)):
            conn.execute("UPDATE enrichment_jobs SET created_at = %s, completed_at ="
                         " CASE WHEN status = 'succeeded' THEN %s END WHERE id = %s",
                         (now - timedelta(days=age), now - timedelta(days=age), ids[name]))
            conn.execute("UPDATE enrichment_usage SET created_at = %s WHERE job_id = %s",
                         (now - timedelta(days=age), ids[name]))
        removed = privacy.purge(conn, now)
        assert removed == {"raw": 2, "webhook_deliveries": 0, "jobs": 1, "usage_rows": 1}
        assert privacy.purge(conn, now) == {"raw": 0, "webhook_deliveries": 0, "jobs": 0,
                                            "usage_rows": 0}
        rows = {str(r["id"]): r for r in conn.execute(
            "SELECT id, lead, error, status FROM enrichment_jobs")}
        results = {str(r["job_id"]) for r in conn.execute("SELECT job_id FROM enrichment_results")}
    assert set(rows) == {ids["fresh"], ids["old"], ids["stuck"]}
    assert rows[ids["old"]]["lead"] == {} and rows[ids["fresh"]]["lead"]["email"]
    assert rows[ids["stuck"]]["lead"]["email"]  # not finished: untouched
    assert results == {ids["fresh"], ids["old"]}  # summaries kept for 365 days


def test_logs_carry_no_personal_data(client, auth, db, caplog, simulator):
    _, headers = auth
    caplog.set_level(logging.DEBUG)
    job = client.post("/api/v1/enrichment", headers=headers, json={
        "template": "person_basic", "lead": {"email": "jane@acme.com", "name": "Jane Doe"}})
    pipeline.run_job(db, job.get_json()["job_id"])
    client.get("/api/v1/privacy/export", query_string={"identifier": "jane@acme.com"},
               headers=headers)
    client.delete("/api/v1/privacy/subjects/jane@acme.com", headers=headers)
    ours = [r for r in caplog.records if not r.name.startswith("werkzeug")]
    assert any(r.name == "api.access" for r in ours)
    for record in ours:
        text = record.getMessage().lower()
        assert "jane" not in text and "acme.com" not in text, (record.name, text)


def test_workspace_settings_show_the_regional_rule(client, make_workspace, db):
    from enrichment.workspaces import set_region

    ws, key = make_workspace(region="us")
    body = client.get("/api/v1/workspace", headers=h(key)).get_json()
    assert (body["region"], body["person_level_allowed"]) == ("us", True)
    with db.db.connection() as conn:
        set_region(conn, db.key_cache, ws.id, "eu")
    body = client.get("/api/v1/workspace", headers=h(key)).get_json()
    assert (body["region"], body["person_level_allowed"]) == ("eu", False)
