"""Per-workspace API rate limits (docs/architecture.md#per-workspace-api-rate-limit): token
bucket + sliding 60 s log, decided by one Lua call on the Redis server's clock
(`lua/rate_limit.lua`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from importlib import resources

import redis

from .config import Plan

TEST_BUCKET = ":test"  # a test-mode key's bucket: "<workspace id>:test" (Workspace.bucket)
STATS_TTL = 7200  # seconds a minute's counters are kept (alert windows are shorter)


def minute_key(at: float | None = None) -> str:
    """This minute's counters hash (requests, rejections, provider outcomes) for alerts; it
    expires after STATS_TTL (rate_limit.lua and the provider counter set it)."""
    return f"stats:{int((at if at is not None else time.time()) // 60)}"


SUBMIT = "submit"
READ = "read"
READ_MULTIPLIER = 10  # reads get 10x the plan's rate, so polling never eats submission quota
WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Policy:
    name: str
    rate: float  # tokens per second
    burst: int
    limit: int  # per window
    window: int = WINDOW_SECONDS

    @classmethod
    def for_plan(cls, plan: Plan, kind: str = SUBMIT) -> Policy:
        m = READ_MULTIPLIER if kind == READ else 1
        return cls(kind, plan.rps * m, plan.burst * m, plan.rpm * m)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    window: int
    remaining: int
    retry_after: float  # seconds; 0 when allowed
    reset_after: float  # seconds until more quota is available
    now: float  # Redis server time

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))

    def headers(self) -> dict[str, str]:
        """RateLimit / RateLimit-Policy (draft-ietf-httpapi-ratelimit-headers-10) and the
        X-RateLimit-* trio (X-RateLimit-Reset in Unix epoch seconds, the GitHub convention)."""
        t = math.ceil(self.retry_after if not self.allowed else self.reset_after)
        headers = {
            "RateLimit-Policy": f'"minute";q={self.limit};w={self.window}',
            "RateLimit": f'"minute";r={self.remaining};t={t}',
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.now + t)),
        }
        if not self.allowed:
            headers["Retry-After"] = self.retry_after_header
        return headers


def lua(name: str) -> str:
    """A script of enrichment/lua with the limiter's `decide` function (limit.lua) before it."""
    files = resources.files("enrichment") / "lua"
    return (files / "limit.lua").read_text() + "\n" + (files / name).read_text()


class RateLimiter:
    def __init__(self, client: redis.Redis, prefix: str = "rl"):
        # EVALSHA, loaded on first NOSCRIPT
        self.script = client.register_script(lua("rate_limit.lua"))
        self.prefix = prefix

    def hit(self, subject: str, policy: Policy, stats: bool = True) -> Decision:
        """One token of `subject`'s bucket. `stats`: counted for the rejection-rate alert
        (not a test-mode bucket's, nor a background waiter's)."""
        # One hash tag per subject keeps both keys on one Redis Cluster slot.
        base = f"{self.prefix}:{{{subject}}}:{policy.name}"
        counted = [minute_key()] if stats and not subject.endswith(TEST_BUCKET) else []
        allowed, remaining, retry_after, reset_after, now = self.script(
            keys=[base, f"{base}:log", *counted],
            args=[policy.rate, policy.burst, policy.limit, policy.window],
        )
        return Decision(bool(allowed), policy.limit, policy.window, int(remaining),
                        float(retry_after), float(reset_after), float(now))
