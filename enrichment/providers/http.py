"""The one HTTP call path every provider client uses: a hard time bound, and retries.

A provider round (every call one job makes) has a deadline. Each attempt's connect and read
timeouts are cut to the time left in the round, the body is read against the same deadline,
and no attempt or backoff starts past it: a round never outlasts its budget by more than a
scheduling hiccup.

Retried: 429, 5xx, connection errors, connect timeouts, and answers a `check` calls transient
(a Perplexity run that failed inside an HTTP 200) — with exponential backoff and full jitter,
or the server's Retry-After (capped). Final: every other 4xx, a malformed answer, and a paid
POST whose answer did not come in time: the provider may still be running (and billing) it, so
it is not re-sent blindly; the job ends `dead` with that reason and can be replayed.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import requests
import urllib3
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

log = logging.getLogger(__name__)
# At DEBUG urllib3 logs every request line, and provider requests carry the lead (Social
# Links takes the person's name in its query string): personal data must not reach logs.
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
CHUNK = 64 * 1024
MIN_ATTEMPT_SECONDS = 0.1  # less time than this left in the round: no new attempt


class ProviderError(Exception):
    """A provider call that did not produce a usable answer. `retryable`: worth another try
    (the job ends `dead` when tries run out); `uncertain`: a paid request that may still have
    run — not retried, and the job ends `dead` rather than `failed`."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        uncertain: bool = False,
    ):
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.uncertain = uncertain

    @property
    def final_status(self) -> str:
        """How the job ends: `dead` (transient, replayable) or `failed` (the provider refused)."""
        return "dead" if self.retryable or self.uncertain else "failed"


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as delta-seconds or an HTTP date, in seconds from now (never negative)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


_backoff = wait_random_exponential(multiplier=0.5, max=8.0)  # "full jitter"


@dataclass
class Spend:
    """What a round spent, from every answer that reported it — failed runs included."""

    tokens: int = 0
    searches: int = 0
    social_requests: int = 0
    reported_cost_usd: Decimal = Decimal(0)
    unpriced_tokens: int = 0  # from answers that reported no cost: estimated by the caller
    unpriced_searches: int = 0

    def research(self, tokens: int, searches: int, cost_usd: Decimal | None) -> None:
        self.tokens += tokens
        self.searches += searches
        if cost_usd is None:
            self.unpriced_tokens += tokens
            self.unpriced_searches += searches
        else:
            self.reported_cost_usd += cost_usd


@dataclass
class CallPolicy:
    """How hard one provider round tries: attempts, the round's deadline, per-request caps.

    `throttle(provider, max_wait)` runs before every attempt and `penalize(provider,
    retry_after)` after a 429 (the global provider limiter plugs in here); `on_retry(provider,
    exc)` is told about each failed attempt that will be retried; `record(provider, outcome)`
    about every attempt. `deadline` (monotonic) ends the round; without one, the round gets
    `budget_seconds` from its first call.
    """

    max_attempts: int = 5
    budget_seconds: float = 30.0
    connect_timeout: float = 3.05
    read_timeout: float = 25.0
    max_retry_after: float = 60.0
    deadline: float | None = None
    throttle: Callable[[str, float], float] | None = None
    penalize: Callable[[str, float], None] | None = None
    record: Callable[[str, str], None] | None = None
    on_retry: Callable[[str, BaseException], None] | None = None
    spend: Spend = field(default_factory=Spend)

    def remaining(self) -> float:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.budget_seconds
        return self.deadline - time.monotonic()


def _out_of_time(provider: str) -> ProviderError:
    return ProviderError(provider, "provider round out of time", retryable=True)


def _send(session: requests.Session, provider: str, method: str, url: str,
          policy: CallPolicy, **kwargs) -> requests.Response:
    """One attempt, bounded by the round's deadline (connect, headers and body)."""
    left = policy.remaining()
    if left <= 0:
        raise _out_of_time(provider)
    timeout = urllib3.Timeout(connect=min(policy.connect_timeout, left),
                              read=min(policy.read_timeout, left), total=left)
    try:
        resp = session.request(method, url, timeout=timeout, stream=True, **kwargs)
        with resp:
            body = bytearray()
            for chunk in resp.iter_content(CHUNK):
                body += chunk
                if policy.remaining() <= 0:
                    raise requests.ReadTimeout("answer not complete by the round's deadline")
            resp._content = bytes(body)
        return resp
    except requests.ConnectTimeout as exc:  # before sending: nothing reached the provider
        _record(policy, provider, "connection_error")
        raise ProviderError(provider, "ConnectTimeout", retryable=True) from exc
    except requests.Timeout as exc:  # sent, no (complete) answer in time
        _record(policy, provider, "timeout")
        if method.upper() == "POST":
            raise ProviderError(
                provider, f"no answer within the round ({left:.1f}s left when sent); not re-sent:"
                " the provider may still run and bill it", uncertain=True) from exc
        raise ProviderError(provider, "ReadTimeout", retryable=True) from exc
    except requests.RequestException as exc:
        _record(policy, provider, "connection_error")
        raise ProviderError(provider, type(exc).__name__, retryable=True) from exc


def _record(policy: CallPolicy, provider: str, outcome: str) -> None:
    if policy.record is not None:
        policy.record(provider, outcome)


def call_json(
    session: requests.Session,
    provider: str,
    method: str,
    url: str,
    policy: CallPolicy,
    check: Callable[[dict], None] | None = None,
    **kwargs,
) -> dict:
    """Send one request (with retries) and return its JSON object body. `check(body)` may
    raise ProviderError for an answer that is an error in disguise (it is retried if
    retryable)."""
    if policy.remaining() <= 0:
        raise _out_of_time(provider)

    def attempt() -> dict:
        if policy.throttle is not None:
            policy.throttle(provider, max(0.0, policy.remaining()))
        resp = _send(session, provider, method, url, policy, **kwargs)
        code = resp.status_code
        _record(policy, provider, "ok" if code < 400 else "429" if code == 429 else
                f"{code // 100}xx")
        if code >= 400:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if retry_after is not None:
                retry_after = min(retry_after, policy.max_retry_after)
            if code == 429 and policy.penalize is not None:
                policy.penalize(provider, retry_after or 1.0)
            raise ProviderError(provider, f"HTTP {code}", status=code,
                                retryable=code in RETRYABLE_STATUS, retry_after=retry_after)
        try:
            body = resp.json()
        except ValueError as exc:
            raise ProviderError(provider, "answer is not JSON", status=code) from exc
        if not isinstance(body, dict):
            raise ProviderError(provider, "answer is not a JSON object", status=code)
        if check is not None:
            check(body)
        return body

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s attempt %d failed (%s); retrying", provider, state.attempt_number, exc)
        if policy.on_retry is not None and exc is not None:
            policy.on_retry(provider, exc)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if getattr(exc, "status", None) == 429 and policy.penalize is not None:
            return 0.0  # the shared limiter already holds every caller back
        retry_after = getattr(exc, "retry_after", None)
        pause = _backoff(state) if retry_after is None else retry_after
        return min(pause, max(0.0, policy.remaining()))

    def out_of_time(state: RetryCallState) -> bool:
        # tenacity (>= 9) computes the wait before asking to stop: give up now, with the
        # real error, rather than after a sleep that leaves no time for another attempt.
        return policy.remaining() - state.upcoming_sleep <= MIN_ATTEMPT_SECONDS

    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, ProviderError) and e.retryable),
        wait=wait,
        stop=stop_after_attempt(policy.max_attempts) | out_of_time,
        before_sleep=before_sleep,
        sleep=time.sleep,
        reraise=True,
    )
    return retrying(attempt)
