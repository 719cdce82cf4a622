"""Hunter.io (API v2): the Email Finder (`GET /v2/email-finder`) for a person's work address,
the Email Verifier (`GET /v2/email-verifier`) for how deliverable an address is, and the free
Account call (`GET /v2/account`) to learn when a used-up monthly quota resets.

Hunter's limits are per key and per endpoint, so each endpoint has its own key in the global
limiter (`hunter_finder`, `hunter_verifier`: `Settings.provider_rates`). Hunter answers 403
when that rate is exceeded (retried once every worker holds back) and 429 when the plan's
monthly credits are used up: never retried — the Answer says how long until the quota
resets, and the waterfall skips Hunter everywhere until then. The key goes in the X-API-KEY
header, never the URL; names and addresses are never logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, time
from decimal import Decimal
from urllib.parse import urlsplit

from ..config import Settings
from . import Answer, Ask, Candidate, Operation
from .http import CallPolicy, ProviderError, call_json, new_session

NAME = "hunter"
FINDER = "hunter_finder"  # the limiter's keys: one limit per endpoint
VERIFIER = "hunter_verifier"
ACCOUNT = "hunter_account"  # free and not limited
OPERATIONS = {
    "email_finder": Operation("email_finder", frozenset({"work_email", "email_status"}),
                              person_only=True),
    "email_verifier": Operation("email_verifier", frozenset({"email_status"}),
                                needs=("work_email",), person_only=True),
}
STATUSES = frozenset({"valid", "invalid", "accept_all", "webmail", "disposable", "unknown"})
FINDER_CREDITS = Decimal(1)  # charged only when an address is found
VERIFIER_CREDITS = Decimal("0.5")
IN_PROGRESS = 202  # the verification goes on: ask again later
VERIFICATION_FAILED = 222  # the mail server answered an error: no status
NO_RESULT_STATUS = frozenset({404, 451})  # 451: the person asked not to be processed
MAX_SOURCES = 10
QUOTA_UNKNOWN_SECONDS = 3600.0
QUOTA_MIN_SECONDS = 60.0
QUOTA_MAX_SECONDS = 31 * 86400.0
# An address at a webmail provider says nothing about where the person works.
WEBMAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com",
    "yahoo.com", "ymail.com", "icloud.com", "me.com", "mac.com", "aol.com", "proton.me",
    "protonmail.com", "pm.me", "mail.com", "zoho.com", "yandex.com", "yandex.ru", "web.de",
    "fastmail.com", "hey.com",
})
WEBMAIL_FAMILIES = frozenset({"gmx", "yahoo", "hotmail", "outlook", "live"})  # gmx.de, yahoo.fr


def build(settings: Settings) -> HunterClient:
    return HunterClient(settings.hunter_api_base, settings.hunter_api_key, settings.ca_bundle)


def bare_domain(value: str) -> str:
    """`https://www.Acme.com/about` → `acme.com` (Hunter wants the domain alone)."""
    value = value.strip().lower()
    host = urlsplit(value if "//" in value else f"//{value}").hostname or ""
    return host.removeprefix("www.")


def is_webmail(domain: str) -> bool:
    return domain in WEBMAIL_DOMAINS or domain.split(".", 1)[0] in WEBMAIL_FAMILIES


def lead_domain(lead: dict) -> str | None:
    """The lead's company domain: `domain`, else its e-mail's domain unless a webmail one."""
    if lead.get("domain") and (domain := bare_domain(lead["domain"])):
        return None if is_webmail(domain) else domain
    email = (lead.get("email") or "").strip()
    if "@" in email:
        domain = bare_domain(email.rsplit("@", 1)[1])
        if domain and not is_webmail(domain):
            return domain
    return None


def name_params(name: str | None) -> dict[str, str] | None:
    """First and last name when the name is exactly those two; a longer one goes whole as
    `full_name` (Hunter parses "Mary Ann Smith" or "Ludwig van Beethoven" itself). One word
    is not enough to find an address: None."""
    words = (name or "").split()
    if len(words) < 2:
        return None
    if len(words) == 2:
        return {"first_name": words[0], "last_name": words[1]}
    return {"full_name": " ".join(words)}


def finder_params(lead: dict) -> dict[str, str] | None:
    """The Email Finder's query for a lead, or None when it lacks a name or a domain."""
    names, domain = name_params(lead.get("name")), lead_domain(lead)
    if names is None or domain is None:
        return None
    return {"domain": domain, **names}


def _uris(sources) -> list[str]:
    """The http(s) pages Hunter found the address on: deduplicated, at most MAX_SOURCES."""
    uris: list[str] = []
    for source in sources if isinstance(sources, list) else []:
        uri = source.get("uri") if isinstance(source, dict) else None
        if isinstance(uri, str) and uri.startswith(("https://", "http://")) and uri not in uris:
            uris.append(uri)
    return uris[:MAX_SOURCES]


def _score(value) -> float | None:
    """Hunter's 0-100 score as 0..1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return min(1.0, max(0.0, value / 100))


def _status(value) -> str | None:
    return value if value in STATUSES else None


def _data(body: dict) -> dict:
    data = body.get("data")
    return data if isinstance(data, dict) else {}


def seconds_until(reset_date, now: datetime) -> float:
    """Seconds from `now` until 00:00 UTC of Hunter's `reset_date` (YYYY-MM-DD), within
    [QUOTA_MIN_SECONDS, QUOTA_MAX_SECONDS]; QUOTA_UNKNOWN_SECONDS without a readable date."""
    try:
        day = date.fromisoformat(reset_date)
    except (TypeError, ValueError):
        return QUOTA_UNKNOWN_SECONDS
    left = (datetime.combine(day, time(0), tzinfo=UTC) - now).total_seconds()
    return min(QUOTA_MAX_SECONDS, max(QUOTA_MIN_SECONDS, left))


class HunterClient:
    name = NAME

    def __init__(self, base: str, api_key: str | None, ca_bundle: str | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.base = base.rstrip("/")
        self.session = new_session(self.base, ca_bundle)
        if api_key:
            self.session.headers["X-API-KEY"] = api_key
        self.configured = bool(api_key)
        self.clock = clock

    def fill(self, ask: Ask) -> Answer:
        """Hunter answers about people only: a company-level ask (no personal data may be
        sent) gets nothing, without a call."""
        if not ask.person_level:
            return Answer()
        if ask.operation == "email_finder":
            return self._find(ask)
        if ask.operation == "email_verifier":
            return self._verify(ask)
        raise ValueError(f"{NAME} has no operation {ask.operation!r}")

    def _find(self, ask: Ask) -> Answer:
        params = finder_params(ask.lead)
        if params is None:
            return Answer()
        policy = ask.policy
        try:
            body = call_json(self.session, FINDER, "GET", f"{self.base}/v2/email-finder",
                             policy, params=params, throttled_status=403, quota_status=429)
        except ProviderError as exc:
            return self._refused(exc, policy)
        data = _data(body)
        email = data.get("email")
        if not isinstance(email, str) or "@" not in email:
            return Answer(http_status=policy.last_status)
        policy.spend.hunter_credits += FINDER_CREDITS
        sources, score = _uris(data.get("sources")), _score(data.get("score"))
        verification = data.get("verification")
        status = _status(verification.get("status") if isinstance(verification, dict) else None)
        email = email.strip().lower()
        found = {"work_email": Candidate(email, NAME, sources, score, status)}
        if status is not None:  # the Finder verified what it found
            found["email_status"] = Candidate(status, NAME, list(sources),
                                              checks="work_email", checked=email)
        return Answer({f: c for f, c in found.items() if f in ask.fields}, sources,
                      policy.last_status)

    def _verify(self, ask: Ask) -> Answer:
        # The address found (however sure: a valid check is what makes a guess sure), else
        # the lead's own.
        checks = "work_email" if ask.known.get("work_email") else None
        email = (ask.known.get("work_email") or ask.lead.get("email") or "").strip()
        if not email:
            return Answer()
        policy = ask.policy

        def in_progress(body: dict) -> None:
            if policy.last_status == IN_PROGRESS:
                raise ProviderError(VERIFIER, "verification in progress", status=IN_PROGRESS,
                                    retryable=True)

        try:
            body = call_json(self.session, VERIFIER, "GET", f"{self.base}/v2/email-verifier",
                             policy, check=in_progress, params={"email": email},
                             throttled_status=403, quota_status=429)
        except ProviderError as exc:
            return self._refused(exc, policy)
        if policy.last_status == VERIFICATION_FAILED:
            return Answer(http_status=VERIFICATION_FAILED)
        policy.spend.hunter_credits += VERIFIER_CREDITS
        data = _data(body)
        status = _status(data.get("status"))
        if status is None:
            return Answer(http_status=policy.last_status)
        sources = _uris(data.get("sources"))
        candidate = Candidate(status, NAME, sources, checks=checks, checked=email)
        found = {"email_status": candidate} if "email_status" in ask.fields else {}
        return Answer(found, sources, policy.last_status)

    def _refused(self, exc: ProviderError, policy: CallPolicy) -> Answer:
        """The refusals that are answers: quota used up (for how long), the person not to be
        processed (451) or not found (404), a verification that failed at the mail server
        (222, in a body that may not be JSON). Anything else is raised; 202 as retryable."""
        if exc.quota:
            return Answer(http_status=exc.status, quota_exhausted=self._until_reset(policy))
        if exc.status in NO_RESULT_STATUS or exc.status == VERIFICATION_FAILED:
            return Answer(http_status=exc.status)
        if exc.status == IN_PROGRESS and not exc.retryable:
            raise ProviderError(VERIFIER, "verification in progress", status=IN_PROGRESS,
                                retryable=True) from exc
        raise exc

    def _until_reset(self, policy: CallPolicy) -> float:
        """Seconds until the monthly quota resets, from one Account call (free): one attempt,
        within what is left of the round; its status is not the Answer's."""
        once = replace(policy, max_attempts=1, last_status=None)
        try:
            body = call_json(self.session, ACCOUNT, "GET", f"{self.base}/v2/account", once)
        except ProviderError:
            return QUOTA_UNKNOWN_SECONDS
        finally:
            policy.sent = once.sent
        return seconds_until(_data(body).get("reset_date"), self.clock())
