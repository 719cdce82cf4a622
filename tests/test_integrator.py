"""The integrator's API on the real stack: job lists with cursors and filters, batches with
progress, the 7-day result cache, charging only for matches, and signed outgoing webhooks
(verified with the `standardwebhooks` package)."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from enrichment import pipeline, webhooks
from enrichment.jobs import intake
from enrichment.templates import TEMPLATES


def h(key):
    return {"Authorization": f"Bearer {key}"}


def admit(db, ws, n, tag="l", template="company_profile", batch_id=None):
    ids = []
    for i in range(n):
        lead = {"domain": f"{tag}{i}.example.com"} if template == "company_profile" else {
            "email": f"{tag}{i}@example.com"}
        with db.db.connection() as conn:
            ids.append(str(intake.admit(
                conn, slots=1, workspace=ws, plan=db.settings.plans[ws.plan],
                template=TEMPLATES[template], lead=lead, metadata={}, now=db.clock(),
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


def test_a_batch_completes_only_once_all_its_leads_are_in(client, make_workspace, db,
                                                        receiver):
    ws, key = make_workspace()
    endpoint(client, key, receiver(fail=100).url, ["batch.completed"])
    with db.db.connection() as conn:  # another submission of this workspace, still admitting
        conn.execute("INSERT INTO batches (id, workspace_id, template, total)"
                     " VALUES (%s, %s, 'company_profile', 2)", (uuid.uuid4(), ws.id))
    done_at_once = client.post("/api/v1/enrichment/batch", headers=h(key), json={
        "template": "company_profile", "leads": [{"domain": "not a domain"}]}).get_json()
    with db.db.connection() as conn:
        completed = conn.execute("SELECT id FROM batches WHERE completed_at IS NOT NULL"
                                 ).fetchall()
        sent = conn.execute("SELECT payload FROM webhook_deliveries").fetchall()
    assert [str(r["id"]) for r in completed] == [done_at_once["batch_id"]]
    assert [m["payload"]["data"]["batch_id"] for m in sent] == [done_at_once["batch_id"]]


def test_a_batch_lists_every_lead_and_erasing_its_last_open_job_completes_it(
        client, make_workspace, db, receiver):
    _, key = make_workspace()
    endpoint(client, key, receiver(fail=100).url, ["batch.completed"])
    single = client.post("/api/v1/enrichment", headers=h(key), json={
        "template": "person_social", "lead": {"email": "a@acme.com"}}).get_json()["job_id"]
    batch = client.post("/api/v1/enrichment/batch", headers=h(key), json={
        "template": "person_social",
        "leads": [{"email": "a@acme.com"}, {"email": "jane@acme.com"}]}).get_json()
    listed = client.get("/api/v1/enrichment", headers=h(key),
                        query_string={"batch_id": batch["batch_id"]}).get_json()["data"]
    assert single in {j["job_id"] for j in listed} and len(listed) == 2  # the repeat too
    assert pipeline.run_job(db, single) == "succeeded"
    client.post("/api/v1/privacy/erasures", headers=h(key), json={"identifier": "jane@acme.com"})
    progress = client.get(f"/api/v1/enrichment/batches/{batch['batch_id']}",
                          headers=h(key)).get_json()
    assert progress["done"] and progress["counts"]["failed"] == 1
    with db.db.connection() as conn:
        sent = conn.execute("SELECT payload FROM webhook_deliveries").fetchall()
    assert [m["payload"]["data"]["batch_id"] for m in sent] == [batch["batch_id"]]


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


def test_a_cached_answer_never_answers_again(client, make_workspace, db):
    """The cache serves what the providers answered, never a copy of a copy: data is as old
    as its original, and max_age_days bounds that."""
    _, key = make_workspace()
    body = {"template": "company_profile", "lead": {"domain": "acme.com"}}
    first = client.post("/api/v1/enrichment", headers=h(key), json=body).get_json()["job_id"]
    assert pipeline.run_job(db, first) == "succeeded"
    backdate(db, first, 6)
    copy = client.post("/api/v1/enrichment", headers=h(key), json=body).get_json()
    assert copy["cached_from"] == first
    backdate(db, first, 2)  # the providers answered 8 days ago: too old
    backdate(db, copy["job_id"], 5)  # though the copy of that answer is 5 days old
    again = client.post("/api/v1/enrichment", headers=h(key), json=body)
    assert again.status_code == 202 and again.get_json()["cached"] is False


def test_max_age_zero_runs_fresh_after_a_cached_answer_today(client, make_workspace, db):
    _, key = make_workspace()
    body = {"template": "company_profile", "lead": {"domain": "acme.com"}}
    first = client.post("/api/v1/enrichment", headers=h(key), json=body).get_json()["job_id"]
    assert pipeline.run_job(db, first) == "succeeded"
    backdate(db, first, 6)
    assert client.post("/api/v1/enrichment", headers=h(key), json=body).get_json()["cached"]
    fresh = client.post("/api/v1/enrichment", headers=h(key), json=body | {"max_age_days": 0})
    assert fresh.status_code == 202 and fresh.get_json()["cached"] is False
    assert pipeline.run_job(db, fresh.get_json()["job_id"]) == "succeeded"
    replay = client.post("/api/v1/enrichment", headers=h(key), json=body)  # today's fresh run
    assert replay.get_json()["job_id"] == fresh.get_json()["job_id"]
    usage = client.get("/api/v1/enrichment/usage", headers=h(key)).get_json()
    assert (usage["used"], usage["matched"], usage["unmatched"]) == (2, 2, 0)  # not the copy


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


def one_delivery(client, key, db, url):
    """A succeeded job of jane@acme.com with its job.succeeded message to `url`."""
    created = endpoint(client, key, url, ["job.succeeded"])
    job_id = client.post("/api/v1/enrichment", headers=h(key), json={
        "template": "person_social", "lead": {"email": "jane@acme.com"}}).get_json()["job_id"]
    assert pipeline.run_job(db, job_id) == "succeeded"
    with db.db.connection() as conn:
        delivery = conn.execute("SELECT id FROM webhook_deliveries").fetchone()["id"]
    return created, job_id, delivery


def attempt(db, delivery_id):
    return webhooks.deliver(db.db, delivery_id, allow_private=True, concurrency=2).outcome


def test_an_objection_drops_undelivered_messages_and_the_purge_old_ones(client, make_workspace,
                                                                        db, receiver):
    from enrichment import privacy

    _, key = make_workspace()
    hook = receiver(fail=100)
    _, _, delivery = one_delivery(client, key, db, hook.url)
    assert attempt(db, delivery) == "retry"
    client.post("/api/v1/privacy/consents", headers=h(key), json={
        "identifier": "jane@acme.com", "purpose": "enrichment",
        "basis": "legitimate_interest", "granted": False, "source": "mail"})
    with db.db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM webhook_deliveries").fetchone()["n"] == 0
    assert attempt(db, delivery) == "not-due" and len(hook.requests) == 1
    other = client.post("/api/v1/enrichment", headers=h(key), json={
        "template": "person_social", "lead": {"email": "bob@acme.com"}}).get_json()["job_id"]
    assert pipeline.run_job(db, other) == "succeeded"
    with db.db.connection() as conn:
        removed = privacy.purge(conn, db.clock() + timedelta(days=91))
        assert removed["webhook_deliveries"] >= 1  # they carry job bodies: raw data
        assert conn.execute("SELECT count(*) AS n FROM webhook_deliveries").fetchone()["n"] == 0


def test_an_attempt_is_bounded_fenced_and_never_loops(client, make_workspace, db, receiver,
                                                      monkeypatch):
    _, key = make_workspace()
    hook = receiver()
    created, _, delivery = one_delivery(client, key, db, hook.url)
    assert attempt(db, delivery) == "delivered"
    assert attempt(db, delivery) == "not-due"  # a duplicate message: dropped, not re-sent
    with db.db.connection() as conn:  # the endpoint busy with two other attempts
        conn.execute("INSERT INTO webhook_deliveries (id, endpoint_id, workspace_id,"
                     " event_type, payload, status, lease_until) SELECT gen_random_uuid(),"
                     " endpoint_id, workspace_id, event_type, payload, 'delivering',"
                     " now() + interval '30 s' FROM webhook_deliveries, generate_series(1, 2)")
        waiting = conn.execute(
            "INSERT INTO webhook_deliveries (id, endpoint_id, workspace_id, event_type,"
            " payload) SELECT gen_random_uuid(), endpoint_id, workspace_id, event_type,"
            " payload FROM webhook_deliveries LIMIT 1 RETURNING id").fetchone()["id"]
    busy = webhooks.deliver(db.db, waiting, allow_private=True, concurrency=2)
    assert busy.outcome == "busy" and busy.retry_in >= webhooks.BUSY_DELAY[0]
    assert attempt(db, waiting) == "not-due"  # it waits; an early message does nothing

    # The endpoint deleted while an attempt is out: the attempt's outcome is dropped.
    def post_then_delete(*_args):
        client.delete(f"/api/v1/webhook-endpoints/{created['id']}", headers=h(key))
        return None, "ConnectTimeoutError"

    monkeypatch.setattr(webhooks, "_post", post_then_delete)
    with db.db.connection() as conn:
        conn.execute("UPDATE webhook_deliveries SET status = 'pending', lease_until = NULL,"
                     " next_attempt_at = now() WHERE id = %s", (waiting,))
        conn.execute("DELETE FROM webhook_deliveries WHERE status = 'delivering'")
    assert attempt(db, waiting) == "lost"


def test_a_receiver_dripping_its_answer_is_cut_at_the_attempt_deadline(monkeypatch):
    import socket

    monkeypatch.setattr(webhooks, "TIMEOUT_SECONDS", 1.0)
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []
    stop = threading.Event()

    def drip():  # headers at once, then a byte of body every 0.3 s for 30 s
        conn, _ = server.accept()
        accepted.append(conn)
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        while not stop.wait(0.3):
            try:
                conn.sendall(b"x")
            except OSError:
                return

    threading.Thread(target=drip, daemon=True).start()
    status, error = webhooks._post(f"http://127.0.0.1:{server.getsockname()[1]}/",
                                   webhooks.new_secret(), "msg_1", b"{}", True)
    stop.set()
    for sock in (*accepted, server):
        sock.close()
    assert (status, error) == (None, "timed out")


def test_endpoint_urls_limits_and_re_enabling(client, make_workspace, db, monkeypatch):
    import socket

    _, key = make_workspace()
    for url in ("https://example.com:99999/x", "https://a.com:abc/x", "https://[::1/x",
                "http://user:s3cret@127.0.0.1:9/x"):
        resp = client.post("/api/v1/webhook-endpoints", headers=h(key),
                           json={"url": url, "events": ["job.succeeded"]})
        assert resp.status_code == 422, url
    # Never names the address a private host resolves to; IPv6 forms embedding one count.
    for address in ("10.0.0.7", "64:ff9b::a00:7", "2002:a00:7::1", "::ffff:10.0.0.7"):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        monkeypatch.setattr(socket, "getaddrinfo", lambda *a, _f=family, _a=address, **k: [
            (_f, socket.SOCK_STREAM, 6, "", (_a, 443))])
        with pytest.raises(webhooks.BadWebhookUrl) as refused:
            webhooks.resolve("https://internal.example.com/x", allow_private=False)
        assert "10.0.0.7" not in str(refused.value) and "a00" not in str(refused.value)
    monkeypatch.undo()
    made = [endpoint(client, key, f"http://127.0.0.1:9/{i}")
            for i in range(webhooks.MAX_ENDPOINTS)]
    over = client.post("/api/v1/webhook-endpoints", headers=h(key),
                       json={"url": "http://127.0.0.1:9/x", "events": ["job.succeeded"]})
    assert over.status_code == 422
    with db.db.connection() as conn:
        conn.execute("UPDATE webhook_endpoints SET disabled_at = now(), failing_since ="
                     " now() - interval '4 days' WHERE id = %s", (made[0]["id"],))
    on = client.patch(f"/api/v1/webhook-endpoints/{made[0]['id']}", headers=h(key),
                      json={"enabled": True})
    assert on.status_code == 200 and on.get_json()["disabled"] is False


def test_a_quiet_day_starts_a_new_run_of_failures(client, make_workspace, db, receiver):
    _, key = make_workspace()
    created, _, delivery = one_delivery(client, key, db, receiver(fail=100).url)
    with db.db.connection() as conn:  # failed once, 4 days ago; quiet since
        conn.execute("UPDATE webhook_endpoints SET failing_since = now() - interval '4 days',"
                     " last_failure_at = now() - interval '4 days' WHERE id = %s",
                     (created["id"],))
    assert attempt(db, delivery) == "retry"  # a new run of failures, not a disabled endpoint
    listed = client.get("/api/v1/webhook-endpoints", headers=h(key)).get_json()["data"]
    assert listed[0]["disabled"] is False
