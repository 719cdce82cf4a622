"""The HTTP contract's 4xx paths, auth and read endpoints (Flask test client, real Postgres)."""

from __future__ import annotations

import json
import uuid

import pytest

from enrichment.workspaces import key_prefix, revoke_api_key

LEAD = {"template": "person_basic",
        "lead": {"email": "jane@acme.com", "name": "Jane Doe", "company": "Acme"}}


def assert_problem(resp, status: int) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json(force=True)
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


def test_submit_answers_202_with_the_job_body(client, auth, monkeypatch, db):
    published = []
    monkeypatch.setattr(db.publisher, "publish", lambda job_id, q: published.append((job_id, q)))
    _, headers = auth
    resp = client.post("/api/v1/enrichment", json=LEAD | {"metadata": {"crm_id": "0031x"}},
                       headers=headers)
    assert resp.status_code == 202
    body = resp.get_json()
    assert body["status"] == "queued" and body["queue"] == "pro"
    assert body["lead"] == LEAD["lead"] and body["metadata"] == {"crm_id": "0031x"}
    assert body["attempts"] == 0 and body["result"] is None and body["usage"] is None
    uuid.UUID(body["job_id"])
    assert resp.headers["Location"] == f"/api/v1/enrichment/{body['job_id']}"
    assert published == [(body["job_id"], "pro")]
    with db.db.connection() as conn:  # published, so the outbox row is gone
        assert conn.execute("SELECT count(*) AS n FROM job_outbox").fetchone()["n"] == 0


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Basic abc"},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer not-a-key"},
    {"Authorization": "Bearer lek_000000000000_" + "x" * 43},
])
def test_missing_or_unknown_key_is_401(client, db, headers):
    resp = client.post("/api/v1/enrichment", json=LEAD, headers=headers)
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_right_prefix_wrong_secret_is_401(client, make_workspace):
    _, key = make_workspace()
    tampered = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert_problem(client.get("/api/v1/templates", headers={"Authorization": f"Bearer {tampered}"}),
                   401)


def test_revoked_key_is_401(client, make_workspace, db):
    _, key = make_workspace()
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/templates", headers=headers).status_code == 200
    with db.db.connection() as conn:
        assert revoke_api_key(conn, db.key_cache, key_prefix(key))
    assert_problem(client.get("/api/v1/templates", headers=headers), 401)


def test_a_cached_key_skips_the_database_until_its_workspace_changes(client, make_workspace, db,
                                                                    monkeypatch):
    from api import auth as api_auth
    from enrichment.billing import accounts

    ws, key = make_workspace(plan="core")
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/workspace", headers=headers).get_json()["plan"] == "core"
    lookups = []
    real = api_auth.authenticate_from_database
    monkeypatch.setattr(api_auth, "authenticate_from_database",
                        lambda *a: lookups.append(a) or real(*a))
    answer = client.get("/api/v1/templates", headers=headers)
    assert answer.status_code == 200 and lookups == []  # one Redis call: auth and limit
    assert answer.headers["X-RateLimit-Limit"] == "300"  # core's read budget, from the cache
    with db.db.connection() as conn:  # a plan change reaches the next request
        accounts.set_plan(conn, db.key_cache, db.settings.plans, ws.id, "elite")
    assert client.get("/api/v1/workspace", headers=headers).get_json()["plan"] == "elite"
    assert len(lookups) == 1
    # A lookup that raced a revocation cannot cache the key again: the stale mark wins.
    with db.db.connection() as conn:
        found = api_auth.authenticate(conn, key)
        assert revoke_api_key(conn, db.key_cache, key_prefix(key))
    db.key_cache.remember(key_prefix(key), key, found, db.settings.plans["elite"])
    assert_problem(client.get("/api/v1/templates", headers=headers), 401)


def test_a_key_cached_during_its_revocation_is_refused_after_it(client, make_workspace, db):
    from api import auth as api_auth

    _, key = make_workspace()
    headers = {"Authorization": f"Bearer {key}"}
    prefix = key_prefix(key)
    with db.db.connection() as conn:
        found = api_auth.authenticate(conn, key)
        with db.key_cache.changing(lambda: [prefix]):
            db.redis.delete(f"apikey:{prefix}")  # Redis lost the first mark (a restart)
            db.key_cache.remember(prefix, key, found, db.settings.plans["pro"])  # a racing lookup
            conn.execute("UPDATE api_keys SET revoked_at = now() WHERE prefix = %s", (prefix,))
    assert_problem(client.get("/api/v1/templates", headers=headers), 401)


def test_an_entry_cached_under_other_plan_limits_is_not_used(client, make_workspace, db,
                                                            monkeypatch):
    from dataclasses import replace

    from api import auth as api_auth
    from enrichment.authguard import KeyCache
    from enrichment.config import Plans

    _, key = make_workspace(plan="pro")
    plans = db.settings.plans
    other = Plans({**plans.plans, "pro": replace(plans["pro"], rpm=9999)}, plans.queue_weights)
    with db.db.connection() as conn:  # written by a process with another plans file
        KeyCache(db.redis, other).remember(key_prefix(key), key, api_auth.authenticate(conn, key),
                                           other["pro"])
    lookups = []
    real = api_auth.authenticate_from_database
    monkeypatch.setattr(api_auth, "authenticate_from_database",
                        lambda *a: lookups.append(a) or real(*a))
    answer = client.get("/api/v1/templates", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200 and len(lookups) == 1
    assert answer.headers["X-RateLimit-Limit"] == str(plans["pro"].rpm * 10)


def test_wrong_content_type_is_415(client, auth):
    _, headers = auth
    resp = client.post("/api/v1/enrichment", data=json.dumps(LEAD), headers=headers,
                       content_type="text/plain")
    assert_problem(resp, 415)


@pytest.mark.parametrize("body", [b"{", b"\xff\xfe{}", b"", b"[1, 2]", b'"lead"', b"[" * 100_000])
def test_malformed_json_is_400(client, auth, body):
    _, headers = auth
    resp = client.post("/api/v1/enrichment", data=body, headers=headers,
                       content_type="application/json")
    assert_problem(resp, 400)


def test_oversized_body_is_413(client, auth):
    _, headers = auth
    big = json.dumps(LEAD | {"metadata": {"blob": "x" * (1024 * 1024)}})
    resp = client.post("/api/v1/enrichment", data=big, headers=headers,
                       content_type="application/json")
    assert_problem(resp, 413)


@pytest.mark.parametrize(("body", "field"), [
    (LEAD | {"priority": "high"}, "priority"),
    ({"template": "person_basic", "lead": LEAD["lead"] | {"ssn": "x"}}, "lead.ssn"),
    ({"template": "nope", "lead": LEAD["lead"]}, "template"),
    ({"lead": LEAD["lead"]}, "template"),
    ({"template": "person_basic"}, "lead"),
    ({"template": "person_basic", "lead": {"name": "Jane"}}, "lead"),  # a name alone: nobody
    ({"template": "company_profile", "lead": {"name": "Jane"}}, "lead"),
    ({"template": "person_basic", "lead": {"email": "not-an-email"}}, "lead.email"),
    ({"template": "company_profile", "lead": {"domain": "not a domain"}}, "lead.domain"),
    ({"template": "person_social", "lead": {"linkedin_url": "https://evil.example/in/x"}},
     "lead.linkedin_url"),
    ({"template": "person_basic", "lead": {"domain": "acme.com"}}, "lead"),
    (LEAD | {"metadata": {"k": {"nested": True}}}, "metadata"),
    (LEAD | {"metadata": "string"}, "metadata"),
    ({"template": 5, "lead": []}, "template"),
])
def test_invalid_fields_are_422_with_the_failing_fields(client, auth, body, field):
    _, headers = auth
    problem = assert_problem(client.post("/api/v1/enrichment", json=body, headers=headers), 422)
    assert field in [e["field"] for e in problem["errors"]], problem


def test_another_workspaces_job_is_404(client, make_workspace, monkeypatch, db):
    monkeypatch.setattr(db.publisher, "publish", lambda *a: None)
    _, key_a = make_workspace(name="A")
    _, key_b = make_workspace(name="B")
    job = client.post("/api/v1/enrichment", json=LEAD,
                      headers={"Authorization": f"Bearer {key_a}"}).get_json()
    resp = client.get(f"/api/v1/enrichment/{job['job_id']}",
                      headers={"Authorization": f"Bearer {key_b}"})
    assert_problem(resp, 404)
    own = client.get(f"/api/v1/enrichment/{job['job_id']}",
                     headers={"Authorization": f"Bearer {key_a}"})
    assert own.status_code == 200 and own.get_json()["job_id"] == job["job_id"]


@pytest.mark.parametrize("path", ["/api/v1/enrichment/not-a-uuid",
                                  f"/api/v1/enrichment/{uuid.uuid4()}", "/nowhere"])
def test_unknown_paths_are_404_problems(client, auth, path):
    _, headers = auth
    assert_problem(client.get(path, headers=headers), 404)


def test_wrong_method_is_405_problem(client, auth):
    _, headers = auth
    resp = client.put("/api/v1/enrichment", json=LEAD, headers=headers)
    assert_problem(resp, 405)
    assert "POST" in resp.headers["Allow"]


def test_templates_lists_fields_and_providers(client, auth):
    _, headers = auth
    templates = {t["name"]: t for t in client.get("/api/v1/templates",
                                                  headers=headers).get_json()["templates"]}
    assert set(templates) == {"company_profile", "person_basic", "person_social",
                              "person_contact"}
    assert templates["person_basic"]["providers"] == ["perplexity", "social_links"]
    assert templates["person_social"]["providers"] == ["social_links"]
    contact = templates["person_contact"]
    assert contact["providers"] == ["hunter", "social_links", "perplexity"]
    assert contact["waterfall"]["work_email"] == ["hunter.email_finder", "perplexity.research"]
    assert templates["company_profile"]["level"] == "company"
    assert "linkedin" in templates["person_basic"]["fields"]


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"postgres": "ok", "redis": "ok"}


def test_readiness_is_503_when_redis_is_unreachable(db, settings):
    from dataclasses import replace

    from api import create_app
    from enrichment.services import build_services

    broken = build_services(replace(settings, redis_url="redis://127.0.0.1:1/0"))
    try:
        resp = create_app(services=broken).test_client().get("/readyz")
        assert resp.status_code == 503
        assert resp.headers["Retry-After"] == "5"
        assert resp.get_json()["checks"]["redis"].startswith("unreachable")
    finally:
        broken.close()


def test_database_down_is_503_problem_not_500(settings, migrated):
    from api import create_app
    from enrichment.services import Services, build_services

    ok = build_services(settings)
    ok.db.close()
    dead_pool = ok.db  # a closed pool raises PoolClosed (an OperationalError)
    svc = Services(**{**vars(ok), "db": dead_pool})
    resp = create_app(services=svc).test_client().get(
        "/api/v1/templates", headers={"Authorization": "Bearer lek_000000000000_x"})
    assert_problem(resp, 503)
    assert resp.headers["Retry-After"] == "5"


@pytest.mark.parametrize("body", [
    b'{"template": "person_basic", "lead": {"email": "a@b.co", "name": "x\\u0000y"}}',
    b'{"template": "person_basic", "lead": {"email": "a@b.co"}, "metadata": {"k": "\\u0000"}}',
    b'{"template": "person_basic", "lead": {"email": "a@b.co", "name": "\\ud800"}}',
])
def test_nul_and_lone_surrogates_are_400_not_500(client, auth, body):
    """Found by schemathesis: PostgreSQL stores neither (a 500 before)."""
    _, headers = auth
    resp = client.post("/api/v1/enrichment", data=body, headers=headers,
                       content_type="application/json")
    assert_problem(resp, 400)
