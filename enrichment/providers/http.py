"""The one HTTP call path every provider client uses: timeouts, and retries with backoff.

Retried: 429, 5xx, connection errors and timeouts — with exponential backoff and full jitter,
or the server's Retry-After when it gives one. Final: every other 4xx, and a malformed answer.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

log = logging.getLogger(__name__)
# At DEBUG urllib3 logs every request line, and provider requests carry the lead (Social
# Links takes the person's name in its query string): personal data must not reach logs.
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 30.0


class ProviderError(Exception):
    """A provider call that did not produce a usable answer."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ):
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


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
class CallPolicy:
    """How hard one provider round tries: attempts, total time, per-request timeouts.

    `throttle(provider, max_wait)` runs before every attempt and `penalize(provider,
    retry_after)` after a 429 (the global provider limiter plugs in here); `on_retry(provider,
    exc)` is told about each failed attempt that will be retried. `deadline` (monotonic) ends
    the whole provider round: no call or retry starts past it.
    """

    max_attempts: int = 5
    budget_seconds: float = 30.0
    connect_timeout: float = 3.05
    read_timeout: float = 25.0
    deadline: float | None = None
    throttle: Callable[[str, float], float] | None = None
    penalize: Callable[[str, float], None] | None = None
    record: Callable[[str, str], None] | None = None  # (provider, outcome) of every attempt
    on_retry: Callable[[str, BaseException], None] | None = None

    def remaining(self) -> float:
        if self.deadline is None:
            return self.budget_seconds
        return min(self.budget_seconds, self.deadline - time.monotonic())


def call_json(
    session: requests.Session,
    provider: str,
    method: str,
    url: str,
    policy: CallPolicy,
    **kwargs,
) -> dict:
    """Send one request (with retries) and return its JSON object body."""

    budget = policy.remaining()
    if budget <= 0:
        raise ProviderError(provider, "provider round out of time", retryable=True)

    def attempt() -> dict:
        if policy.throttle is not None:
            policy.throttle(provider, max(0.0, policy.remaining()))
        try:
            resp = session.request(
                method, url, timeout=(policy.connect_timeout, policy.read_timeout), **kwargs
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            if policy.record is not None:
                policy.record(provider, "connection_error")
            raise ProviderError(provider, f"{type(exc).__name__}", retryable=True) from exc
        if policy.record is not None:
            code = resp.status_code
            policy.record(provider, "ok" if code < 400 else "429" if code == 429 else
                          f"{code // 100}xx")
        if resp.status_code >= 400:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if resp.status_code == 429 and policy.penalize is not None:
                policy.penalize(provider, retry_after or 1.0)
            raise ProviderError(
                provider,
                f"HTTP {resp.status_code}",
                status=resp.status_code,
                retryable=resp.status_code in RETRYABLE_STATUS,
                retry_after=retry_after,
            )
        try:
            body = resp.json()
        except ValueError as exc:
            raise ProviderError(provider, "answer is not JSON", status=resp.status_code) from exc
        if not isinstance(body, dict):
            raise ProviderError(provider, "answer is not a JSON object", status=resp.status_code)
        return body

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s attempt %d failed (%s); retrying", provider, state.attempt_number, exc
        )
        if policy.on_retry is not None and exc is not None:
            policy.on_retry(provider, exc)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if getattr(exc, "status", None) == 429 and policy.penalize is not None:
            return 0.0  # the shared limiter already holds every caller back
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER, max(0.0, policy.remaining()))
        return _backoff(state)

    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, ProviderError) and e.retryable),
        wait=wait,
        stop=stop_after_attempt(policy.max_attempts) | stop_after_delay(budget),
        before_sleep=before_sleep,
        sleep=time.sleep,
        reraise=True,
    )
    return retrying(attempt)
