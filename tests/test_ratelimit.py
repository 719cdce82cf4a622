"""The Lua limiter on the real Redis: its invariants, its headers, its keys."""

from __future__ import annotations

import threading
import time

import pytest

from enrichment.config import load_plans
from enrichment.ratelimit import READ, SUBMIT, Decision, Policy, RateLimiter


@pytest.fixture
def limiter(db):
    return RateLimiter(db.redis, prefix=f"rl-test-{time.monotonic_ns()}")


def test_policies_follow_the_plan():
    pro = load_plans()["pro"]
    assert Policy.for_plan(pro, SUBMIT) == Policy(SUBMIT, 1.0, 30, 90)
    assert Policy.for_plan(pro, READ) == Policy(READ, 10.0, 300, 900)


def test_burst_then_refusal_with_retry_after(limiter):
    policy = Policy("t", rate=0.5, burst=3, limit=100)
    decisions = [limiter.hit("ws", policy) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    denied = decisions[-1]
    assert 1.5 < denied.retry_after <= 2.0  # one token at 0.5/s
    assert denied.headers()["Retry-After"] == "2"


def test_subjects_are_independent(limiter):
    policy = Policy("t", rate=0.1, burst=1, limit=10)
    assert limiter.hit("a", policy).allowed and limiter.hit("b", policy).allowed
    assert not limiter.hit("a", policy).allowed


def test_sliding_window_caps_what_the_bucket_would_allow(limiter):
    # A bucket refilling at 50/s would admit ~all; the log allows only 5 per 60 s.
    policy = Policy("t", rate=50, burst=50, limit=5)
    allowed = [limiter.hit("ws", policy).allowed for _ in range(20)]
    assert allowed.count(True) == 5
    last = limiter.hit("ws", policy)
    assert not last.allowed and 55 < last.retry_after <= 60


def test_invariants_hold_under_concurrent_clients(limiter):
    """16 threads hammer one key for 3 s: admitted ≤ burst + rate·T, and ≤ limit in any
    window, judged on the Redis server's own timestamps."""
    policy = Policy("t", rate=20, burst=5, limit=30, window=1)
    admitted: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 3

    def client():
        while time.monotonic() < stop:
            d = limiter.hit("hot", policy)
            if d.allowed:
                with lock:
                    admitted.append(d.now)

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    admitted.sort()
    assert admitted
    span = admitted[-1] - admitted[0]
    assert len(admitted) <= policy.burst + policy.rate * span + 1
    for i, start in enumerate(admitted):  # sliding window, every start point
        in_window = sum(1 for t in admitted[i:] if t < start + policy.window)
        assert in_window <= policy.limit


def test_keys_expire_on_their_own(limiter, db):
    limiter.hit("ws", Policy("t", rate=1, burst=2, limit=10, window=60))
    keys = list(db.redis.scan_iter(f"{limiter.prefix}:*"))
    assert len(keys) == 2
    assert all(0 < db.redis.pttl(k) <= 61_000 for k in keys)


def test_headers_follow_the_draft_and_github_conventions():
    d = Decision(allowed=True, limit=90, window=60, remaining=57, retry_after=0,
                 reset_after=0.4, now=1_700_000_000.2)
    assert d.headers() == {
        "RateLimit-Policy": '"minute";q=90;w=60',
        "RateLimit": '"minute";r=57;t=1',
        "X-RateLimit-Limit": "90",
        "X-RateLimit-Remaining": "57",
        "X-RateLimit-Reset": "1700000002",
    }
    denied = Decision(False, 90, 60, 0, 0.2, 0.2, 1_700_000_000.0)
    assert denied.headers()["Retry-After"] == "1"
    assert denied.headers()["RateLimit"] == '"minute";r=0;t=1'
