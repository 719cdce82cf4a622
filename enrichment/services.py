"""The one place that turns configuration into the concrete services: database pool, Redis,
provider clients, events. Both `api.create_app()` and the worker's start-up call
`build_services()`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import redis

from . import webhooks
from .authguard import AuthGuard, KeyCache
from .billing import Billing, build_billing
from .config import Settings
from .db import Pool, connect_pool
from .events import Events, build_events
from .jobs.states import NoPublisher, Publisher
from .metrics import PROVIDER_CALLS
from .provider_limits import ProviderLimiter
from .providers import CallPolicy, Provider, Spend, build_providers
from .ratelimit import STATS_TTL, RateLimiter, minute_key


@dataclass
class Services:
    settings: Settings
    db: Pool
    redis: redis.Redis
    providers: dict[str, Provider]  # by name (providers.REGISTRY)
    events: Events
    rate_limiter: RateLimiter
    provider_limiter: ProviderLimiter
    billing: Billing
    auth_guard: AuthGuard
    key_cache: KeyCache
    publisher: Publisher = field(default_factory=NoPublisher)
    base_policy: CallPolicy | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sandbox: dict[str, Provider] | None = None  # test mode's providers (built on first use)
    sandbox_limiter: ProviderLimiter | None = None

    def providers_for(self, livemode: bool) -> dict[str, Provider]:
        """The providers a job of this mode may call: test mode's are the bundled simulators,
        served in-process — whatever provider keys are configured, nothing leaves."""
        if livemode:
            return self.providers
        if self.sandbox is None:
            from simulators.sandbox import build_sandbox

            self.sandbox = build_sandbox(self.settings)
        return self.sandbox

    def limiter_for(self, livemode: bool) -> ProviderLimiter:
        """Test mode has its own (empty) limiter: its calls never spend, slow or suspend the
        real providers' shared limits."""
        if livemode:
            return self.provider_limiter
        if self.sandbox_limiter is None:
            self.sandbox_limiter = ProviderLimiter(self.redis, {}, prefix="sandbox")
        return self.sandbox_limiter

    def notify(self, happened: list[int] | None = None) -> int:
        """Turn job events into webhook messages and send them (`webhooks.notify`): those
        named, or (None) those a crash left behind."""
        return webhooks.notify(self.db, self.publisher, happened)

    def call_policy(self, livemode: bool = True, **overrides) -> CallPolicy:
        """A policy for one round: the service's settings, with its own spend counter. Test
        mode's neither waits for nor counts toward the real providers' limits and alerts (a
        simulated 429's Retry-After is honoured by the round itself)."""
        sandboxed = {} if livemode else {"throttle": None, "penalize": None, "record": None}
        return replace(self.base_policy or CallPolicy(),
                       **{"spend": Spend(), **sandboxed, **overrides})

    def close(self) -> None:
        self.events.flush()
        self.db.close()
        self.redis.close()


def build_services(settings: Settings, publisher: Publisher | None = None) -> Services:
    s = settings
    # Short socket timeouts: a frozen Redis must turn into an error, not a hung request.
    redis_client = redis.Redis.from_url(
        s.redis_url, socket_timeout=1, socket_connect_timeout=1, health_check_interval=30
    )
    provider_limiter = ProviderLimiter(redis_client, s.provider_rates())
    return Services(
        settings=s,
        db=connect_pool(s.database_url, max_size=s.db_pool_max),
        redis=redis_client,
        rate_limiter=RateLimiter(redis_client),
        auth_guard=AuthGuard(redis_client, s.auth_fails_per_address, s.auth_fails_per_key),
        key_cache=KeyCache(redis_client, settings.plans),
        provider_limiter=provider_limiter,
        billing=build_billing(s.stripe_api_key, s.stripe_api_base, s.stripe_timeout),
        providers=build_providers(s),
        events=build_events(s.posthog_api_key, s.posthog_host),
        publisher=publisher or NoPublisher(),
        base_policy=CallPolicy(
            record=_provider_outcome_recorder(redis_client, provider_limiter),
            max_attempts=s.provider_max_attempts,
            budget_seconds=s.provider_round_seconds,
            connect_timeout=s.provider_connect_timeout,
            read_timeout=s.provider_read_timeout,
            max_retry_after=s.provider_max_retry_after,
            throttle=provider_limiter.acquire,
            penalize=provider_limiter.penalize,
        ),
    )


def _provider_outcome_recorder(client: redis.Redis, limiter: ProviderLimiter):
    """Count every provider attempt in Prometheus, and in this minute's Redis counters
    (alerts): the limiter counted the attempt when it gave the slot, so only a failure costs
    a Redis call here (and every attempt, for a provider without a limit)."""

    def record(provider: str, outcome: str) -> None:
        PROVIDER_CALLS.labels(provider, outcome).inc()
        fields = ([] if provider in limiter.intervals else ["provider_attempts"]) + (
            [] if outcome == "ok" else ["provider_fail"])
        if not fields:
            return
        key = minute_key()
        # A metric must never fail a provider call.
        with contextlib.suppress(redis.RedisError), client.pipeline(transaction=False) as pipe:
            for name in fields:
                pipe.hincrby(key, name, 1)
            pipe.expire(key, STATS_TTL)
            pipe.execute()

    return record
