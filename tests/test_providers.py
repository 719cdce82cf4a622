"""Provider clients against the simulator over real HTTP: wire formats, retries, final errors."""

from __future__ import annotations

import socket
import threading
import time
from decimal import Decimal

import pytest
import requests

from enrichment.providers import Ask, CallPolicy, ProviderError
from enrichment.providers.http import new_session, parse_retry_after
from enrichment.providers.perplexity import PerplexityClient, parse_answer
from enrichment.providers.social_links import SocialLinksClient
from enrichment.templates import TEMPLATES, Step

from .helpers import eventually

LEAD = {"email": "jane@acme.com", "name": "Jane Doe", "company": "Acme"}
FAST = CallPolicy(max_attempts=4, budget_seconds=20, read_timeout=5)
PERSON = TEMPLATES["person_basic"].fields_for(Step("perplexity", "research"))
COMPANY = TEMPLATES["company_profile"].fields


def research(client, policy=FAST, lead=LEAD, fields=PERSON, max_searches=1, max_tokens=100):
    return client.fill(Ask("research", lead, fields, {}, policy, fields is PERSON,
                           max_tokens, max_searches))


def social(client, networks, policy=FAST):
    return client.fill(Ask("search", LEAD, networks, {}, policy))


@pytest.mark.parametrize("style", ["agent", "chat"])
def test_perplexity_styles_parse_fields_citations_and_usage(simulator, style):
    client = PerplexityClient(simulator.url, "k", style)
    policy = CallPolicy(max_attempts=4, budget_seconds=20, read_timeout=5)
    answer = research(client, policy, max_searches=2, max_tokens=1500)
    assert set(answer.found) <= set(PERSON) and answer.found["company"].value == "Acme"
    assert answer.citations and all(u.startswith("https://") for u in answer.citations)
    for candidate in answer.found.values():  # each value's sources are what the run read
        assert candidate.provider == "perplexity"
        assert candidate.sources and set(candidate.sources) <= set(answer.citations)
    assert answer.http_status == 200
    assert policy.spend.tokens > 0 and policy.spend.searches >= 1
    assert isinstance(policy.spend.reported_cost_usd, Decimal)
    assert policy.spend.reported_cost_usd > 0
    assert simulator.stats.snapshot()["last_key"]["perplexity"] == "Bearer k"


def test_agent_searches_are_bounded_by_max_searches(simulator):
    client = PerplexityClient(simulator.url, "k", "agent")
    for email in ("a@x.com", "b@y.com", "c@z.com", "d@w.com"):
        policy = CallPolicy(max_attempts=4, budget_seconds=20, read_timeout=5)
        research(client, policy, lead={"email": email}, fields=COMPANY)
        assert policy.spend.searches == 1


def test_social_links_sends_rapidapi_headers_and_parses_links(simulator):
    client = SocialLinksClient(simulator.url, "rk")
    policy = CallPolicy(max_attempts=4, budget_seconds=20, read_timeout=5)
    answer = social(client, ("linkedin", "twitter_url", "myspace"), policy)
    assert set(answer.found) <= {"linkedin", "twitter_url"} and answer.found
    for candidate in answer.found.values():  # a profile is its own source
        assert candidate.sources == [candidate.value]
    assert policy.spend.social_requests == 1
    sent = simulator.stats.snapshot()["received"]["social_links"][-1]
    assert "social_networks=linkedin%2Ctwitter" in sent
    assert simulator.stats.snapshot()["last_key"]["social_links"] == "rk"


def test_429_is_retried_after_retry_after_then_succeeds(simulator):
    simulator.config.perplexity_rps = 1
    retries = []
    policy = CallPolicy(max_attempts=5, budget_seconds=20,
                        on_retry=lambda p, e: retries.append(e.status))
    client = PerplexityClient(simulator.url, "k", "chat")
    for _ in range(2):  # the second call within one second hits the simulator's limit
        research(client, policy)
    assert retries and set(retries) == {429}
    counts = simulator.stats.snapshot()["counts"]
    assert counts["perplexity.ok"] == 2 and counts["perplexity.429"] == len(retries)


def test_5xx_storm_backs_off_then_gives_up_retryable(simulator):
    simulator.config.outage_status = 503
    client = SocialLinksClient(simulator.url, "k")
    with pytest.raises(ProviderError) as info:
        social(client, ("linkedin",), CallPolicy(max_attempts=3, budget_seconds=20))
    assert info.value.retryable and info.value.status == 503
    assert simulator.stats.snapshot()["counts"]["social_links.503"] == 3


def test_other_4xx_is_final_without_retry(simulator):
    simulator.config.outage_status = 401
    client = PerplexityClient(simulator.url, "bad-key", "agent")
    with pytest.raises(ProviderError) as info:
        research(client, FAST)
    assert not info.value.retryable and info.value.status == 401
    assert simulator.stats.snapshot()["counts"]["perplexity.401"] == 1


def test_agent_run_failed_inside_http_200_is_retried_and_its_tokens_are_metered(simulator):
    simulator.config.agent_failed_rate = 1.0
    client = PerplexityClient(simulator.url, "k", "agent")
    policy = CallPolicy(max_attempts=2, budget_seconds=10)
    with pytest.raises(ProviderError, match="run failed") as info:
        research(client, policy)
    assert info.value.retryable and info.value.final_status == "dead"
    assert simulator.stats.snapshot()["counts"]["perplexity.ok"] == 2  # retried in the round
    assert policy.spend.tokens > 0 and policy.spend.reported_cost_usd > 0  # spent, recorded


def test_a_round_is_a_hard_bound_and_a_paid_post_is_not_resent(simulator):
    simulator.config.latency_ms = 3000  # answers long after the round ends
    client = PerplexityClient(simulator.url, "k", "agent")
    policy = CallPolicy(max_attempts=5, budget_seconds=1.5)
    started = time.monotonic()
    with pytest.raises(ProviderError, match="not re-sent") as info:
        research(client, policy)
    elapsed = time.monotonic() - started
    assert elapsed < 2.8, elapsed  # ended with the round, not with the answer (3 s)
    assert info.value.uncertain and not info.value.retryable
    assert info.value.final_status == "dead"
    assert simulator.stats.snapshot()["counts"]["perplexity.received"] == 1
    eventually(lambda: "perplexity.ok" in simulator.stats.snapshot()["counts"], 10)  # drained


class Dribble(threading.Thread):
    """A server that sends its answer's headers at once, then one byte a second."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = 0

    def run(self):
        while True:
            conn, _ = self.sock.accept()
            self.requests += 1
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 100\r\n\r\n{")
                for _ in range(20):
                    time.sleep(1)
                    try:
                        conn.sendall(b" ")
                    except OSError:
                        break


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_dribbling_body_cannot_stretch_the_round(method):
    from enrichment.providers.http import call_json

    server = Dribble()
    server.start()
    policy = CallPolicy(max_attempts=5, budget_seconds=2.0)
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        call_json(requests.Session(), "perplexity", method, server.url, policy)
    assert time.monotonic() - started < 3.5  # the round's 2 s, not 100 bytes at 1/s
    if method == "POST":  # headers came back: the paid request ran; never sent twice
        assert info.value.uncertain and server.requests == 1


def test_an_idempotent_get_that_times_out_is_retried_within_the_round(simulator):
    simulator.config.latency_ms = 800
    client = SocialLinksClient(simulator.url, "k")
    policy = CallPolicy(max_attempts=5, budget_seconds=2.0, read_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        social(client, ("linkedin",), policy)
    assert time.monotonic() - started < 2.0 + 0.5
    assert info.value.retryable
    assert simulator.stats.snapshot()["counts"]["social_links.received"] >= 2


def test_retry_after_is_honoured_but_capped(simulator):
    simulator.config.outage_status = 429
    simulator.config.outage_retry_after = "3600"
    penalties = []
    policy = CallPolicy(max_attempts=1, budget_seconds=5, max_retry_after=60,
                        penalize=lambda provider, seconds: penalties.append(seconds))
    with pytest.raises(ProviderError) as info:
        social(SocialLinksClient(simulator.url, "k"), ("linkedin",), policy)
    assert info.value.retry_after == 60 and penalties == [60]


def test_connection_refused_is_retryable():
    client = SocialLinksClient("http://127.0.0.1:1", "k")
    with pytest.raises(ProviderError) as info:
        social(client, ("linkedin",), CallPolicy(max_attempts=2, budget_seconds=5))
    assert info.value.retryable and info.value.status is None


READ = ["https://acme.com/team", "https://www.crunchbase.com/person/jane"]


@pytest.mark.parametrize(("text", "expected"), [
    ('{"title": {"value": "CEO", "sources": ["https://acme.com/team"]}, "company": null}',
     {"title": ("CEO", ["https://acme.com/team"])}),
    # a URL the run did not read is no source; a bare value is a value without one
    ('```json\n{"title": {"value": " CTO ", "sources": ["https://made.up/x"]},'
     ' "company": "unknown"}\n```', {"title": ("CTO", [])}),
    ('{"title": "CEO", "company": {"value": "Acme", "sources": "https://acme.com/team"}}',
     {"title": ("CEO", []), "company": ("Acme", [])}),
    ("I could not find anything.", {}),
    ('{"title": ["a"], "company": 42}', {"company": ("42", [])}),
    ("{broken json", {}),
])
def test_parse_answer_tolerates_model_output(text, expected):
    found = parse_answer(text, ("title", "company"), READ)
    assert {k: (c.value, c.sources) for k, c in found.items()} == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("3", 3.0), ("0.5", 0.5), ("-1", 0.0), (None, None), ("soon", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_a_session_reads_proxy_and_ca_settings_from_the_environment_once(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "socials.internal")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp.pem")
    from enrichment.config import Settings

    proxied = new_session("https://api.perplexity.ai", Settings.from_env().ca_bundle)
    assert proxied.proxies["https"] == "http://proxy.internal:3128"
    assert proxied.verify == "/etc/ssl/corp.pem"
    assert "https" not in new_session("https://socials.internal").proxies
    monkeypatch.delenv("HTTPS_PROXY")  # read when the session was made, not per request
    assert proxied.proxies["https"] == "http://proxy.internal:3128"


def test_a_busy_session_reuses_its_connection_and_an_idle_one_reconnects():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from enrichment.providers.http import call_json

    class KeepAlive(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        connections: set = set()

        def do_POST(self):
            self.connections.add(self.client_address)
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    session = new_session(url)
    try:
        for _ in range(3):
            call_json(session, "perplexity", "POST", url, CallPolicy(), json={})
        assert len(KeepAlive.connections) == 1
        session.last_used -= 3600  # an hour idle: the server may be closing it right now
        call_json(session, "perplexity", "POST", url, CallPolicy(), json={})
        assert len(KeepAlive.connections) == 2
    finally:
        server.shutdown()
        session.close()
