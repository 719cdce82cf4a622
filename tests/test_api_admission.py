"""Admission through HTTP: rate-limit headers and 429s, replays, Idempotency-Key, caps,
regional rule, batch."""

from __future__ import annotations

import pytest

from enrichment.periods import period_start

from .helpers import at
from .test_api import LEAD, assert_problem

RATE_HEADERS = {"RateLimit-Policy", "RateLimit", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                "X-RateLimit-Reset"}


@pytest.fixture
def published(db, monkeypatch):
    sent = []
    monkeypatch.setattr(db.publisher, "publish", lambda job_id, q: sent.append(job_id))
    return sent



def headers_for(key, **extra):
    return {"Authorization": f"Bearer {key}", **extra}


def test_every_answer_carries_rate_limit_headers(client, make_workspace, published):
    _, key = make_workspace(plan="pro")
    ok = client.post("/api/v1/enrichment", json=LEAD, headers=headers_for(key))
    assert set(ok.headers.keys()) >= RATE_HEADERS
    assert ok.headers["RateLimit-Policy"] == '"minute";q=90;w=60'
    assert ok.headers["RateLimit"].startswith('"minute";r=29;t=')
    assert ok.headers["X-RateLimit-Remaining"] == "29"
    bad = client.post("/api/v1/enrichment", json={"template": "x"}, headers=headers_for(key))
    assert bad.status_code == 422 and set(bad.headers.keys()) >= RATE_HEADERS
    read = client.get("/api/v1/templates", headers=headers_for(key))
    assert read.headers["RateLimit-Policy"] == '"minute";q=900;w=60'  # reads: 10x


def test_over_the_limit_is_429_with_retry_after_and_an_event(client, make_workspace, published,
                                                            captured_events):
    ws, key = make_workspace(plan="core")  # burst 1
    first = client.post("/api/v1/enrichment", json=LEAD, headers=headers_for(key))
    assert first.status_code == 202
    second = client.post("/api/v1/enrichment", json=LEAD, headers=headers_for(key))
    problem = assert_problem(second, 429)
    assert int(second.headers["Retry-After"]) >= 1
    assert second.headers["X-RateLimit-Remaining"] == "0"
    assert "core" in problem["detail"]
    throttled = [e for e in captured_events if e[0] == "enrichment_throttled"]
    assert len(throttled) == 1 and throttled[0][1] == str(ws.id)
    assert "email" not in str(throttled[0][2])
    # Reads have their own budget: polling still works.
    job_id = first.get_json()["job_id"]
    assert client.get(f"/api/v1/enrichment/{job_id}", headers=headers_for(key)).status_code == 200


def test_redis_down_fails_closed_with_503(client, make_workspace, db, monkeypatch):
    import redis

    _, key = make_workspace()

    def down(*a, **k):
        raise redis.ConnectionError("down")

    monkeypatch.setattr(db.rate_limiter, "hit", down)
    resp = client.post("/api/v1/enrichment", json=LEAD, headers=headers_for(key))
    assert_problem(resp, 503)
    assert resp.headers["Retry-After"] == "5"


def test_same_day_duplicate_is_replayed_with_header(client, auth, published, captured_events):
    _, headers = auth
    first = client.post("/api/v1/enrichment", json=LEAD, headers=headers)
    again = client.post("/api/v1/enrichment", json=LEAD | {"metadata": {"x": 1}}, headers=headers)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["job_id"] == first.get_json()["job_id"]
    assert len(published) == 1
    assert [e[0] for e in captured_events].count("enrichment_requested") == 1


def test_client_idempotency_key(client, auth, published):
    _, headers = auth
    h = headers | {"Idempotency-Key": "order-42"}
    first = client.post("/api/v1/enrichment", json=LEAD, headers=h)
    same = client.post("/api/v1/enrichment", json=LEAD, headers=h)
    assert first.status_code == same.status_code == 202
    assert same.get_json() == first.get_json()
    assert same.headers["Idempotent-Replayed"] == "true"
    other = client.post("/api/v1/enrichment", json=LEAD | {"template": "person_social"}, headers=h)
    assert assert_problem(other, 422)["type"].endswith("idempotency-key-reused")


@pytest.mark.parametrize("key", ["", "a b", "x" * 256, "caf\u00e9", "k\tSet-Cookie: a=b",
                                 "k\x7f", "k\x00"])
def test_malformed_idempotency_key_is_400(client, auth, key):
    _, headers = auth
    resp = client.post("/api/v1/enrichment", json=LEAD,
                       headers=headers | {"Idempotency-Key": key})
    assert_problem(resp, 400)


def test_idempotency_key_replays_a_refusal_too(client, make_workspace, db, published):
    ws, key = make_workspace(plan="core", region="eu")
    h = headers_for(key, **{"Idempotency-Key": "k1"})
    first = client.post("/api/v1/enrichment", json=LEAD, headers=h)
    assert_problem(first, 403)
    with db.db.connection() as conn:
        conn.execute("UPDATE workspaces SET region = 'us' WHERE id = %s", (ws.id,))
    db.redis.flushdb()  # a fresh rate-limit budget
    again = client.post("/api/v1/enrichment", json=LEAD, headers=h)
    assert_problem(again, 403)
    assert again.headers["Idempotent-Replayed"] == "true"


def test_eu_workspace_gets_403_for_person_level_only(client, make_workspace, published):
    _, key = make_workspace(plan="pro", region="eu")
    person = client.post("/api/v1/enrichment", json=LEAD, headers=headers_for(key))
    assert "EU" in assert_problem(person, 403)["detail"]
    company = client.post("/api/v1/enrichment", json={
        "template": "company_profile", "lead": {"domain": "acme.com"}}, headers=headers_for(key))
    assert company.status_code == 202


def pinned_client(db):
    """(The API on the services stopped at the test's instant, that instant): the counter a
    test fills and the one admission reads are one period's, even across a month end."""
    from api import create_app

    now = db.clock()
    return create_app(services=at(db, now)).test_client(), now


def test_hard_cap_is_402_problem(make_workspace, db, published):
    ws, key = make_workspace(plan="core")
    client, now = pinned_client(db)
    with db.db.connection() as conn:
        conn.execute("INSERT INTO usage_counters VALUES (%s, %s, 375)",
                     (ws.id, period_start(now)))
    problem = assert_problem(client.post("/api/v1/enrichment", json=LEAD,
                                         headers=headers_for(key)), 402)
    assert problem["hard_cap"] == 375 and problem["resets_at"].endswith("T00:00:00Z")


def test_batch_answers_207_with_an_entry_per_lead(make_workspace, db, published):
    ws, key = make_workspace(plan="core")  # cap 375
    client, now = pinned_client(db)
    with db.db.connection() as conn:
        conn.execute("INSERT INTO usage_counters VALUES (%s, %s, 373)",
                     (ws.id, period_start(now)))
    leads = [{"domain": "acme.com"}, {"domain": "acme.com"}, {"domain": "not a domain"},
             {"domain": "globex.com"}, {"domain": "initech.com"}, {"bogus": 1}]
    resp = client.post("/api/v1/enrichment/batch", json={
        "template": "company_profile", "leads": leads, "metadata": {"list": "q4"}},
        headers=headers_for(key))
    assert resp.status_code == 207
    results = resp.get_json()["results"]
    assert [r["index"] for r in results] == list(range(6))
    assert [r["status"] for r in results] == [202, 200, 422, 202, 402, 422]
    assert results[1]["job"]["job_id"] == results[0]["job"]["job_id"] and results[1]["replayed"]
    assert results[0]["job"]["metadata"] == {"list": "q4"}
    assert results[2]["problem"]["errors"][0]["field"] == "lead.domain"
    assert results[4]["problem"]["status"] == 402
    # Both new jobs are queued to the customer; only the first is in the broker, the second
    # waits for the workspace's one slot.
    assert [results[i]["job"]["status"] for i in (0, 3)] == ["queued", "queued"]
    assert published == [results[0]["job"]["job_id"]]
    # One rate-limit token for the whole batch (core: burst 1, so the next request is 429).
    assert client.post("/api/v1/enrichment/batch", json={
        "template": "company_profile", "leads": [{"domain": "x.com"}]},
        headers=headers_for(key)).status_code == 429


def test_a_batch_the_cap_cannot_refuse_is_admitted_without_savepoints(make_workspace, db):
    """A 100-lead batch with room for all: one transaction and no subtransaction per lead
    (PostgreSQL caches 64 per transaction; past that every session's visibility checks slow
    down). Its jobs were all written by the batch's own transaction id."""
    ws, key = make_workspace(plan="core")  # cap 375, nothing used
    client, _ = pinned_client(db)
    resp = client.post("/api/v1/enrichment/batch", json={
        "template": "company_profile",
        "leads": [{"domain": f"room-{i}.example.com"} for i in range(100)]},
        headers=headers_for(key))
    assert [r["status"] for r in resp.get_json()["results"]] == [202] * 100
    with db.db.connection() as conn:
        assert conn.execute("SELECT count(DISTINCT xmin::text) AS n FROM enrichment_jobs"
                            " WHERE workspace_id = %s", (ws.id,)).fetchone()["n"] == 1


@pytest.mark.parametrize("body", [
    {"template": "company_profile", "leads": []},
    {"template": "company_profile", "leads": [{"domain": "a.com"}] * 101},
    {"template": "company_profile", "leads": {"domain": "a.com"}},
    {"template": "company_profile", "leads": -1},
    {"template": "company_profile"},
    {"template": "company_profile", "leads": [{"domain": "a.com"}], "extra": 1},
])
def test_bad_batch_envelopes_are_422(client, auth, body):
    _, headers = auth
    assert_problem(client.post("/api/v1/enrichment/batch", json=body, headers=headers), 422)


def test_counter_period_is_the_utc_month(db, auth, published):
    _, headers = auth
    client, now = pinned_client(db)
    client.post("/api/v1/enrichment", json=LEAD, headers=headers)
    with db.db.connection() as conn:
        row = conn.execute("SELECT period, reserved FROM usage_counters").fetchone()
    assert row["period"] == now.date().replace(day=1) and row["reserved"] == 1
