"""Cheap rejection of failed authentication: a client address (or a key prefix) that keeps
presenting bad keys is refused from Redis, before any database lookup — so a flood of bad
keys cannot drain the connection pool that good clients need."""

from __future__ import annotations

import hashlib
import time

import redis

WINDOW_SECONDS = 60
KNOWN_SECONDS = 3600  # how long a key that authenticated passes the throttle


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


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

    def check(self, address: str, key_prefix: str | None, key: str) -> tuple[int | None, bool]:
        """(seconds to wait if this address or key prefix failed too often in this window,
        whether this very key authenticated lately). A known key is never held back: guessing
        at a customer's key prefix, or failing from behind the same address, never locks its
        owner out. One Redis round trip."""
        known = f"{self.prefix}:ok:{key_prefix}" if key_prefix else None
        values = self.redis.mget([*self._keys(address, key_prefix), *([known] if known else [])])
        counts = values[:2] if key_prefix else values[:1]
        if known and values[-1] == _digest(key).encode():
            return None, True
        limits = (self.per_address, self.per_prefix)
        if any(int(n or 0) >= limit for n, limit in zip(counts, limits, strict=False)):
            return WINDOW_SECONDS - int(time.time() % WINDOW_SECONDS), False
        return None, False

    def succeeded(self, key_prefix: str, key: str) -> None:
        """Remember that this key authenticated (a digest; the database still decides every
        request, so a revoked key stays refused)."""
        self.redis.set(f"{self.prefix}:ok:{key_prefix}", _digest(key), ex=KNOWN_SECONDS)

    def failed(self, address: str, key_prefix: str | None) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for key in self._keys(address, key_prefix):
                pipe.incr(key)
                pipe.expire(key, 2 * WINDOW_SECONDS)
            pipe.execute()
