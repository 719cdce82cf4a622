"""Cheap rejection of failed authentication: a client address (or a key prefix) that keeps
presenting bad keys is refused from Redis, before any database lookup — so a flood of bad
keys cannot drain the connection pool that good clients need."""

from __future__ import annotations

import time

import redis

WINDOW_SECONDS = 60


class AuthGuard:
    def __init__(self, client: redis.Redis, per_address: int, per_prefix: int,
                 prefix: str = "authfail"):
        self.redis, self.per_address, self.per_prefix = client, per_address, per_prefix
        self.prefix = prefix

    def _keys(self, address: str, key_prefix: str | None) -> list[str]:
        window = int(time.time() // WINDOW_SECONDS)
        keys = [f"{self.prefix}:ip:{address}:{window}"]
        if key_prefix:
            keys.append(f"{self.prefix}:key:{key_prefix}:{window}")
        return keys

    def blocked(self, address: str, key_prefix: str | None) -> int | None:
        """Seconds to wait if this address (or key prefix) failed too often in this window."""
        counts = self.redis.mget(self._keys(address, key_prefix))
        limits = (self.per_address, self.per_prefix)
        if any(int(n or 0) >= limit for n, limit in zip(counts, limits, strict=False)):
            return WINDOW_SECONDS - int(time.time() % WINDOW_SECONDS)
        return None

    def failed(self, address: str, key_prefix: str | None) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for key in self._keys(address, key_prefix):
                pipe.incr(key)
                pipe.expire(key, 2 * WINDOW_SECONDS)
            pipe.execute()
