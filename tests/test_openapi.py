"""The OpenAPI document covers every route, and schemathesis fuzzes every operation from it
(in-process WSGI): no 5xx, every error problem+json, every answer as documented."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks

from enrichment.config import load_plans

FUZZ_PLANS = Path(__file__).resolve().parent.parent / "bench" / "plans.toml"


def test_every_route_is_in_the_document(app):
    paths = app.test_client().get("/openapi.json").get_json()["paths"]
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("console."):
            continue  # the console's pages are HTML, not the API (docs/console.md)
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        assert path in paths, rule.rule
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in paths[path], (rule.rule, method)


def test_the_document_is_valid_openapi_with_ids_tags_enums_and_headers(client):
    from openapi_spec_validator import validate

    document = client.get("/openapi.json").get_json()
    validate(document)
    ops = [op for path in document["paths"].values() for op in path.values()]
    ids = [op["operationId"] for op in ops]
    assert len(ids) == len(set(ids)) and all(op["tags"] for op in ops)
    schemas = document["components"]["schemas"]
    assert schemas["Job"]["properties"]["status"]["enum"] == [
        "queued", "processing", "succeeded", "failed", "dead"]
    assert set(schemas["Usage"]["properties"]["plan"]["enum"]) >= {"core", "pro", "elite"}
    submit = document["paths"]["/api/v1/enrichment"]["post"]
    assert {p["name"] for p in submit["parameters"]} == {"X-Request-Id", "Idempotency-Key"}
    assert submit["requestBody"]["content"]["application/json"]["example"]["lead"]
    assert {"Location", "X-Request-Id", "X-RateLimit-Remaining"} <= set(
        submit["responses"]["202"]["headers"])
    assert "Retry-After" in submit["responses"]["429"]["headers"]


def test_swagger_ui_is_served_from_the_package_not_a_cdn(client):
    page = client.get("/docs/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "/docs/swagger-ui-bundle.js" in text and "/openapi.json" in text
    # The only absolute URL is this server's own (Swagger UI's OAuth redirect page).
    assert {url.split("/")[2] for url in re.findall(r"https?://[^\s\"']+", text)} <= {
        "localhost"}
    assert '"validatorUrl": null' in text  # no call to the public validator either
    bundle = client.get("/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.get_data()) > 100_000


@pytest.fixture
def fuzz_app(db, monkeypatch):
    """The app with limits the fuzzer will not hit, and no publishing."""
    from api import create_app
    from enrichment.authguard import AuthGuard
    from enrichment.workspaces import create_workspace

    monkeypatch.setattr(db.publisher, "publish", lambda *a: None)
    # Generated bad keys are answered 401, not throttled (the throttle has its own tests).
    svc = replace(db, settings=replace(db.settings, plans=load_plans(FUZZ_PLANS),
                                       stripe_webhook_secret="whsec_fuzz"),
                  auth_guard=AuthGuard(db.redis, per_address=10**9, per_prefix=10**9))
    with svc.db.connection() as conn:
        _, key = create_workspace(conn, svc.settings.plans, "Fuzz", "bench")
    app = create_app(services=svc)
    app.config["FUZZ_KEY"] = key
    return app


def test_fuzz_every_operation(fuzz_app):
    """Each operation gets up to 85 generated cases (over 1,000 in all), with a valid key."""
    from hypothesis import given

    api = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)
    headers = {"Authorization": f"Bearer {fuzz_app.config['FUZZ_KEY']}"}
    cases = {}
    for result in api.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=85, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def run(case):
            cases[case.operation.label] = cases.get(case.operation.label, 0) + 1
            # Not "schema-valid ⇒ accepted": some rules are not expressible in the document
            # (a lead needs one identifier; the template's requirements; region;
            # suppression) and rightly answer 422/403. Every other check runs.
            response = case.call_and_validate(
                headers=headers, excluded_checks=[checks.positive_data_acceptance])
            assert response.status_code < 500
            if response.status_code >= 400 and case.path != "/readyz":
                content_type = response.headers.get("content-type", [""])[0]
                assert content_type.startswith("application/problem+json"), (
                    case.method, case.path, response.status_code)

        run()
    documented = {f"{m.upper()} {p}" for p, ops in api.raw_schema["paths"].items() for m in ops}
    documented.discard("GET /openapi.json")  # schemathesis does not fuzz its own source
    print("fuzzed cases per operation:", cases)
    assert set(cases) == documented and sum(cases.values()) >= 1000, sorted(
        documented - set(cases))


def test_a_full_flow_answers_as_documented(client, make_workspace, db):
    """Submit, run, read, list, batch, usage, webhooks, privacy: every answer validates
    against the response schema the document gives for its operation and status."""
    from openapi_schema_validator import OAS30Validator, validate

    from enrichment import pipeline

    document = client.get("/openapi.json").get_json()

    def check(method: str, template: str, resp):
        documented = document["paths"][template][method]["responses"][str(resp.status_code)]
        media = documented.get("content", {})
        if not media:
            return
        schema = next(iter(media.values()))["schema"]
        # The document's components beside the schema: its "#/components/…" refs resolve.
        validate(resp.get_json(), {"allOf": [schema], "components": document["components"]},
                 cls=OAS30Validator)
        for header in documented.get("headers", {}):
            if not header.startswith(("RateLimit", "X-RateLimit", "Idempotent")):
                assert header in resp.headers, (template, header)

    _, key = make_workspace()
    auth = {"Authorization": f"Bearer {key}"}
    submitted = client.post("/api/v1/enrichment", headers=auth, json={
        "template": "person_basic", "lead": {"email": "jane@acme.com", "name": "Jane Doe",
                                            "company": "Acme"}})
    check("post", "/api/v1/enrichment", submitted)
    job_id = submitted.get_json()["job_id"]
    assert pipeline.run_job(db, job_id) == "succeeded"
    batch = client.post("/api/v1/enrichment/batch", headers=auth, json={
        "template": "company_profile", "leads": [{"domain": "acme.com"}, {"domain": "x y"}]})
    check("post", "/api/v1/enrichment/batch", batch)
    endpoint = client.post("/api/v1/webhook-endpoints", headers=auth, json={
        "url": "http://127.0.0.1:9/hook", "events": ["job.succeeded"]})
    check("post", "/api/v1/webhook-endpoints", endpoint)
    endpoint_id = endpoint.get_json()["id"]
    for method, template, path, body in [
            ("get", "/api/v1/enrichment/{job_id}", f"/api/v1/enrichment/{job_id}", None),
            ("get", "/api/v1/enrichment", "/api/v1/enrichment", None),
            ("get", "/api/v1/enrichment/batches/{batch_id}",
             f"/api/v1/enrichment/batches/{batch.get_json()['batch_id']}", None),
            ("get", "/api/v1/enrichment/usage", "/api/v1/enrichment/usage", None),
            ("get", "/api/v1/templates", "/api/v1/templates", None),
            ("get", "/api/v1/webhook-endpoints", "/api/v1/webhook-endpoints", None),
            ("patch", "/api/v1/webhook-endpoints/{endpoint_id}",
             f"/api/v1/webhook-endpoints/{endpoint_id}", {"enabled": False}),
            ("get", "/api/v1/webhook-endpoints/{endpoint_id}/deliveries",
             f"/api/v1/webhook-endpoints/{endpoint_id}/deliveries", None),
            ("get", "/api/v1/privacy/export", "/api/v1/privacy/export?identifier=jane@acme.com",
             None),
            ("post", "/api/v1/privacy/consents", "/api/v1/privacy/consents",
             {"identifier": "jane@acme.com", "purpose": "enrichment", "basis": "consent",
              "granted": True, "source": "form"}),
            ("get", "/api/v1/workspace", "/api/v1/workspace", None),
            ("get", "/api/v1/billing/invoices", "/api/v1/billing/invoices", None),
            ("get", "/api/v1/enrichment/{job_id}", f"/api/v1/enrichment/{uuid.uuid4()}", None),
            ("get", "/readyz", "/readyz", None), ("get", "/healthz", "/healthz", None)]:
        check(method, template, client.open(path, method=method.upper(), headers=auth,
                                            json=body))
