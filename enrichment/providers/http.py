"""The one HTTP call path every provider client uses: a hard time bound, and retries.

A provider round (every call one job makes) has a deadline. Each attempt's connect and read
timeouts are cut to the time left in the round, the body is read against the same deadline,
and no attempt or backoff starts past it: a round never outlasts its budget by more than a
scheduling hiccup.

Retried: 429, 5xx, connection errors, and answers a `check` calls transient (a Perplexity run
that failed inside an HTTP 200) — with exponential backoff and full jitter, or the server's
Retry-After (capped). Final: every other 4xx, a malformed answer, and a paid POST that went
out without a complete answer coming back (a read timeout, a reset connection, a body cut
short, a gateway's 502/504): the provider may still be running — and billing — it, so it is
not re-sent blindly; the job ends `dead` with that reason and can be replayed. A POST that
never left (connection refused, connect timeout) is retried.
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
    stop_any,
    wait_random_exponential,
)
from tenacity.stop import stop_base

log = logging.getLogger(__name__)
# At DEBUG urllib3 logs every request line, and provider requests carry the lead (Social
# Links takes the person's name in its query string): personal data must not reach logs.
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
GATEWAY_TIMEOUTS = frozenset({502, 504})
CHUNK = 64 * 1024
MIN_ATTEMPT_SECONDS = 0.1  # less time than this left in the round: no new attempt
IDLE_REUSE_SECONDS = 4.0  # a pooled connection idle longer than this is not reused


class ProviderError(Exception):
    """A provider call that did not produce a usable answer. `retryable`: worth another try
    (the job ends `dead` when tries run out); `uncertain`: a paid request that may still have
    run — not retried, and the job ends `dead` rather than `failed`; `busy`: not sent at all,
    the shared provider limit has no slot within the round (the job waits and runs later)."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        uncertain: bool = False,
        busy: bool = False,
        quota: bool = False,
    ):
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.uncertain = uncertain
        self.busy = busy
        self.quota = quota  # the provider's plan quota is used up: not retried

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
    hunter_credits: Decimal = Decimal(0)  # Email Finder: 1 per address found; Verifier: 0.5

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
    sent: int = 0  # requests that went out in this round
    last_status: int | None = None  # the HTTP status of the last answer

    def remaining(self) -> float:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.budget_seconds
        return self.deadline - time.monotonic()


def _out_of_time(provider: str) -> ProviderError:
    return ProviderError(provider, "provider round out of time", retryable=True)


class ProviderSession(requests.Session):
    """A session that does not reuse a connection left idle for IDLE_REUSE_SECONDS: servers
    close idle connections (load balancers after 60 s and more, some servers after a few
    seconds), and a paid POST written into a connection the server is closing at that moment
    would fail without an answer, uncertain. Busy workers reuse theirs; idle ones reconnect."""

    last_used = 0.0

    def request(self, *args, **kwargs):
        now = time.monotonic()
        if now - self.last_used > IDLE_REUSE_SECONDS:
            self.close()  # drops the pooled connections; the next request connects anew
        self.last_used = now
        return super().request(*args, **kwargs)


def new_session(base: str, ca_bundle: str | None = None) -> ProviderSession:
    """A keep-alive session for one provider's base URL, verifying with `ca_bundle` (a CA
    file, `Settings.ca_bundle`; None: the bundled CAs). What requests
    would read from the environment and merge again on every request is read once, here:
    proxy settings (HTTPS_PROXY, NO_PROXY, …) for that URL, by requests itself. (Credentials
    from ~/.netrc are not used: each provider sends its own key.)"""
    session = ProviderSession()
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(base)
    if ca_bundle:
        session.verify = ca_bundle
    return session


def _send(session: requests.Session, provider: str, method: str, url: str,
          policy: CallPolicy, **kwargs) -> requests.Response:
    """One attempt, bounded by the round's deadline: connect and headers by the timeouts
    (cut to the time left), the body read one socket read at a time, each given only the
    time left. Anything that goes wrong after a paid POST went out is `uncertain`."""
    left = policy.remaining()
    if left <= 0:
        raise _out_of_time(provider)
    paid = method.upper() == "POST"
    timeout = (min(policy.connect_timeout, left), min(policy.read_timeout, left))
    try:
        resp = session.request(method, url, timeout=timeout, stream=True, **kwargs)
    except requests.RequestException as exc:
        if _never_sent(exc):
            _record(policy, provider, "connection_error")
            raise ProviderError(provider, type(exc).__name__, retryable=True) from exc
        policy.sent += 1
        _record(policy, provider, "timeout")
        if paid:
            raise _uncertain(provider, min(policy.read_timeout, left)) from exc
        raise ProviderError(provider, type(exc).__name__, retryable=True) from exc
    policy.sent += 1
    policy.last_status = resp.status_code
    try:
        resp._content = _read_body(resp, policy)
    except BaseException as exc:
        resp.close()  # a connection in an unknown state is not reused
        if not isinstance(exc, (requests.RequestException, urllib3.exceptions.HTTPError,
                                OSError)):
            raise  # the task's time limit, a shutdown
        _record(policy, provider, "timeout")
        if paid:
            raise _uncertain(provider, left) from exc
        raise ProviderError(provider, type(exc).__name__, retryable=True) from exc
    resp.raw.release_conn()  # read to the end: the connection goes back for the next call
    return resp


def _read_body(resp: requests.Response, policy: CallPolicy) -> bytes:
    sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
    body = bytearray()
    while True:
        left = policy.remaining()
        if left <= 0:
            raise TimeoutError("answer not complete by the round's deadline")
        if sock is not None:
            sock.settimeout(left)
        chunk = resp.raw.read1(CHUNK, decode_content=True)  # one socket read at most
        if not chunk:
            return bytes(body)
        body += chunk


def _never_sent(exc: requests.RequestException) -> bool:
    """The connection was never made: nothing reached the provider."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", cause)
    return isinstance(reason, (urllib3.exceptions.NewConnectionError,
                               urllib3.exceptions.ConnectTimeoutError))


def _uncertain(provider: str, waited: float) -> ProviderError:
    return ProviderError(provider, f"no complete answer within {waited:.1f}s; not re-sent:"
                         " the provider may still run and bill it", uncertain=True)


def _record(policy: CallPolicy, provider: str, outcome: str) -> None:
    if policy.record is not None:
        policy.record(provider, outcome)


class OutOfTime(stop_base):
    """Stop when the round's time left, after the coming wait, is too short for another
    attempt. tenacity (>= 9) computes the wait before asking to stop: the caller gets the
    real error now rather than after a sleep that leaves no time."""

    def __init__(self, policy: CallPolicy):
        self.policy = policy

    def __call__(self, state: RetryCallState) -> bool:
        return self.policy.remaining() - state.upcoming_sleep <= MIN_ATTEMPT_SECONDS


def call_json(
    session: requests.Session,
    provider: str,
    method: str,
    url: str,
    policy: CallPolicy,
    check: Callable[[dict], None] | None = None,
    throttled_status: int = 429,
    quota_status: int | None = None,
    **kwargs,
) -> dict:
    """Send one request (with retries) and return its JSON object body. `check(body)` may
    raise ProviderError for an answer that is an error in disguise (it is retried if
    retryable). `throttled_status`: the status the provider answers when its rate limit is
    hit (429; Hunter says 403) — retried after the shared limiter holds every caller back;
    `quota_status`: the status that means the plan's quota is used up (Hunter's 429) — final,
    never retried."""
    if policy.remaining() <= 0:
        raise _out_of_time(provider)

    def attempt() -> dict:
        if policy.throttle is not None:
            # a slot that would leave no time to send is not taken (nor counted an attempt)
            policy.throttle(provider, max(0.0, policy.remaining() - MIN_ATTEMPT_SECONDS))
        resp = _send(session, provider, method, url, policy, **kwargs)
        code = resp.status_code
        throttled = code == throttled_status
        _record(policy, provider, "ok" if code < 400 else "429" if throttled else
                f"{code // 100}xx")
        if code >= 400:
            if code == quota_status:
                raise ProviderError(provider, f"HTTP {code}: quota used up", status=code,
                                    quota=True)
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if retry_after is not None:
                retry_after = min(retry_after, policy.max_retry_after)
            if throttled and policy.penalize is not None:
                policy.penalize(provider, retry_after or 1.0)
            if method.upper() == "POST" and code in GATEWAY_TIMEOUTS:
                # A gateway gave up waiting; the provider behind it may still run it.
                raise ProviderError(provider, f"HTTP {code}; not re-sent: the provider may"
                                    " still run and bill it", status=code, uncertain=True)
            raise ProviderError(provider, f"HTTP {code}", status=code,
                                retryable=throttled or code in RETRYABLE_STATUS,
                                retry_after=retry_after)
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
        if getattr(exc, "status", None) == throttled_status and policy.penalize is not None:
            return 0.0  # the shared limiter already holds every caller back
        retry_after = getattr(exc, "retry_after", None)
        pause = _backoff(state) if retry_after is None else retry_after
        return min(pause, max(0.0, policy.remaining()))

    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, ProviderError) and e.retryable),
        wait=wait,
        stop=stop_any(stop_after_attempt(policy.max_attempts), OutOfTime(policy)),
        before_sleep=before_sleep,
        sleep=time.sleep,
        reraise=True,
    )
    return retrying(attempt)
