"""Hunter.io: the client against the strict local fake over real HTTP — wire format, what is
parsed, the refusals that are answers (quota, legal), throttling on the shared limiter in
Redis, across processes — and the fake's own strictness."""

from __future__ import annotations

import math
import multiprocessing
import os
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis
import requests

from enrichment.config import Settings
from enrichment.provider_limits import ProviderLimiter
from enrichment.providers import Answer, Ask, CallPolicy, ProviderError
from enrichment.providers import hunter as hunter_module
from enrichment.providers.hunter import (
    FINDER,
    QUOTA_MAX_SECONDS,
    QUOTA_MIN_SECONDS,
    QUOTA_UNKNOWN_SECONDS,
    HunterClient,
    finder_params,
    seconds_until,
)
from simulators.hunter import HunterConfig, HunterServer, SimpleAnswers

# The Redis DB the suite uses (tests/conftest.py's default).
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
KEY = "hunter-test-key"
LEAD = {"name": "Jane Doe", "domain": "acme.com"}
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
RUN_SECONDS = 5.0  # each multi-process run
JITTER = 0.15  # how much later than its slot a request may reach the fake (scheduling)


def source(uri: str) -> dict:
    return {"domain": "acme.com", "uri": uri, "extracted_on": "2025-01-02",
            "last_seen_on": "2025-12-01", "still_on_page": True}


FOUND = {
    "first_name": "Jane", "last_name": "Doe", "email": "Jane.Doe@Acme.com", "score": 87,
    "domain": "acme.com", "accept_all": False, "position": "VP Sales", "twitter": None,
    "linkedin_url": None, "phone_number": None, "company": "Acme",
    "sources": [source("https://acme.com/team"), source("https://acme.com/team"),
                source("ftp://acme.com/list"), source("https://blog.acme.com/hello")]
    + [source(f"https://news.example.org/{n}") for n in range(12)],
    "verification": {"date": "2026-02-01", "status": "valid"},
}
VERIFIED = {
    "status": "accept_all", "result": "risky", "score": 64, "email": "jane.doe@acme.com",
    "regexp": True, "gibberish": False, "disposable": False, "webmail": False,
    "mx_records": True, "smtp_server": True, "smtp_check": True, "accept_all": True,
    "block": False, "sources": [source("https://acme.com/team")],
}


class Canned:
    """Fixed answers, and what the fake asked for."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.found: dict | None = FOUND
        self.verified = VERIFIED
        self.finds: list[tuple] = []
        self.verifies: list[str] = []

    def find(self, first_name, last_name, full_name, domain):
        self.finds.append((first_name, last_name, full_name, domain))
        return self.found

    def verify(self, email):
        self.verifies.append(email)
        return self.verified


def policy(**kwargs) -> CallPolicy:
    return CallPolicy(**{"max_attempts": 4, "budget_seconds": 20, "read_timeout": 5, **kwargs})


def ask(operation: str = "email_finder", lead: dict | None = None,
        fields: tuple[str, ...] = ("work_email", "email_status"),
        known: dict | None = None, call_policy: CallPolicy | None = None) -> Ask:
    return Ask(operation, LEAD if lead is None else lead, fields, known or {},
               call_policy or policy())


def counts(fake: HunterServer) -> dict:
    return fake.stats.snapshot()["counts"]


@pytest.fixture(scope="module")
def _served():
    canned = Canned()
    with HunterServer(answers=canned) as server:
        yield server, canned


@pytest.fixture
def canned(_served) -> Canned:
    _served[1].reset()
    return _served[1]


@pytest.fixture
def fake(_served, canned) -> HunterServer:
    """The module's fake, as new: default config, no requests, windows and credits."""
    server = _served[0]
    for name, value in vars(HunterConfig()).items():
        setattr(server.config, name, value)
    requests.post(f"{server.url}/_sim/reset", timeout=5).raise_for_status()
    return server


@pytest.fixture
def client(fake) -> HunterClient:
    return HunterClient(fake.url, KEY, clock=lambda: NOW)


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client):
    """A limiter prefix of this test's own, removed afterwards."""
    name = f"hunter-test-{uuid.uuid4().hex}"
    yield name
    for key in redis_client.scan_iter(f"{name}:*"):
        redis_client.delete(key)


# --- the client: wire format and parsing ---------------------------------------------------

def test_build_is_configured_only_with_a_key():
    assert not hunter_module.build(Settings()).configured
    assert hunter_module.build(Settings(hunter_api_key="k")).configured


def test_finder_sends_the_key_in_a_header_and_parses_candidates(fake, canned, client):
    p = policy()
    answer = client.fill(ask(call_policy=p))
    snap = fake.stats.snapshot()
    assert snap["last_key"] == KEY
    [query] = snap["received"]["finder"]
    assert KEY not in query and "api_key" not in query  # never in a URL
    assert canned.finds == [("Jane", "Doe", None, "acme.com")]

    uris = ["https://acme.com/team", "https://blog.acme.com/hello"] + [
        f"https://news.example.org/{n}" for n in range(8)]  # http(s), deduplicated, ten
    email, status = answer.found["work_email"], answer.found["email_status"]
    assert (email.value, email.provider, email.sources, email.score, email.verification) == (
        "jane.doe@acme.com", "hunter", uris, 0.87, "valid")
    assert (status.value, status.sources, status.checks, status.checked) == (
        "valid", uris, "work_email", "jane.doe@acme.com")  # a status, of the address found
    assert answer.citations == uris and answer.http_status == 200 and answer.status == "ok"
    assert p.spend.hunter_credits == 1 and p.sent == 1


def test_finder_fills_only_the_fields_asked(client):
    answer = client.fill(ask(fields=("email_status",)))
    assert set(answer.found) == {"email_status"}


def test_finder_without_verification_offers_no_status(fake, canned, client):
    canned.found = {**FOUND, "verification": {"date": None, "status": None}}
    answer = client.fill(ask())
    assert set(answer.found) == {"work_email"}
    assert answer.found["work_email"].verification is None


@pytest.mark.parametrize(("lead", "expected"), [
    ({"name": "Jane Doe", "email": "jane@acme.io"},
     {"domain": "acme.io", "first_name": "Jane", "last_name": "Doe"}),
    ({"name": " Mary  Ann Smith ", "domain": "https://www.Acme.com/about"},
     {"domain": "acme.com", "full_name": "Mary Ann Smith"}),
    ({"name": "Jane Doe", "domain": "acme.com", "email": "jane@other.com"},
     {"domain": "acme.com", "first_name": "Jane", "last_name": "Doe"}),
])
def test_finder_query_from_the_lead(lead, expected):
    assert finder_params(lead) == expected


@pytest.mark.parametrize("lead", [
    {"name": "Jane Doe", "email": "jane.doe@gmail.com"},  # webmail: not where she works
    {"name": "Jane Doe", "email": "jane.doe@gmx.de"},
    {"name": "Jane Doe"},
    {"domain": "acme.com", "email": "jane@acme.com"},  # no name
    {"name": "Jane", "domain": "acme.com"},  # one word is not a name to search
])
def test_finder_without_its_inputs_sends_nothing(fake, client, lead):
    answer = client.fill(ask(lead=lead))
    assert answer == Answer()
    assert counts(fake) == {}


def test_finder_no_address_found_is_no_result_and_free(fake, canned, client):
    canned.found = None
    p = policy()
    answer = client.fill(ask(call_policy=p))
    assert answer.status == "no_result" and answer.http_status == 200
    assert p.spend.hunter_credits == 0 and fake.account.used == 0


def test_verifier_checks_the_address_found_and_parses_the_status(fake, canned, client):
    p = policy()
    answer = client.fill(ask("email_verifier", lead={"email": "jane@home.example"},
                             fields=("email_status",),
                             known={"work_email": "jane.doe@acme.com"}, call_policy=p))
    assert canned.verifies == ["jane.doe@acme.com"]
    [query] = fake.stats.snapshot()["received"]["verifier"]
    assert KEY not in query
    status = answer.found["email_status"]
    assert (status.value, status.provider, status.sources, status.checks, status.checked) == (
        "accept_all", "hunter", ["https://acme.com/team"], "work_email", "jane.doe@acme.com")
    assert answer.citations == ["https://acme.com/team"] and answer.http_status == 200
    assert p.spend.hunter_credits == Decimal("0.5")


def test_verifier_falls_back_to_the_leads_address_and_needs_one(fake, canned, client):
    client.fill(ask("email_verifier", lead={"email": "jane@acme.com"}, fields=("email_status",)))
    assert canned.verifies == ["jane@acme.com"]
    assert client.fill(ask("email_verifier", lead={"name": "Jane Doe"})) == Answer()
    assert counts(fake)["verifier.received"] == 1


def test_a_company_level_ask_sends_nothing(fake, client):
    assert client.fill(Ask("email_finder", LEAD, ("work_email",), {}, policy(),
                           person_level=False)) == Answer()
    assert counts(fake) == {}


# --- refusals and throttling ---------------------------------------------------------------

def test_verification_in_progress_is_retried_then_answered(fake, client):
    fake.config.verify_pending = 1
    retried: list[int | None] = []
    p = policy(on_retry=lambda name, exc: retried.append(getattr(exc, "status", None)))
    answer = client.fill(ask("email_verifier", known={"work_email": "jane.doe@acme.com"},
                             call_policy=p))
    assert answer.found["email_status"].value == "accept_all"
    assert retried == [202]
    assert counts(fake)["verifier.202"] == 1 and counts(fake)["verifier.ok"] == 1
    assert p.spend.hunter_credits == Decimal("0.5")


def test_verification_still_in_progress_is_retryable(fake, client):
    fake.config.verify_pending = 10
    with pytest.raises(ProviderError) as info:
        client.fill(ask("email_verifier", known={"work_email": "jane.doe@acme.com"},
                        call_policy=policy(max_attempts=2)))
    assert info.value.retryable and info.value.status == 202
    assert counts(fake)["verifier.202"] == 2


def test_verification_failed_222_is_no_result(fake, client):
    fake.config.outage_status = 222
    p = policy()
    answer = client.fill(ask("email_verifier", known={"work_email": "jane.doe@acme.com"},
                             call_policy=p))
    assert answer == Answer(http_status=222)
    assert p.spend.hunter_credits == 0 and counts(fake)["verifier.received"] == 1


@pytest.mark.parametrize("status", [451, 404])
def test_legal_refusal_and_not_found_are_no_result(fake, client, status):
    fake.config.outage_status = status
    answer = client.fill(ask())
    assert answer.status == "no_result" and answer.http_status == status
    assert answer.quota_exhausted is None
    assert counts(fake)["finder.received"] == 1  # final: not retried


def test_an_unknown_key_is_a_final_error(canned):
    with HunterServer(HunterConfig(api_keys=("right",)), answers=canned) as fake:
        with pytest.raises(ProviderError) as info:
            HunterClient(fake.url, "wrong").fill(ask())
        assert info.value.status == 401 and not info.value.retryable
        assert counts(fake) == {"finder.received": 1, "finder.401": 1}


def test_rate_limit_403_holds_every_caller_back_on_the_shared_limiter(
        fake, client, redis_client, prefix):
    fake.config.finder_rps = 1  # a second call within the second is refused
    limiter = ProviderLimiter(redis_client, {FINDER: 50.0}, prefix=prefix)
    penalties: list[tuple[str, float]] = []
    retried: list[int | None] = []

    def penalize(name: str, seconds: float) -> None:
        penalties.append((name, seconds))
        limiter.penalize(name, seconds)

    p = policy(throttle=limiter.acquire, penalize=penalize,
               on_retry=lambda name, exc: retried.append(getattr(exc, "status", None)))
    answers = [client.fill(ask(call_policy=p)) for _ in range(3)]
    assert all(a.status == "ok" for a in answers)
    seen = counts(fake)
    assert seen["finder.ok"] == 3 and seen["finder.403"] >= 1
    assert retried == [403] * seen["finder.403"]
    assert penalties == [(FINDER, 1.0)] * seen["finder.403"]  # no Retry-After: 1 s
    assert p.spend.hunter_credits == 3


@pytest.mark.parametrize("operation", ["email_finder", "email_verifier"])
def test_quota_used_up_is_one_request_and_says_until_when(canned, operation):
    with HunterServer(HunterConfig(credits=0), answers=canned, clock=lambda: NOW) as fake:
        client = HunterClient(fake.url, KEY, clock=lambda: NOW)
        p = policy(max_attempts=5)
        answer = client.fill(ask(operation, known={"work_email": "jane.doe@acme.com"},
                                 call_policy=p))
        endpoint = "finder" if operation == "email_finder" else "verifier"
        assert counts(fake) == {f"{endpoint}.received": 1, f"{endpoint}.429": 1,
                                "account.received": 1, "account.ok": 1}
    # the fake's reset date: the 1st of next month by its clock
    reset = datetime(2026, 4, 1, tzinfo=UTC)
    assert answer.quota_exhausted == (reset - NOW).total_seconds()
    assert answer.http_status == 429 and answer.status == "no_result"
    assert p.spend.hunter_credits == 0 and p.sent == 2


def test_seconds_until_the_reset_is_bounded():
    assert seconds_until("2026-03-16", NOW) == 12 * 3600
    assert seconds_until("2026-03-15", NOW) == QUOTA_MIN_SECONDS  # already reset
    assert seconds_until("2027-01-01", NOW) == QUOTA_MAX_SECONDS
    assert seconds_until(None, NOW) == seconds_until("soon", NOW) == QUOTA_UNKNOWN_SECONDS


# --- the shared limiter holds both of Hunter's windows across processes --------------------

def _finder_loop(url: str, redis_url: str, prefix: str, rate: float, ready, go,
                 seconds: float) -> None:
    """One worker process: the finder in a loop through the shared limiter for `seconds`
    after `go`. Any error fails the process (its exit code)."""
    limiter = ProviderLimiter(redis.Redis.from_url(redis_url), {FINDER: rate}, prefix=prefix)
    client = HunterClient(url, KEY)
    ready.put(os.getpid())
    go.wait(30)
    stop = time.time() + seconds
    while time.time() < stop:
        answer = client.fill(ask(call_policy=CallPolicy(
            max_attempts=3, budget_seconds=20, throttle=limiter.acquire,
            penalize=limiter.penalize)))
        assert answer.status == "ok"


def run_workers(fake: HunterServer, rate: float, prefix: str, processes: int = 3) -> float:
    """Start `processes` spawned workers, let them run; returns when they were let go."""
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=_finder_loop, args=(fake.url, REDIS_URL, prefix, rate,
                                                      ready, go, RUN_SECONDS))
               for _ in range(processes)]
    for w in workers:
        w.start()
    try:
        for _ in workers:
            ready.get(timeout=30)
        started = time.time()
        go.set()
        for w in workers:
            w.join(30)
    finally:
        for w in workers:
            if w.is_alive():
                w.kill()
    assert [w.exitcode for w in workers] == [0] * processes
    return started


def most_within(times: list[float], width: float) -> int:
    """The most requests in any half-open window [t, t + width)."""
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u < t + width) for i, t in enumerate(times)),
               default=0)


@pytest.mark.parametrize(("rps", "rpm", "per_second"), [(5, 10_000, True), (100, 120, False)],
                         ids=["per-second-binds", "per-minute-binds"])
def test_the_limiter_holds_both_windows_across_processes(redis_client, prefix, rps, rpm,
                                                         per_second):
    rate = Settings(hunter_finder_rps=rps, hunter_finder_rpm=rpm).provider_rates()[FINDER]
    config = HunterConfig(finder_rps=rps, finder_rpm=rpm)
    with HunterServer(config, answers=SimpleAnswers()) as fake:
        started = run_workers(fake, rate, prefix)
        snap = fake.stats.snapshot()
    assert snap["counts"].get("finder.403", 0) == 0
    accepted = sorted(snap["accepted"]["finder"])
    assert len(accepted) >= 3  # the workers did call
    # Slots are 1/rate apart from `started` on: n requests need (n - 1)/rate seconds.
    assert len(accepted) <= math.floor((accepted[-1] - started) * rate) + 1
    if per_second:  # 80% of the per-second limit in every second, jitter allowed for
        assert most_within(accepted, 1.0 - JITTER) <= math.floor(rps * 0.8)


# --- the fake is as strict as Hunter --------------------------------------------------------

@pytest.fixture
def http(fake):
    session = requests.Session()
    session.headers["X-API-KEY"] = KEY

    def get(path: str, **params):
        return session.get(f"{fake.url}{path}", params=params, timeout=5)

    yield get
    session.close()


def test_fake_requires_a_key(fake):
    answer = requests.get(f"{fake.url}/v2/email-finder", timeout=5, params={
        "domain": "acme.com", "first_name": "Jane", "last_name": "Doe"})
    assert answer.status_code == 401
    assert answer.json()["errors"][0]["id"] == "authentication_failed"
    by_param = requests.get(f"{fake.url}/v2/account", params={"api_key": KEY}, timeout=5)
    assert by_param.status_code == 200


@pytest.mark.parametrize(("path", "params", "status"), [
    ("/v2/email-finder", {"first_name": "Jane", "last_name": "Doe"}, 400),
    ("/v2/email-finder", {"domain": "acme.com", "first_name": "Jane"}, 400),
    ("/v2/email-finder", {"domain": "acme.com", "full_name": "Jane Doe"}, 200),
    ("/v2/email-finder", {"company": "Acme", "first_name": "Jane", "last_name": "Doe"}, 200),
    ("/v2/email-verifier", {}, 400),
    ("/v2/email-verifier", {"email": "jane.doe@acme"}, 400),
    ("/v2/email-verifier", {"email": "jane.doe@acme.com"}, 200),
])
def test_fake_validates_parameters(http, path, params, status):
    answer = http(path, **params)
    assert answer.status_code == status
    if status == 400:
        error = answer.json()["errors"][0]
        assert error["id"] == "wrong_params" and error["code"] == 400 and error["details"]
    else:
        assert "data" in answer.json()


def test_fake_rate_limits_per_key_endpoint_and_both_windows(fake, http):
    fake.config.finder_rps, fake.config.finder_rpm = 2, 3
    find = {"domain": "acme.com", "first_name": "Jane", "last_name": "Doe"}
    assert [http("/v2/email-finder", **find).status_code for _ in range(3)] == [200, 200, 403]
    refused = http("/v2/email-finder", **find).json()["errors"][0]
    assert refused == {"id": "too_many_requests", "code": 403, "details": refused["details"]}
    assert http("/v2/email-verifier", email="jane.doe@acme.com").status_code == 200
    other = requests.get(f"{fake.url}/v2/email-finder", params=find,
                         headers={"X-API-KEY": "another-key"}, timeout=5)
    assert other.status_code == 200
    time.sleep(1.05)  # the second has passed; the refused requests did not count
    assert http("/v2/email-finder", **find).status_code == 200  # the 3rd of the minute
    time.sleep(1.05)
    assert http("/v2/email-finder", **find).status_code == 403  # the minute's window
    assert len(fake.stats.snapshot()["accepted"]["finder"]) == 4


def test_fake_quota_and_account(fake, http):
    fake.config.credits, fake.config.reset_date = 1.5, "2026-04-01"
    find = {"domain": "acme.com", "first_name": "Jane", "last_name": "Doe"}
    assert http("/v2/email-finder", **find).status_code == 200  # found: 1 credit
    assert http("/v2/email-verifier", email="jane.doe@acme.com").status_code == 200  # 0.5
    for path, params in (("/v2/email-finder", find),
                         ("/v2/email-verifier", {"email": "jane.doe@acme.com"})):
        used_up = http(path, **params)
        assert used_up.status_code == 429
        assert used_up.json()["errors"][0]["id"] == "usage_limit"
    account = http("/v2/account").json()["data"]
    assert account["reset_date"] == "2026-04-01"
    assert account["requests"]["credits"] == {"used": 1.5, "available": 0.0}
    requests.post(f"{fake.url}/_sim/reset", timeout=5)
    assert http("/v2/account").json()["data"]["requests"]["credits"]["used"] == 0


def test_fake_charges_nothing_when_no_address_is_found(canned, fake, http):
    canned.found = None
    answer = http("/v2/email-finder", domain="acme.com", first_name="Jane", last_name="Doe")
    assert answer.json()["data"]["email"] is None and answer.json()["data"]["score"] is None
    assert fake.account.used == 0


def test_simple_answers_are_deterministic():
    answers = SimpleAnswers()
    found = answers.find("Jane", "Doe", None, "acme.com")
    assert found == answers.find(None, None, "Jane Doe", "acme.com")
    assert found["email"] == "jane.doe@acme.com" and 60 <= found["score"] <= 99
    assert 1 <= len(found["sources"]) <= 3
    assert all(s["uri"].startswith("https://acme.com/") for s in found["sources"])
    assert answers.find("Nomatch", "Doe", None, "acme.com") is None
    assert answers.verify("jane.doe@acme.com")["status"] in ("valid", "accept_all")
    assert answers.verify("jane@gmail.com")["status"] == "webmail"
