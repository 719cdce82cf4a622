"""The OpenAPI document covers every route, and schemathesis fuzzes every operation from it
(in-process WSGI): no 5xx, every error problem+json, every answer as documented."""

from __future__ import annotations

import re
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
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        assert path in paths, rule.rule
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in paths[path], (rule.rule, method)


def test_docs_page_renders_without_external_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "/api/v1/enrichment/batch" in text and "Problem" in text
    assert "http://" not in text and "https://" not in text.replace("https://lead", "")


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
