"""Provider clients against the simulator over real HTTP: wire formats, retries, final errors."""

from __future__ import annotations

from decimal import Decimal

import pytest

from enrichment.providers import CallPolicy, ProviderError
from enrichment.providers.http import parse_retry_after
from enrichment.providers.perplexity import PerplexityClient, parse_fields
from enrichment.providers.social_links import SocialLinksClient
from enrichment.templates import TEMPLATES

LEAD = {"email": "jane@acme.com", "name": "Jane Doe", "company": "Acme"}
FAST = CallPolicy(max_attempts=4, budget_seconds=20, read_timeout=5)


@pytest.mark.parametrize("style", ["agent", "chat"])
def test_perplexity_styles_parse_fields_citations_and_usage(simulator, style):
    client = PerplexityClient(simulator.url, "k", style)
    result = client.research(LEAD, TEMPLATES["person_basic"], max_tokens=1500, max_searches=2,
                             policy=FAST)
    assert set(result.fields) == set(TEMPLATES["person_basic"].research_fields)
    assert result.fields["company"] == "Acme"
    assert result.citations and all(u.startswith("https://") for u in result.citations)
    assert result.tokens > 0 and result.searches >= 1
    assert isinstance(result.cost_usd, Decimal) and result.cost_usd > 0
    assert simulator.stats.snapshot()["last_key"]["perplexity"] == "Bearer k"


def test_agent_searches_are_bounded_by_max_searches(simulator):
    client = PerplexityClient(simulator.url, "k", "agent")
    for email in ("a@x.com", "b@y.com", "c@z.com", "d@w.com"):
        result = client.research({"email": email}, TEMPLATES["company_profile"],
                                 max_tokens=100, max_searches=1, policy=FAST)
        assert result.searches == 1


def test_social_links_sends_rapidapi_headers_and_parses_links(simulator):
    client = SocialLinksClient(simulator.url, "rk")
    result = client.lookup(LEAD, ("linkedin", "twitter", "myspace"), policy=FAST)
    assert set(result.links) == {"linkedin", "twitter"}
    assert result.requests == 1
    assert simulator.stats.snapshot()["last_key"]["social_links"] == "rk"


def test_429_is_retried_after_retry_after_then_succeeds(simulator):
    simulator.config.perplexity_rps = 1
    retries = []
    policy = CallPolicy(max_attempts=5, budget_seconds=20,
                        on_retry=lambda p, e: retries.append(e.status))
    client = PerplexityClient(simulator.url, "k", "chat")
    for _ in range(2):  # the second call within one second hits the simulator's limit
        client.research(LEAD, TEMPLATES["person_basic"], max_tokens=100, max_searches=1,
                        policy=policy)
    assert retries and set(retries) == {429}
    counts = simulator.stats.snapshot()["counts"]
    assert counts["perplexity.ok"] == 2 and counts["perplexity.429"] == len(retries)


def test_5xx_storm_backs_off_then_gives_up_retryable(simulator):
    simulator.config.outage_status = 503
    client = SocialLinksClient(simulator.url, "k")
    with pytest.raises(ProviderError) as info:
        client.lookup(LEAD, ("linkedin",), policy=CallPolicy(max_attempts=3, budget_seconds=20))
    assert info.value.retryable and info.value.status == 503
    assert simulator.stats.snapshot()["counts"]["social_links.503"] == 3


def test_other_4xx_is_final_without_retry(simulator):
    simulator.config.outage_status = 401
    client = PerplexityClient(simulator.url, "bad-key", "agent")
    with pytest.raises(ProviderError) as info:
        client.research(LEAD, TEMPLATES["person_basic"], max_tokens=100, max_searches=1,
                        policy=FAST)
    assert not info.value.retryable and info.value.status == 401
    assert simulator.stats.snapshot()["counts"]["perplexity.401"] == 1


def test_agent_run_failed_inside_http_200_is_an_error(simulator):
    simulator.config.agent_failed_rate = 1.0
    client = PerplexityClient(simulator.url, "k", "agent")
    with pytest.raises(ProviderError, match="run failed"):
        client.research(LEAD, TEMPLATES["person_basic"], max_tokens=100, max_searches=1,
                        policy=CallPolicy(max_attempts=2, budget_seconds=10))


def test_connection_refused_is_retryable():
    client = SocialLinksClient("http://127.0.0.1:1", "k")
    with pytest.raises(ProviderError) as info:
        client.lookup(LEAD, ("linkedin",), policy=CallPolicy(max_attempts=2, budget_seconds=5))
    assert info.value.retryable and info.value.status is None


@pytest.mark.parametrize(("text", "expected"), [
    ('{"title": "CEO", "company": null}', {"title": "CEO", "company": None}),
    ('```json\n{"title": " CTO ", "company": "unknown"}\n```', {"title": "CTO", "company": None}),
    ("I could not find anything.", {"title": None, "company": None}),
    ('{"title": ["a"], "company": 42}', {"title": None, "company": "42"}),
    ("{broken json", {"title": None, "company": None}),
])
def test_parse_fields_tolerates_model_output(text, expected):
    assert parse_fields(text, ("title", "company")) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("3", 3.0), ("0.5", 0.5), ("-1", 0.0), (None, None), ("soon", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected
