"""Rate limiter: decisions/s from 1, 4 and 16 concurrent clients against raw Redis PING from
the same clients — for a policy whose bucket alone keeps the per-minute limit (pro, elite) and
one that needs the sliding log (core); over-admission when 16 clients hammer one key for
10 s, for both."""

from __future__ import annotations

import threading
import time

import redis

from enrichment.config import load_plans
from enrichment.ratelimit import SUBMIT, Policy, RateLimiter

from .stack import table

URL = "redis://127.0.0.1:6379/12"
SECONDS = 3.0


def hammer(clients: int, seconds: float, op) -> tuple[int, list]:
    """Run op(client_index) in `clients` threads for `seconds`; returns (calls, results)."""
    calls = [0] * clients
    results: list = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        mine = []
        while time.monotonic() < stop:
            mine.append(op(i))
            calls[i] += 1
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(calls), results


def run() -> None:
    conns = [redis.Redis.from_url(URL) for _ in range(16)]
    conns[0].flushdb()
    limiters = [RateLimiter(c, prefix="bench") for c in conns]
    # Always allow, to measure pure cost: the bucket keeps the minute limit (no log) ...
    bucket = Policy("bench", rate=1e9, burst=10**9, limit=61 * 10**9)
    # ... or does not (burst + 60*rate > limit: the sliding log, as for core).
    logged = Policy("bench", rate=1e9, burst=10**9, limit=10**9)
    rows = []
    for clients in (1, 4, 16):
        pings, _ = hammer(clients, SECONDS, lambda i: conns[i].ping())
        # Distinct keys per client, as distinct workspaces would be.
        fast, _ = hammer(clients, SECONDS, lambda i: limiters[i].hit(f"ws{i}", bucket))
        slow, _ = hammer(clients, SECONDS, lambda i: limiters[i].hit(f"wl{i}", logged))
        conns[0].flushdb()
        rows.append([clients, pings / SECONDS, fast / SECONDS, fast / pings, slow / SECONDS,
                     slow / pings])
    table("Limiter: decisions/s vs raw PING (threads, one connection each)",
          ["clients", "PING/s", "bucket/s", "ratio", "bucket+log/s", "ratio"], rows)

    over = []
    for name in ("pro", "core"):
        policy = Policy.for_plan(load_plans()[name], SUBMIT)
        t0 = time.monotonic()
        calls, results = hammer(16, 10.0, lambda i, name=name, policy=policy:
                                limiters[i].hit(f"hot-{name}", policy))
        elapsed = time.monotonic() - t0
        admitted = sorted(d.now for d in results if d.allowed)
        span = admitted[-1] - admitted[0] if admitted else 0.0
        bound = policy.burst + policy.rate * span
        per_minute = max((sum(1 for t in admitted[i:] if t < s + 60)
                          for i, s in enumerate(admitted)), default=0)
        over.append([f"{name}: {policy.rate}/s, burst {policy.burst}, {policy.limit}/min",
                     calls, len(admitted), f"{bound:.1f}", max(0, len(admitted) - int(bound)),
                     per_minute])
    table(f"Over-admission: 16 clients on one key for {elapsed:.1f} s",
          ["plan", "decisions", "admitted", "bound burst+RPS*T", "over-admitted",
           "max in any 60 s"], over)
    conns[0].flushdb()


if __name__ == "__main__":
    run()
