"""Test mode's providers (`simulators/sandbox.py`): the real clients, served in-process by the
fakes — no socket is opened, no other URL is reachable — and each magic lead behaving as
documented at the provider level, through the real `fill` and `call_json`."""

from __future__ import annotations

import socket
import threading

import pytest
import requests
from flask import Flask, request

from enrichment import confidence
from enrichment.config import Settings
from enrichment.providers import Ask, CallPolicy, ProviderError
from enrichment.providers.http import call_json, new_session
from enrichment.templates import TEMPLATES, Step
from simulators import sandbox

from .helpers import eventually

PERSON_FIELDS = TEMPLATES["person_basic"].fields_for(Step("perplexity", "research"))
COMPANY_FIELDS = TEMPLATES["company_profile"].fields
NETWORKS = ("linkedin", "twitter", "github", "linkedin_url")
STYLES = ("agent", "chat")


def person(domain: str) -> dict:
    return {"email": f"jane@{domain}", "name": "Jane Doe", "company": "Acme"}


# (provider, operation, fields, person-level, the lead for a magic domain)
CALLS = {
    "research_person": ("perplexity", "research", PERSON_FIELDS, True, person),
    "research_company": ("perplexity", "research", COMPANY_FIELDS, False,
                         lambda d: {"domain": d, "company": "Acme"}),
    "social": ("social_links", "search", NETWORKS, True, person),
    "social_no_email": ("social_links", "search", NETWORKS, True,
                        lambda d: {"name": "Jane Doe", "domain": d}),
    "finder": ("hunter", "email_finder", ("work_email", "email_status"), True,
               lambda d: {"name": "Jane Doe", "domain": d}),
    "verifier": ("hunter", "email_verifier", ("email_status",), True, person),
}
# each endpoint once: (Perplexity's API style, call)
ENDPOINTS = [("agent", "research_person"), ("chat", "research_person"), ("agent", "social"),
             ("agent", "finder"), ("agent", "verifier")]


def sandboxed(style: str = "agent") -> dict:
    """The sandbox's clients over fresh fakes, built from settings that name real providers
    and real keys."""
    sandbox.reset()
    return sandbox.build_sandbox(Settings(
        perplexity_api_style=style, perplexity_api_key="pplx-real",
        social_links_api_key="rapid-real", hunter_api_key="hunter-real"))


@pytest.fixture(params=STYLES)
def clients(request):
    """The sandbox's clients, Perplexity in each API style."""
    return sandboxed(request.param)


def fill(clients, call: str, domain: str, policy: CallPolicy | None = None):
    provider, operation, fields, person_level, lead = CALLS[call]
    ask = Ask(operation, lead(domain), fields, {}, policy or CallPolicy(budget_seconds=20),
              person_level, max_tokens=400, max_searches=2)
    return clients[provider].fill(ask)


# --- isolation ---------------------------------------------------------------------------


def test_magic_is_the_leads_email_domain_else_its_domain():
    assert sandbox.magic({"email": "Jane@Match.Test", "domain": "error.test"}) == "match.test"
    assert sandbox.magic({"email": "jane@acme.com", "domain": "slow.test"}) == "slow.test"
    assert sandbox.magic({"domain": "https://www.nomatch.test/about"}) == "nomatch.test"
    for lead in ({"email": "jane@acme.com"}, {"domain": "sub.match.test"}, {"name": "X"},
                 {"email": "jane@nomatch.test.example.com"}):
        assert sandbox.magic(lead) is None
    assert set(sandbox.MAGIC_DOMAINS) == {"match.test", "nomatch.test", "lowconfidence.test",
                                          "ratelimited.test", "error.test", "slow.test"}


def test_clients_ignore_the_configured_providers(clients):
    for name, client in clients.items():
        assert client.base == f"http://sandbox.invalid/{name}" and client.configured
    assert clients["perplexity"].session.headers["Authorization"] == "Bearer sandbox"
    assert clients["hunter"].session.headers["X-API-KEY"] == "sandbox"
    assert clients["social_links"].session.headers["x-rapidapi-key"] == "sandbox"


def test_every_client_is_served_in_process_without_a_socket(clients, monkeypatch):
    opened = []

    def refuse(*args, **kwargs):
        opened.append(args)
        raise AssertionError("a sandbox client opened a socket")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for domain in ("match.test", "nomatch.test", "lowconfidence.test"):
        for call in CALLS:
            fill(clients, call, domain)
    fill(clients, "research_person", "acme.com")  # an ordinary lead: generated answers
    assert opened == []


@pytest.mark.parametrize("url", ["https://api.perplexity.ai/chat/completions",
                                 "https://api.hunter.io/v2/account",
                                 "http://127.0.0.1:1/", "http://sandbox.invalid/stripe/v1"])
def test_a_sandbox_client_reaches_no_other_url(clients, url):
    for client in clients.values():
        with pytest.raises(requests.ConnectionError, match="sandbox: no outside calls"):
            client.session.get(url, timeout=1)
    policy = CallPolicy(max_attempts=1)
    with pytest.raises(ProviderError) as raised:  # never sent: retryable, not uncertain
        call_json(clients["perplexity"].session, "perplexity", "POST", url, policy, json={})
    assert raised.value.retryable and not raised.value.uncertain and policy.sent == 0


def test_a_session_closed_when_idle_still_reaches_its_fake(clients):
    for client in clients.values():
        client.session.close()
    assert fill(clients, "finder", "match.test").found


def test_social_links_is_asked_with_the_magic_domain(clients):
    stats = sandbox.fakes()["social_links"].extensions["sim"][1]
    fill(clients, "social", "match.test")
    assert "match.test" in stats.snapshot()["received"]["social_links"][-1]


# --- the adapter ---------------------------------------------------------------------------


def test_the_adapter_passes_status_headers_body_and_path_through():
    app = Flask(__name__)

    @app.post("/v1/<path:rest>")
    def echo(rest):
        return ({"rest": rest, "query": request.args.get("q"), "body": request.get_json()},
                429, {"Retry-After": "7"})

    session = new_session("http://fake.invalid/p")
    sandbox.seal(session, "http://fake.invalid/p", app)
    resp = session.post("http://fake.invalid/p/v1/a%20b?q=x+y", json={"k": 1}, timeout=(1, 5))
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    assert resp.json() == {"rest": "a b", "query": "x y", "body": {"k": 1}}
    with pytest.raises(ProviderError) as raised:
        call_json(session, "fake", "POST", "http://fake.invalid/p/v1/x",
                  CallPolicy(max_attempts=1), json={})
    assert raised.value.status == 429 and raised.value.retry_after == 7


# --- magic leads ----------------------------------------------------------------------------


@pytest.mark.parametrize("call", list(CALLS))
def test_match_finds_every_field_surely(clients, call):
    answer = fill(clients, call, "match.test")
    assert set(answer.found) == set(CALLS[call][2])
    for candidate in answer.found.values():
        assert confidence.of(candidate).confidence >= 0.9, candidate
    if CALLS[call][0] == "perplexity":  # ≥ 3 distinct sites, each among the results read
        for candidate in answer.found.values():
            assert confidence.sites(candidate.sources) >= 3
            assert set(candidate.sources) <= set(answer.citations)
    if CALLS[call][0] == "social_links":  # one profile per network asked
        assert all(c.alternatives == 0 for c in answer.found.values())


def test_every_provider_finds_the_same_address_for_a_match(clients):
    found = fill(clients, "finder", "match.test").found["work_email"].value
    lead = {"name": "Jane Doe", "domain": "match.test"}
    researched = clients["perplexity"].fill(Ask("research", lead, ("work_email",), {},
                                                CallPolicy(budget_seconds=20)))
    assert researched.found["work_email"].value == found == "jane.doe@match.test"


@pytest.mark.parametrize("call", list(CALLS))
def test_nomatch_finds_nothing(clients, call):
    answer = fill(clients, call, "nomatch.test")
    assert answer.found == {} and answer.citations == []


@pytest.mark.parametrize("call", list(CALLS))
def test_lowconfidence_finds_every_field_unsurely(clients, call):
    answer = fill(clients, call, "lowconfidence.test")
    unverified = {"email_status"} if call == "finder" else set()  # the Finder did not verify
    assert set(answer.found) == set(CALLS[call][2]) - unverified
    for candidate in answer.found.values():
        assert confidence.of(candidate).confidence < 0.5, candidate
    if CALLS[call][0] == "social_links":  # three profiles per network asked
        assert all(c.alternatives == 2 for c in answer.found.values())


@pytest.mark.parametrize(("style", "call"), ENDPOINTS)
def test_ratelimited_is_refused_twice_then_matches_within_one_round(style, call):
    clients = sandboxed(style)
    outcomes = []
    policy = CallPolicy(max_attempts=5, budget_seconds=20, max_retry_after=0.1,
                        record=lambda provider, outcome: outcomes.append(outcome))
    answer = fill(clients, call, "ratelimited.test", policy)
    assert outcomes == ["429", "429", "ok"]  # 403 for Hunter: its rate-limit status
    assert answer.found and all(confidence.of(c).confidence >= 0.9
                                for c in answer.found.values())
    assert [r.status_code for r in _raw(clients, call, "ratelimited.test")[:2]] == \
        [429 if CALLS[call][0] != "hunter" else 403] * 2


def _raw(clients, call: str, domain: str) -> list:
    """Three direct requests about the lead at the call's endpoint (fresh cycle)."""
    provider = CALLS[call][0]
    session, base = clients[provider].session, clients[provider].base
    responses = []
    for _ in range(3):
        if call == "social":
            resp = session.get(f"{base}/search-social-links", timeout=5,
                               params={"query": f"jane@{domain}", "social_networks": "x"})
        elif call == "finder":
            resp = session.get(f"{base}/v2/email-finder", timeout=5,
                               params={"domain": domain, "full_name": "Raw Request"})
        elif call == "verifier":
            resp = session.get(f"{base}/v2/email-verifier", timeout=5,
                               params={"email": f"raw@{domain}"})
        else:
            resp = session.post(f"{base}/chat/completions", timeout=5, json={
                "messages": [{"role": "user", "content": f"- domain: {domain}\n- x: raw"}]})
        if resp.status_code in (403, 429):
            assert resp.headers["Retry-After"] == "1"
        responses.append(resp)
    return responses


@pytest.mark.parametrize(("style", "call"), ENDPOINTS)
def test_error_is_a_retryable_500(style, call):
    clients = sandboxed(style)
    with pytest.raises(ProviderError) as raised:
        fill(clients, call, "error.test", CallPolicy(max_attempts=2, budget_seconds=20))
    assert raised.value.status == 500 and raised.value.retryable


@pytest.mark.parametrize(("style", "call"), ENDPOINTS)
def test_slow_times_out_within_the_rounds_budget(style, call):
    clients = sandboxed(style)
    with pytest.raises(ProviderError) as raised:
        fill(clients, call, "slow.test", CallPolicy(budget_seconds=2))
    # a POST that went out unanswered is uncertain (never re-sent); a GET is retried
    assert raised.value.uncertain or raised.value.retryable
    # the fake was told the caller gave up: it stops waiting rather than sleep on
    eventually(lambda: not any(t.name == "sandbox-wsgi" for t in threading.enumerate()), 5)


@pytest.mark.parametrize(("style", "call"), ENDPOINTS)
def test_slow_answers_as_a_match_when_waited_for(style, call, monkeypatch):
    clients = sandboxed(style)
    for app in sandbox.fakes().values():  # (restored after: the fakes live for the process)
        monkeypatch.setattr(app.extensions["magic"], "slow_seconds", 0.3)
    answer = fill(clients, call, "slow.test")
    assert answer.found and all(confidence.of(c).confidence >= 0.9
                                for c in answer.found.values())
