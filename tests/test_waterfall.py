"""Provenance, confidence and the waterfall: the confidence rule on its own, the templates'
validation, and the waterfall on real PostgreSQL and Redis against the HTTP fakes of
Perplexity, Social Links and Hunter."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import pytest

from enrichment import confidence, pipeline, waterfall
from enrichment.jobs import read, service
from enrichment.providers import Candidate
from enrichment.providers.hunter import HunterClient
from enrichment.templates import TEMPLATES, _template
from simulators.hunter import SimpleAnswers

CONTACT = TEMPLATES["person_contact"]


# --- the confidence rule -------------------------------------------------------------------

def test_a_value_without_a_source_is_below_the_default_threshold():
    assert confidence.of(Candidate("CTO", "perplexity")).confidence == 0.3
    assert confidence.of(Candidate("a@acme.com", "hunter", score=0.97)).confidence == 0.45
    assert confidence.of(Candidate("a@acme.com", "hunter", score=0.97,
                                   verification="valid")).confidence == 0.45
    status = Candidate("invalid", "hunter", checked="a@acme.com")  # the check is its source
    assert confidence.of(status).confidence == 0.9


def test_independent_sites_not_pages_raise_confidence():
    one_site = ["https://acme.com/team", "https://www.acme.com/about", "https://news.acme.com/x"]
    assert confidence.of(Candidate("CTO", "perplexity", one_site)).confidence == 0.6
    two = ["https://acme.com/team", "https://www.crunchbase.com/person/x"]
    assert confidence.of(Candidate("CTO", "perplexity", two)).confidence == 0.8
    uk = ["https://www.acme.co.uk/a", "https://shop.acme.co.uk/b", "https://bbc.co.uk/c"]
    assert confidence.sites(uk) == 2


def test_verification_and_ambiguity_and_agreement():
    sources = ["https://acme.com/team"]
    guess = Candidate("jane@acme.com", "perplexity", sources)  # 0.6 from one site
    assert confidence.of(replace(guess, verification="valid")).confidence == 0.9
    assert confidence.of(replace(guess, verification="invalid")).confidence == 0.05
    assert confidence.of(replace(guess, verification="accept_all")).confidence == 0.6
    assert confidence.of(replace(guess, verification="webmail")).confidence == 0.4
    profile = Candidate("https://www.linkedin.com/in/jd", "social_links",
                        ["https://www.linkedin.com/in/jd"], record=True, alternatives=1)
    assert confidence.of(profile).confidence == 0.45
    a = confidence.of(Candidate("VP Sales", "social_links", sources))
    b = confidence.of(Candidate("vp sales ", "perplexity", ["https://crunchbase.com/p/x"]))
    agreed = confidence.merge(a, b)
    assert agreed.confidence == 0.84 and len(agreed.sources) == 2  # 1 - 0.4 * 0.4
    sure = confidence.Value("x", "hunter", 0.99, sources)
    assert confidence.merge(sure, replace(sure, provider="perplexity")).confidence == 0.99
    other = confidence.of(Candidate("CEO", "perplexity", []))
    assert confidence.merge(a, other) is a  # disagreement: the surer value stays


def test_a_verifier_cap_holds_whoever_else_names_the_address():
    invalid = confidence.of(Candidate("jane@acme.com", "hunter", ["https://acme.com/t"],
                                      score=0.9, verification="invalid"))
    named = confidence.of(Candidate("jane@acme.com", "perplexity",
                                    ["https://acme.com/t", "https://crunchbase.com/p/j"]))
    assert confidence.merge(invalid, named).confidence == 0.05
    assert confidence.merge(named, invalid).confidence == 0.05


def test_a_status_is_answered_only_with_the_address_it_checked():
    address = confidence.Value("j@a.com", "hunter", 0.6, ["https://a.com"], "accept_all")
    status = confidence.of(Candidate("accept_all", "hunter", ["https://a.com"],
                                     checks="work_email", checked="j@a.com"))
    values = {"work_email": address, "email_status": status}
    names = ("work_email", "email_status")
    fields, provenance, _, _ = confidence.gate(values, names, 0.5)
    assert fields == {"work_email": "j@a.com", "email_status": "accept_all"}
    assert provenance["email_status"]["of"] == "work_email"
    for threshold in (0.65, 0.75):  # a stored answer re-gated answers as a fresh run would
        fresh = confidence.gate(values, names, threshold)
        assert confidence.narrow(fields, provenance, threshold) == fresh
        assert fresh[0] == {"work_email": None, "email_status": None} and not fresh[3]
    other = replace(status, checked="x@a.com")  # the status of another address
    assert confidence.gate({**values, "email_status": other}, names, 0.5)[0][
        "email_status"] is None


def test_gate_counts_only_values_at_or_above_the_threshold():
    values = {"title": confidence.Value("CTO", "perplexity", 0.8, ["https://a.com"]),
              "work_email": confidence.Value("j@a.com", "perplexity", 0.3, [])}
    fields, provenance, completeness, match = confidence.gate(
        values, ("title", "work_email", "linkedin_url"), 0.5)
    assert fields == {"title": "CTO", "work_email": None, "linkedin_url": None}
    assert set(provenance) == {"title"} and completeness == 0.333 and match
    assert confidence.gate(values, ("work_email",), 0.5)[3] is False


# --- templates are validated at start-up ----------------------------------------------------

@pytest.mark.parametrize(("fields", "message"), [
    ({"twitter": ["perplexity.research", "social_links.search"],
      "linkedin": ["social_links.search", "perplexity.research"]}, "contradictory"),
    ({"work_email": ["hunter.email_guesser"]}, "unknown step"),
    ({"title": ["hunter.email_finder"]}, "cannot fill"),
    ({"title": ["nobody.research"]}, "unknown step"),
    ({"title": []}, "no provider"),
    ({"work_email": ["hunter.email_finder"]}, "person-level"),  # (on a company template)
])
def test_a_waterfall_no_sequence_of_calls_can_follow_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        level = "company" if message == "person-level" else "person"
        _template("broken", {"level": level, "fields": fields})


@pytest.mark.parametrize(("raw", "message"), [
    ({"require_any": ["email"]}, "unknown keys"),
    ({"requires_any": ["emial"]}, "names no lead field"),
    ({"searches": -1}, "whole number"),
])
def test_a_template_with_a_typo_is_refused(raw, message):
    with pytest.raises(ValueError, match=message):
        _template("broken", {"level": "person", "fields": {"title": ["perplexity.research"]},
                             **raw})


def test_person_contact_runs_finder_then_social_then_perplexity_then_verifier():
    assert [str(s) for s in CONTACT.steps] == [
        "hunter.email_finder", "social_links.search", "perplexity.research",
        "hunter.email_verifier"]


# --- the waterfall against the fakes -------------------------------------------------------

def person(verified: bool) -> dict:
    """A lead the Hunter fake finds an address for, verified by the Finder or not."""
    answers = SimpleAnswers()
    for i in range(200):
        found = answers.find("Jane", f"Doe{i}", None, "acme.com")
        if found and (found["verification"]["status"] == "valid") == verified \
                and found["score"] <= 95:  # (nothing this person is given reaches 0.99)
            return {"name": f"Jane Doe{i}", "domain": "acme.com", "company": "Acme"}
    raise AssertionError("the fake has no such person")


def asked_of_perplexity(simulator) -> list[set[str]]:
    bodies = simulator.stats.snapshot()["received"]["perplexity"]
    return [set(json.loads(b)["response_format"]["json_schema"]["schema"]["properties"])
            for b in bodies]


def run(svc, lead, min_confidence=0.5, template=CONTACT):
    return waterfall.enrich(svc, template, lead, min_confidence, svc.call_policy(),
                            max_searches=2)


def test_a_field_filled_by_the_finder_is_never_asked_again(db, simulator, hunter):
    found = run(db, person(verified=True))
    email = found.provenance["work_email"]
    assert email["provider"] == "hunter" and email["verification"] == "valid"
    assert email["confidence"] >= 0.9 and email["sources"]
    assert found.fields["email_status"] == "valid"
    for asked in asked_of_perplexity(simulator):
        assert "work_email" not in asked and "email_status" not in asked
    counts = hunter.stats.snapshot()["counts"]
    assert counts.get("verifier.ok", 0) == 0  # the Finder verified it: no second check
    steps = [(t["provider"], t["operation"]) for t in found.trace]
    assert ("hunter", "email_verifier") not in steps
    assert found.trace[0]["filled"] == ["work_email", "email_status"]
    for entry in found.trace:
        assert Decimal(entry["cost_usd"]) >= 0 and entry["http_status"] == 200
    for p in found.provenance.values():
        assert set(p["sources"]) <= set(found.citations)


def test_an_address_the_finder_did_not_verify_goes_to_the_verifier(db, simulator, hunter):
    found = run(db, person(verified=False))
    assert found.trace[-1]["operation"] == "email_verifier"
    assert found.trace[-1]["fields"] == ["email_status"]
    status = found.provenance["email_status"]
    assert status["provider"] == "hunter" and "verification" not in status
    assert found.provenance["work_email"]["verification"] == found.fields["email_status"]


def test_a_provider_without_a_key_is_skipped(db, simulator, hunter):
    providers = {**db.providers, "hunter": HunterClient(hunter.url, None)}
    found = run(replace(db, providers=providers), person(verified=True))
    skipped = [t for t in found.trace if t["provider"] == "hunter"]
    assert skipped and all(t["status"] == "skipped" and t["http_status"] is None
                           for t in skipped)
    assert hunter.stats.snapshot()["counts"] == {}
    assert any("work_email" in asked for asked in asked_of_perplexity(simulator))


def test_a_used_up_hunter_quota_is_skipped_until_it_resets_never_looped(db, simulator, hunter):
    hunter.config.credits = 0
    first = run(db, person(verified=True))
    (finder,) = [t for t in first.trace if t["operation"] == "email_finder"]
    assert finder["status"] == "error" and finder["http_status"] == 429
    counts = hunter.stats.snapshot()["counts"]
    assert counts["finder.received"] == 1
    assert db.provider_limiter.suspended("hunter")
    second = run(db, person(verified=False))
    assert all(t["status"] == "skipped" for t in second.trace if t["provider"] == "hunter")
    assert hunter.stats.snapshot()["counts"] == counts  # not one more request


# --- min_confidence gates values and charges (the pipeline, no worker) ----------------------

def submit(db, ws, lead, min_confidence, template="person_contact"):
    admitted = service.submit(db, ws, template, lead, {}, 7, min_confidence=min_confidence)
    return str(admitted.job["id"])


def body(db, ws, job_id):
    with db.db.connection() as conn:
        return read.job_body(read.get_job(conn, ws.id, job_id))


def test_min_confidence_gates_values_and_charges(db, make_workspace, simulator, hunter):
    ws, _ = make_workspace()
    lead = person(verified=True)
    strict = submit(db, ws, lead, 0.99)
    assert pipeline.run_job(db, strict) == "succeeded"
    job = body(db, ws, strict)
    assert job["min_confidence"] == 0.99 and job["match"] is False
    assert set(job["result"]["fields"].values()) == {None} and job["result"]["provenance"] == {}
    assert job["result"]["completeness"] == 0 and job["usage"]["units"] == 0
    assert job["result"]["trace"]  # the providers were asked and paid: the trace says so
    assert Decimal(job["usage"]["cost_estimate_usd"]) > 0

    ws2, _ = make_workspace(name="Other")
    normal = submit(db, ws2, lead, 0.5)
    assert pipeline.run_job(db, normal) == "succeeded"
    job = body(db, ws2, normal)
    assert job["match"] is True and job["usage"]["units"] == 1
    kept = {k for k, v in job["result"]["fields"].items() if v is not None}
    assert kept == set(job["result"]["provenance"])
    assert all(p["confidence"] >= 0.5 for p in job["result"]["provenance"].values())
    assert job["result"]["completeness"] == round(len(kept) / len(CONTACT.fields), 3)


def test_a_cached_answer_is_gated_at_the_later_request(db, make_workspace, simulator, hunter):
    ws, _ = make_workspace()
    lead = person(verified=True)
    first = submit(db, ws, lead, 0.5)
    assert pipeline.run_job(db, first) == "succeeded"
    with db.db.connection() as conn:  # it ran yesterday: today's request may use it
        conn.execute("UPDATE enrichment_jobs SET created_at = created_at - interval '1 day',"
                     " completed_at = completed_at - interval '1 day', idempotency_key = NULL"
                     " WHERE id = %s", (first,))
    original = body(db, ws, first)["result"]
    strict = body(db, ws, submit(db, ws, lead, 0.85))
    assert strict["cached"] and strict["cached_from"] == first
    kept = {k for k, p in original["provenance"].items() if p["confidence"] >= 0.85}
    assert set(strict["result"]["provenance"]) == kept
    assert {k for k, v in strict["result"]["fields"].items() if v} == kept
    assert strict["result"]["trace"] == original["trace"]
    assert strict["match"] is bool(kept) and strict["usage"]["units"] == 0
    with db.db.connection() as conn:  # (else today's cached job answers: the same-day rule)
        conn.execute("UPDATE enrichment_jobs SET idempotency_key = NULL WHERE id = %s",
                     (strict["job_id"],))
    looser = body(db, ws, submit(db, ws, lead, 0.2))  # the stored answer lacks what 0.2 shows
    assert not looser["cached"] and looser["status"] == "queued"


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, "0.5", None, True])
def test_min_confidence_must_be_a_number_from_0_to_1(client, auth, value):
    _, headers = auth
    resp = client.post("/api/v1/enrichment", headers=headers, json={
        "template": "person_contact", "lead": {"name": "Jane Doe", "domain": "acme.com"},
        "min_confidence": value})
    assert resp.status_code == 422 and "min_confidence" in json.dumps(resp.get_json())


def test_person_contact_needs_a_name_with_a_domain_or_an_email(client, auth):
    _, headers = auth
    resp = client.post("/api/v1/enrichment", headers=headers, json={
        "template": "person_contact", "lead": {"name": "Jane Doe", "company": "Acme"}})
    assert resp.status_code == 422
    resp = client.post("/api/v1/enrichment", headers=headers, json={
        "template": "person_contact", "lead": {"email": "jane@acme.com"}})
    assert resp.status_code == 202


def test_a_lead_with_only_an_email_has_that_address_verified(db, simulator, hunter):
    simulator.config.null_rate = 1.0  # Perplexity finds no other address
    found = run(db, {"email": "jane.doe@acme.com"})
    finder = found.trace[0]
    assert (finder["operation"], finder["status"], finder["http_status"]) == (
        "email_finder", "skipped", None)  # no name: nothing to ask, no request
    assert hunter.stats.snapshot()["counts"].get("finder.received", 0) == 0
    verifier = found.trace[-1]
    assert verifier["operation"] == "email_verifier" and verifier["http_status"] == 200
    received = hunter.stats.snapshot()["received"]["verifier"]
    assert len(received) == 1 and "jane.doe%40acme.com" in received[0]
    assert found.fields["work_email"] is None
    status = found.provenance["email_status"]  # the lead's own address: answered alone
    assert status["provider"] == "hunter" and found.fields["email_status"] in (
        "valid", "invalid", "accept_all", "webmail", "disposable")
