"""Global provider rate limits: the 80% rule across every worker
(docs/architecture.md#global-provider-limits-the-80-rule).

Celery's own `rate_limit` is per worker and cannot hold a limit shared by many processes and
machines; this one lives in Redis (`lua/provider_slot.lua`). A caller reserves the next slot
and sleeps until it — holding no database connection — then calls the provider. Reserving a
slot also counts the attempt for the provider-success alert, in the same call.
"""

from __future__ import annotations

import time
from importlib import resources

import redis

from .providers import ProviderError
from .ratelimit import minute_key


class ProviderLimiter:
    def __init__(self, client: redis.Redis, rates: dict[str, float], prefix: str = "provider",
                 sleep=time.sleep):
        source = (resources.files("enrichment") / "lua" / "provider_slot.lua").read_text()
        self.client = client
        self.script = client.register_script(source)
        self.intervals = {name: 1.0 / rate for name, rate in rates.items() if rate > 0}
        self.prefix = prefix
        self.sleep = sleep

    def _key(self, provider: str) -> str:
        return f"{self.prefix}:{provider}:tat"

    def acquire(self, provider: str, max_wait: float = 30.0) -> float:
        """Wait for this caller's slot; returns the seconds waited. A slot further away than
        `max_wait` is not taken: ProviderError (retryable) instead."""
        interval = self.intervals.get(provider)
        if interval is None:
            return 0.0
        reserved, wait = self.script(keys=[self._key(provider), minute_key()],
                                     args=[interval, max_wait, 0])
        wait = float(wait)
        if not reserved:
            raise ProviderError(provider, f"next request slot is {wait:.1f}s away",
                                retryable=True, retry_after=wait, busy=True)
        if wait > 0:
            self.sleep(wait)
        return wait

    def penalize(self, provider: str, retry_after: float) -> None:
        """The provider said 429: every worker holds off for `retry_after` seconds."""
        if provider in self.intervals and retry_after > 0:
            self.script(keys=[self._key(provider)], args=[self.intervals[provider], 0,
                                                          retry_after])

    def suspend(self, provider: str, seconds: float) -> None:
        """The provider's plan quota is used up (Hunter's 429): no worker asks it again for
        `seconds` (until the quota resets)."""
        if seconds > 0:
            self.client.set(f"{self.prefix}:{provider}:suspended", "1",
                            px=max(1, int(seconds * 1000)))

    def suspended(self, *providers: str) -> set[str]:
        """Which of these providers are suspended (one Redis call)."""
        if not providers:
            return set()
        marks = self.client.mget([f"{self.prefix}:{p}:suspended" for p in providers])
        return {p for p, mark in zip(providers, marks, strict=True) if mark is not None}
