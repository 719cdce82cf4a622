"""Configuration, read once from the environment (every variable: docs/operations.md), and
the plans table as data."""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

DEFAULT_PLANS_FILE = Path(__file__).with_name("plans.toml")
DEFAULT_ALERTS_FILE = Path(__file__).with_name("alerts.toml")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PERPLEXITY_MAX_TOKENS = 4096  # the provider's own ceiling, used when a plan sets no cap


@dataclass(frozen=True)
class Plan:
    name: str
    queue: str
    rps: float
    rpm: int
    included: int
    overage_usd: Decimal
    base_usd: Decimal = Decimal(0)
    max_tokens: int | None = None
    max_searches: int | None = None
    workspace_concurrency: int | None = None

    @property
    def burst(self) -> int:
        """Token-bucket capacity: max(ceil(RPS), RPM - 60*RPS) (docs/architecture.md)."""
        return max(math.ceil(self.rps), int(self.rpm - 60 * self.rps))

    @property
    def hard_cap(self) -> int:
        """Units a period may use before credits (see `cap_for`)."""
        return cap_for(self.included)


def cap_for(included: int) -> int:
    """The hard cap on what `included` units grant: included + 50 % (rounded down) — the one
    place this formula is written."""
    return included + included // 2


@dataclass(frozen=True)
class CreditPack:
    name: str
    units: int
    price_usd: Decimal


@dataclass(frozen=True)
class Plans:
    plans: Mapping[str, Plan]
    queue_weights: Mapping[str, int]
    packs: Mapping[str, CreditPack] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Plan:
        return self.plans[name]

    def __contains__(self, name: object) -> bool:
        return name in self.plans

    @property
    def names(self) -> list[str]:
        return list(self.plans)

    @property
    def queues(self) -> list[str]:
        """Queue names, heaviest first (the order every worker consumes them in)."""
        return sorted(self.queue_weights, key=lambda q: -self.queue_weights[q])


def load_plans(path: str | Path = DEFAULT_PLANS_FILE) -> Plans:
    """The plans table; ValueError naming the file and what is wrong with it."""
    try:
        with open(path, "rb") as fh:
            return _plans(tomllib.load(fh))
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError,
            ArithmeticError) as exc:  # ArithmeticError: decimal's InvalidOperation
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"plans file {path}: {what}") from None


def _money(plan: str, key: str, value, places: int) -> Decimal:
    """A price in USD with at most `places` decimals — what the billing tables and Stripe keep
    (an overage unit price in usage_reports has 4, a base fee is in cents)."""
    amount = Decimal(str(value))
    if not amount.is_finite() or amount < 0 or (
            amount.as_tuple().exponent < -places):  # type: ignore[operator]
        raise ValueError(f"plan {plan!r}: {key} must be a non-negative amount with at most"
                         f" {places} decimals, not {value!r}")
    return amount


def _plans(raw: dict) -> Plans:
    weights = {str(q): int(w) for q, w in raw["queues"].items()}
    plans = {}
    for name, p in raw["plans"].items():
        if p["queue"] not in weights:
            raise ValueError(f"plan {name!r} names unknown queue {p['queue']!r}")
        plans[name] = Plan(
            name=name,
            queue=p["queue"],
            rps=float(p["rps"]),
            rpm=int(p["rpm"]),
            included=int(p["included"]),
            overage_usd=_money(name, "overage_usd", p["overage_usd"], 4),
            base_usd=_money(name, "base_usd", p.get("base_usd", "0"), 2),
            max_tokens=p.get("max_tokens"),
            max_searches=p.get("max_searches"),
            workspace_concurrency=p.get("workspace_concurrency"),
        )
    packs = {str(name): CreditPack(str(name), int(p["units"]), Decimal(str(p["price_usd"])))
             for name, p in raw.get("packs", {}).items()}
    return Plans(plans=plans, queue_weights=weights, packs=packs)


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    try:
        return float(env.get(key) or default)
    except ValueError:
        raise ValueError(f"{key} must be a number, not {env.get(key)!r}") from None


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    try:
        return int(env.get(key) or default)
    except ValueError:
        raise ValueError(f"{key} must be a whole number, not {env.get(key)!r}") from None


def _port(env: Mapping[str, str], key: str) -> int | None:
    port = _int(env, key, 0)
    if not 0 <= port <= 65535:
        raise ValueError(f"{key} must be a TCP port, not {env.get(key)!r}")
    return port or None


def ca_bundle(env: Mapping[str, str] | None = None) -> str | None:
    """The CA file provider sessions verify with: REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE
    (the order requests itself reads them in); None for the bundled CAs."""
    env = os.environ if env is None else env
    return env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or None


def _readable_toml(env: Mapping[str, str], key: str, default: Path) -> Path:
    path = Path(env.get(key) or default)
    try:
        with open(path, "rb") as fh:
            tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{key}: {exc}") from None
    return path


def _choice(env: Mapping[str, str], key: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(key) or default
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}, not {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql:///enrichment"
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = "redis://127.0.0.1:6379/0"
    perplexity_api_key: str | None = None
    perplexity_api_base: str = "https://api.perplexity.ai"
    perplexity_api_style: str = "agent"
    perplexity_model: str | None = None  # default: perplexity/sonar (agent), sonar (chat)
    perplexity_plan_rps: float = 2.0
    social_links_api_key: str | None = None
    social_links_api_base: str = "https://social-links-search.p.rapidapi.com"
    social_links_plan_rps: float = 10.0
    hunter_api_key: str | None = None
    hunter_api_base: str = "https://api.hunter.io"
    # Hunter's documented per-key limits, per endpoint: per second and per minute.
    hunter_finder_rps: float = 15.0
    hunter_finder_rpm: float = 500.0
    hunter_verifier_rps: float = 10.0
    hunter_verifier_rpm: float = 300.0
    hunter_usd_per_credit: Decimal = Decimal("0.0245")  # Starter: $49 for 2,000 credits
    provider_safety_factor: float = 0.8
    provider_connect_timeout: float = 3.05
    provider_read_timeout: float = 25.0
    provider_max_attempts: int = 5
    provider_round_seconds: float = 30.0  # the time one job's provider round may take
    provider_max_retry_after: float = 60.0  # a provider's Retry-After is honoured up to this
    ca_bundle: str | None = None  # provider sessions' CA file (REQUESTS_CA_BUNDLE, CURL_…)
    # Prices used when a provider does not report its own cost (USD).
    perplexity_usd_per_1k_tokens: Decimal = Decimal("0.001")
    perplexity_usd_per_search: Decimal = Decimal("0.005")
    social_links_usd_per_request: Decimal = Decimal("0.002")
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_timeout: float = 10.0  # every Stripe call: an API worker must not hang on Stripe
    # Where Stripe Checkout sends the buyer back: configuration, never the request's Host.
    checkout_success_url: str = "http://localhost:8000/?checkout=success"
    checkout_cancel_url: str = "http://localhost:8000/?checkout=cancel"
    posthog_api_key: str | None = None
    posthog_host: str | None = None
    worker_concurrency: int = 8  # Celery's worker_concurrency: a `-c` on the command line wins
    worker_metrics_port: int | None = None  # a worker serves its host's metrics on this port
    worker_metrics_host: str = "127.0.0.1"  # ...on this address (0.0.0.0: every interface)
    workspace_concurrency: int = 1
    job_lease_seconds: int = 300
    outbox_relay_after_seconds: int = 30
    lost_message_seconds: int = 900  # queued this long with no outbox row: publish again
    max_body_bytes: int = 1024 * 1024
    # Failed authentications per minute before an address (or key prefix) is refused from
    # Redis, without a database lookup.
    auth_fails_per_address: int = 30
    auth_fails_per_key: int = 10
    metrics_token: str | None = None  # GET /metrics requires it as a bearer token when set
    trusted_proxies: int = 0  # X-Forwarded-For hops to trust for the client address
    webhooks_allow_private_urls: bool = False  # development and tests: http, private hosts
    console_insecure_cookies: bool = False  # the console's cookie over plain http (local use)
    webhook_endpoint_concurrency: int = 2  # deliveries to one endpoint at once
    db_pool_max: int = 10
    retention_raw_days: int = 90
    retention_summary_days: int = 365
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one JSON object per line, for log shippers
    alerts_file: Path = DEFAULT_ALERTS_FILE
    alertmanager_url: str | None = None  # in-service alerts go to Alertmanager too when set
    plans: Plans = field(default_factory=load_plans)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        redis_url = env.get("REDIS_URL") or cls.redis_url
        style = _choice(env, "PERPLEXITY_API_STYLE", cls.perplexity_api_style,
                        ("agent", "chat"))
        factor = _float(env, "PROVIDER_SAFETY_FACTOR", cls.provider_safety_factor)
        if not 0 < factor <= 1:
            raise ValueError("PROVIDER_SAFETY_FACTOR must be in (0, 1]")
        return cls(
            database_url=env.get("DATABASE_URL") or cls.database_url,
            redis_url=redis_url,
            broker_url=env.get("CELERY_BROKER_URL") or redis_url,
            perplexity_api_key=env.get("PERPLEXITY_API_KEY") or None,
            perplexity_api_base=(
                env.get("PERPLEXITY_API_BASE") or cls.perplexity_api_base
            ).rstrip("/"),
            perplexity_api_style=style,
            perplexity_model=env.get("PERPLEXITY_MODEL") or None,
            perplexity_plan_rps=_float(env, "PERPLEXITY_PLAN_RPS", cls.perplexity_plan_rps),
            social_links_api_key=env.get("SOCIAL_LINKS_API_KEY") or None,
            social_links_api_base=(
                env.get("SOCIAL_LINKS_API_BASE") or cls.social_links_api_base
            ).rstrip("/"),
            social_links_plan_rps=_float(env, "SOCIAL_LINKS_PLAN_RPS", cls.social_links_plan_rps),
            hunter_api_key=env.get("HUNTER_API_KEY") or None,
            hunter_api_base=(env.get("HUNTER_API_BASE") or cls.hunter_api_base).rstrip("/"),
            hunter_finder_rps=_float(env, "HUNTER_FINDER_RPS", cls.hunter_finder_rps),
            hunter_finder_rpm=_float(env, "HUNTER_FINDER_RPM", cls.hunter_finder_rpm),
            hunter_verifier_rps=_float(env, "HUNTER_VERIFIER_RPS", cls.hunter_verifier_rps),
            hunter_verifier_rpm=_float(env, "HUNTER_VERIFIER_RPM", cls.hunter_verifier_rpm),
            provider_safety_factor=factor,
            provider_read_timeout=_float(env, "PROVIDER_READ_TIMEOUT", cls.provider_read_timeout),
            provider_max_attempts=_int(env, "PROVIDER_MAX_ATTEMPTS", cls.provider_max_attempts),
            provider_round_seconds=_float(
                env, "PROVIDER_ROUND_SECONDS", cls.provider_round_seconds),
            provider_max_retry_after=_float(
                env, "PROVIDER_MAX_RETRY_AFTER", cls.provider_max_retry_after),
            ca_bundle=ca_bundle(env),
            stripe_api_key=env.get("STRIPE_API_KEY") or None,
            stripe_api_base=env.get("STRIPE_API_BASE") or None,
            stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET") or None,
            stripe_timeout=min(10.0, max(1.0, _float(env, "STRIPE_TIMEOUT",
                                                      cls.stripe_timeout))),
            checkout_success_url=env.get("CHECKOUT_SUCCESS_URL") or cls.checkout_success_url,
            checkout_cancel_url=env.get("CHECKOUT_CANCEL_URL") or cls.checkout_cancel_url,
            posthog_api_key=env.get("POSTHOG_API_KEY") or None,
            posthog_host=env.get("POSTHOG_HOST") or None,
            worker_concurrency=_int(env, "WORKER_CONCURRENCY", cls.worker_concurrency),
            worker_metrics_port=_port(env, "WORKER_METRICS_PORT"),
            worker_metrics_host=env.get("WORKER_METRICS_HOST") or cls.worker_metrics_host,
            workspace_concurrency=_int(env, "WORKSPACE_CONCURRENCY", cls.workspace_concurrency),
            job_lease_seconds=_int(env, "JOB_LEASE_SECONDS", cls.job_lease_seconds),
            outbox_relay_after_seconds=_int(
                env, "OUTBOX_RELAY_AFTER_SECONDS", cls.outbox_relay_after_seconds
            ),
            db_pool_max=_int(env, "DB_POOL_MAX", cls.db_pool_max),
            auth_fails_per_address=_int(env, "AUTH_FAILS_PER_ADDRESS",
                                        cls.auth_fails_per_address),
            auth_fails_per_key=_int(env, "AUTH_FAILS_PER_KEY", cls.auth_fails_per_key),
            metrics_token=env.get("METRICS_TOKEN") or None,
            trusted_proxies=_int(env, "TRUSTED_PROXIES", cls.trusted_proxies),
            webhooks_allow_private_urls=(env.get("WEBHOOKS_ALLOW_PRIVATE_URLS") or "").lower()
            in ("1", "true", "yes"),
            console_insecure_cookies=(env.get("CONSOLE_INSECURE_COOKIES") or "").lower()
            in ("1", "true", "yes"),
            webhook_endpoint_concurrency=_int(env, "WEBHOOK_ENDPOINT_CONCURRENCY",
                                              cls.webhook_endpoint_concurrency),
            lost_message_seconds=_int(env, "LOST_MESSAGE_SECONDS", cls.lost_message_seconds),
            retention_raw_days=_int(env, "RETENTION_RAW_DAYS", cls.retention_raw_days),
            retention_summary_days=_int(
                env, "RETENTION_SUMMARY_DAYS", cls.retention_summary_days),
            log_level=_choice({"LOG_LEVEL": (env.get("LOG_LEVEL") or "").upper()}, "LOG_LEVEL",
                              cls.log_level, LOG_LEVELS),
            log_format=_choice({"LOG_FORMAT": (env.get("LOG_FORMAT") or "").lower()},
                               "LOG_FORMAT", cls.log_format, ("text", "json")),
            alerts_file=_readable_toml(env, "ALERTS_FILE", DEFAULT_ALERTS_FILE),
            alertmanager_url=(env.get("ALERTMANAGER_URL") or "").rstrip("/") or None,
            plans=load_plans(env.get("PLANS_FILE") or DEFAULT_PLANS_FILE),
        )

    def slots(self, plan_name: str) -> int:
        """Jobs of one workspace on this plan that may run at once."""
        return self.plans[plan_name].workspace_concurrency or self.workspace_concurrency

    @property
    def perplexity_rps(self) -> float:
        return self.perplexity_plan_rps * self.provider_safety_factor

    @property
    def social_links_rps(self) -> float:
        return self.social_links_plan_rps * self.provider_safety_factor

    def provider_rates(self) -> dict[str, float]:
        """Requests per second each provider endpoint may get from all workers together:
        the safety factor's share of its documented limit. Where a limit has a per-minute
        window too (Hunter), the rate is the tighter of the two, and a smooth rate r lets at
        most floor(60 r) + 1 requests into any minute — so (N - 1) / 60 for N a minute."""
        f = self.provider_safety_factor

        def both(rps: float, rpm: float) -> float:
            return min(rps * f, max(1.0, rpm * f - 1) / 60)

        return {"perplexity": self.perplexity_rps, "social_links": self.social_links_rps,
                "hunter_finder": both(self.hunter_finder_rps, self.hunter_finder_rpm),
                "hunter_verifier": both(self.hunter_verifier_rps, self.hunter_verifier_rpm)}
