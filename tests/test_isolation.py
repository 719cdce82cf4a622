"""Tenant isolation: with workspace A's key, workspace B's jobs, subjects and keys are never
visible or changeable. Walks every endpoint of the document that takes an id or identifier."""

from __future__ import annotations

import json

from enrichment import pipeline

LEAD = {"email": "b-secret@globex.com", "name": "Bea Secret", "company": "Globex"}


def test_a_never_sees_or_touches_bs_data(client, make_workspace, db, simulator):
    _, key_a = make_workspace(name="A")
    b, key_b = make_workspace(name="B")
    a_h, b_h = {"Authorization": f"Bearer {key_a}"}, {"Authorization": f"Bearer {key_b}"}
    b_job = client.post("/api/v1/enrichment", headers=b_h | {"Idempotency-Key": "same"},
                        json={"template": "person_basic", "lead": LEAD}).get_json()["job_id"]
    assert pipeline.run_job(db, b_job) == "succeeded"
    client.post("/api/v1/privacy/consents", headers=b_h, json={
        "identifier": LEAD["email"], "purpose": "enrichment", "basis": "consent",
        "granted": True, "source": "form"})
    b_batch = client.post("/api/v1/enrichment/batch", headers=b_h, json={
        "template": "company_profile", "leads": [{"domain": "globex.com"}]}).get_json()[
        "batch_id"]
    b_endpoint = client.post("/api/v1/webhook-endpoints", headers=b_h, json={
        "url": "http://127.0.0.1:9/hook", "events": ["job.succeeded"]}).get_json()["id"]
    ids = {"{job_id}": b_job, "{batch_id}": b_batch, "{endpoint_id}": b_endpoint}

    # The same lead and the same Idempotency-Key in A make A's own job, not B's.
    a_job = client.post("/api/v1/enrichment", headers=a_h | {"Idempotency-Key": "same"},
                        json={"template": "person_basic", "lead": LEAD})
    assert a_job.status_code == 202 and a_job.get_json()["job_id"] != b_job
    usage = client.get("/api/v1/enrichment/usage", headers=a_h).get_json()
    assert usage["used"] == 0 and usage["reserved"] == 1
    assert client.get("/api/v1/workspace", headers=a_h).get_json()["name"] == "A"

    # Every path with a parameter, from the document itself.
    paths = client.get("/openapi.json").get_json()["paths"]
    walked = set()
    for path, ops in paths.items():
        for param, value in ids.items():
            if param in path:
                for method in ops:
                    resp = client.open(path.replace(param, value), method=method.upper(),
                                       headers=a_h,
                                       json={"enabled": True} if method == "patch" else None)
                    assert resp.status_code == 404, (method, path)
                walked.add(path)
        if "{identifier}" in path:
            # A erases its own job of that subject (and suppresses it in A): B's stay.
            assert client.delete(path.replace("{identifier}", LEAD["email"]),
                                 headers=a_h).status_code == 204
            walked.add(path)
        if any(p.get("in") == "query" and p["name"] == "identifier"
               for op in ops.values() for p in op.get("parameters", [])):
            body = client.get(path, query_string={"identifier": LEAD["email"]},
                              headers=a_h).get_json()
            assert body["consents"] == [] and all(j["job_id"] != b_job for j in body["jobs"])
            walked.add(path)
        if path.endswith("/erasures"):  # the identifier in the body
            assert client.post(path, json={"identifier": LEAD["email"]},
                               headers=a_h).status_code == 204
            walked.add(path)
    assert walked == {"/api/v1/enrichment/{job_id}", "/api/v1/privacy/subjects/{identifier}",
                      "/api/v1/privacy/export", "/api/v1/privacy/erasures",
                      "/api/v1/enrichment/batches/{batch_id}",
                      "/api/v1/webhook-endpoints/{endpoint_id}",
                      "/api/v1/webhook-endpoints/{endpoint_id}/deliveries"}
    listed = client.get("/api/v1/enrichment", headers=a_h).get_json()["data"]
    assert b_job not in {j["job_id"] for j in listed}
    assert client.get("/api/v1/enrichment", headers=a_h,
                      query_string={"batch_id": b_batch}).get_json()["data"] == []
    assert client.get("/api/v1/webhook-endpoints", headers=a_h).get_json()["data"] == []

    # B still has everything: its job, result, consent, endpoint, and no suppression.
    assert [e["id"] for e in client.get("/api/v1/webhook-endpoints", headers=b_h).get_json()[
        "data"]] == [b_endpoint]
    job = client.get(f"/api/v1/enrichment/{b_job}", headers=b_h)
    assert job.status_code == 200 and job.get_json()["result"]
    export = client.get("/api/v1/privacy/export", query_string={"identifier": LEAD["email"]},
                        headers=b_h).get_json()
    assert len(export["jobs"]) == 1 and len(export["consents"]) == 1
    assert export["suppression"] is None
    assert client.post("/api/v1/enrichment", headers=b_h, json={
        "template": "person_social", "lead": LEAD}).status_code == 202
    # And nothing of B's leaked into any of A's answers.
    for resp in (client.get("/api/v1/enrichment/usage", headers=a_h),
                 client.get("/api/v1/billing/invoices", headers=a_h)):
        text = json.dumps(resp.get_json())
        assert b_job not in text and "b-secret" not in text and str(b.id) not in text
