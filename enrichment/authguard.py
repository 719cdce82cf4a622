"""Authentication without the database where possible: good keys are cached in Redis
(`KeyCache`, authenticated and rate limited in one call), and a client address (or a key
prefix) that keeps presenting bad keys is refused from Redis before any database lookup — so
a flood of bad keys cannot drain the connection pool that good clients need."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import redis

from .config import Plan, Plans
from .ratelimit import READ, SUBMIT, Decision, Policy, lua, minute_key
from .ratelimit import WINDOW_SECONDS as LIMIT_WINDOW
from .workspaces import Workspace

WINDOW_SECONDS = 60
KNOWN_SECONDS = 3600  # how long after its last success a key passes the throttle
GUARD_PREFIX = "authfail"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def known_mark(key_prefix: str, guard_prefix: str = GUARD_PREFIX) -> str:
    """The Redis key of the mark "this key authenticated lately" (a digest of the key). Every
    success renews it for KNOWN_SECONDS: `AuthGuard.succeeded` after a database lookup,
    lua/authorize.lua on a key-cache hit."""
    return f"{guard_prefix}:ok:{key_prefix}"


class AuthGuard:
    def __init__(self, client: redis.Redis, per_address: int, per_prefix: int,
                 prefix: str = GUARD_PREFIX, known_seconds: int = KNOWN_SECONDS):
        self.redis, self.per_address, self.per_prefix = client, per_address, per_prefix
        self.prefix, self.known_seconds = prefix, known_seconds

    def _keys(self, address: str, key_prefix: str | None) -> list[str]:
        window = int(time.time() // WINDOW_SECONDS)
        keys = [f"{self.prefix}:ip:{address}:{window}"]
        if key_prefix:
            keys.append(f"{self.prefix}:key:{key_prefix}:{window}")
        return keys

    def check(self, address: str, key_prefix: str | None, key: str) -> tuple[int | None, bool]:
        """(seconds to wait if this address or key prefix failed too often in this window,
        whether this very key authenticated successfully in the last `known_seconds`). A
        known key is never held back: guessing at a customer's key prefix, or failing from
        behind the same address, never locks its owner out. One Redis round trip."""
        known = known_mark(key_prefix, self.prefix) if key_prefix else None
        values = self.redis.mget([*self._keys(address, key_prefix), *([known] if known else [])])
        counts = values[:2] if key_prefix else values[:1]
        if known and values[-1] == _digest(key).encode():
            return None, True
        limits = (self.per_address, self.per_prefix)
        if any(int(n or 0) >= limit for n, limit in zip(counts, limits, strict=False)):
            return WINDOW_SECONDS - int(time.time() % WINDOW_SECONDS), False
        return None, False

    def succeeded(self, key_prefix: str, key: str) -> None:
        """Remember that this key authenticated, for another `known_seconds` (a digest: the
        mark only spares the key the failed-auth throttle; it authorizes nothing — a revoked
        key is refused by the database, or by its key-cache entry marked stale). Called on every
        success from the database, known key or not; a key-cache hit renews the mark in its
        own Redis call (`KeyCache.authorize`)."""
        self.redis.set(known_mark(key_prefix, self.prefix), _digest(key), ex=self.known_seconds)

    def failed(self, address: str, key_prefix: str | None) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for key in self._keys(address, key_prefix):
                pipe.incr(key)
                pipe.expire(key, 2 * WINDOW_SECONDS)
            pipe.execute()


CACHE_SECONDS = 300  # how long a good key's entry, or a `stale` mark, lives
STALE = "stale"
# Revocations, journaled in Redis (outside the `apikey:*` cache a restore flushes): a PostgreSQL
# restore undoes the revocations made after its backup point, and they are re-applied from here
# (`workspaces.reapply_revocations`). Kept longer than any backup one would restore.
REVOCATIONS = "keys:revoked"
REVOCATION_DAYS = 400

REMEMBER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


class KeyCache:
    """Good API keys in Redis, with their workspace and its plan's limits: a request whose key
    is cached is authenticated and rate limited in one call (lua/authorize.lua) — no database
    lookup. Only a digest of the key is stored.

    Revocation stays immediate: before a key is revoked, or its workspace's plan, region or
    person-level setting changes, its entry is overwritten with a `stale` mark, and again
    after (`changing`). For CACHE_SECONDS the database then decides every request of that
    key, and nothing can put an older answer back — entries are only written where no key
    exists. An entry written under other plan limits (a process with another plans file) is
    not used: each entry carries a digest of the limits table it was made with.

    A hit is a successful authentication: the same call renews the key's known-key mark
    (`known_mark`, under the `AuthGuard`'s `guard_prefix`, for `known_seconds`), so a key in
    constant use from the cache stays known to the failed-authentication throttle."""

    def __init__(self, client: redis.Redis, plans: Plans, limiter_prefix: str = "rl",
                 guard_prefix: str = GUARD_PREFIX, known_seconds: int = KNOWN_SECONDS):
        self.redis, self.limiter_prefix = client, limiter_prefix
        self.guard_prefix, self.known_seconds = guard_prefix, known_seconds
        self.limits = hashlib.sha256(json.dumps(
            {name: [Policy.for_plan(plans[name], kind) for kind in (SUBMIT, READ)]
             for name in plans.names}, default=repr, sort_keys=True).encode()).hexdigest()[:16]
        self.authorize_script = client.register_script(lua("authorize.lua"))
        self.remember_script = client.register_script(REMEMBER)

    @staticmethod
    def _key(prefix: str) -> str:
        return f"apikey:{prefix}"

    def authorize(self, prefix: str, key: str, kind: str
                  ) -> tuple[Workspace, Decision] | None:
        """The workspace and the rate-limit decision for a cached key (its known-key mark
        renewed); None on a miss. One Redis call."""
        found = self.authorize_script(
            keys=[self._key(prefix), minute_key(), known_mark(prefix, self.guard_prefix)],
            args=[_digest(key), kind, self.limiter_prefix, LIMIT_WINDOW, self.limits,
                  self.known_seconds])
        if not found[0]:
            return None
        ws = json.loads(found[1])
        workspace = Workspace(uuid.UUID(ws["id"]), ws["name"], ws["plan"], ws["region"],
                              ws["person_level_enabled"],
                              datetime.fromisoformat(ws["plan_since"]) if ws["plan_since"]
                              else None, ws.get("livemode", True))
        allowed, remaining, retry_after, reset_after, now, limit = found[2:]
        return workspace, Decision(bool(allowed), int(limit), LIMIT_WINDOW, int(remaining),
                                   float(retry_after), float(reset_after), float(now))

    def remember(self, prefix: str, key: str, workspace: Workspace, plan: Plan) -> None:
        """Cache a key the database just authenticated (unless it is marked stale)."""
        # "id" names the rate-limit bucket: each mode of a workspace has its own.
        fields = {"digest": _digest(key), "limits": self.limits, "id": workspace.bucket,
                  "workspace": json.dumps({
            "id": str(workspace.id), "name": workspace.name, "plan": workspace.plan,
            "region": workspace.region, "person_level_enabled": workspace.person_level_enabled,
            "plan_since": workspace.plan_since.isoformat() if workspace.plan_since else None,
            "livemode": workspace.livemode})}
        for kind in (SUBMIT, READ):
            policy = Policy.for_plan(plan, kind)
            fields |= {f"{kind}:rate": repr(policy.rate), f"{kind}:burst": str(policy.burst),
                       f"{kind}:limit": str(policy.limit)}
        self.remember_script(keys=[self._key(prefix)], args=[
            CACHE_SECONDS * 1000, *(x for pair in fields.items() for x in pair)])

    @contextmanager
    def changing(self, prefixes: Callable[[], list[str]]) -> Iterator[None]:
        """Around a change to keys or their workspace: their entries are marked stale before
        it (from then on every process asks the database) and again once it is done — so a
        database lookup that raced the change, a mark Redis lost in a restart, or a key made
        meanwhile cannot keep an older answer cached."""
        self.forget(prefixes())
        yield
        self.forget(prefixes())

    def journal_revocation(self, prefix: str, at: datetime) -> None:
        """Note a revocation (and drop those older than REVOCATION_DAYS)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(REVOCATIONS, {prefix: at.timestamp()})
            pipe.zremrangebyscore(REVOCATIONS, "-inf", at.timestamp() - REVOCATION_DAYS * 86400)
            pipe.execute()

    def revocations(self) -> list[tuple[str, datetime]]:
        """The journaled revocations, oldest first: (prefix, when)."""
        found: list = self.redis.zrange(REVOCATIONS, 0, -1, withscores=True)
        return [(prefix.decode(), datetime.fromtimestamp(at, UTC)) for prefix, at in found]

    def flush(self) -> int:
        """Drop every cached key entry (after a restore of PostgreSQL or of Redis from an older
        copy). Returns how many."""
        dropped = 0
        batch: list[bytes] = []
        for name in self.redis.scan_iter(match="apikey:*", count=1000):
            batch.append(name)
            if len(batch) == 1000:
                dropped += self.redis.delete(*batch)
                batch = []
        return dropped + (self.redis.delete(*batch) if batch else 0)

    def forget(self, prefixes: list[str]) -> None:
        """Mark these keys stale."""
        with self.redis.pipeline(transaction=False) as pipe:
            for prefix in prefixes:
                pipe.set(self._key(prefix), STALE, ex=CACHE_SECONDS)
            pipe.execute()
