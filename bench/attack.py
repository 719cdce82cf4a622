"""A bad-key flood against the API under gunicorn: 5,000 requests with random API keys at full
speed from one address (127.0.0.2), while a good client submits at its plan's rate from
another (127.0.0.1) — against the good client alone as the baseline. Failed authentications
past AUTH_FAILS_PER_ADDRESS a minute are refused from Redis, before any database lookup."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import secrets
import statistics
import threading
import time

import psycopg

from .stack import BENCH_DB, Stack, create_workspace, fresh_database, table

BAD_REQUESTS = 5_000
ATTACKERS = 4
GOOD_RATE = 5.0  # the scale plan's submissions per second


def _attacker(args) -> dict[int, int]:
    port, n = args
    statuses: dict[int, int] = {}
    for _ in range(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                          source_address=("127.0.0.2", 0))
        key = f"lek_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
        conn.request("GET", "/api/v1/templates", headers={"Authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        statuses[resp.status] = statuses.get(resp.status, 0) + 1
    return statuses


def _good(port: int, key: str, stop: threading.Event, out: list) -> None:
    n = 0
    next_at = time.monotonic()
    while not stop.is_set():
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += 1 / GOOD_RATE
        n += 1
        body = json.dumps({"template": "company_profile",
                           "lead": {"domain": f"good-{time.monotonic_ns()}-{n}.example.com"}})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start = time.perf_counter()
        conn.request("POST", "/api/v1/enrichment", body,
                     {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        out.append((resp.status, time.perf_counter() - start))


def _transactions() -> int:
    with psycopg.connect(BENCH_DB) as conn:
        return conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database"
                            " WHERE datname = current_database()").fetchone()[0]


def _good_alone(port: int, key: str, seconds: float) -> list:
    stop, out = threading.Event(), []
    thread = threading.Thread(target=_good, args=(port, key, stop, out))
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join()
    return out


def _summary(label: str, good: list, extra: list) -> list:
    latencies = sorted(t * 1000 for _, t in good)
    return [label, len(good), sum(s == 202 for s, _ in good), sum(s == 503 for s, _ in good),
            statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))], *extra]


def flood(env: dict) -> tuple[list, list, dict, int, float]:
    """The good client alone, then during the flood: (alone, during, statuses, database
    transactions during the flood, flood seconds)."""
    fresh_database()
    with Stack(env) as stack:
        stack.env.update(PERPLEXITY_API_KEY="x", SOCIAL_LINKS_API_KEY="x")
        api = stack.gunicorn("api.wsgi:app", workers=4)
        port = int(api.rsplit(":", 1)[1])
        key = create_workspace("scale")
        alone = _good_alone(port, key, 10)
        stop, good = threading.Event(), []
        thread = threading.Thread(target=_good, args=(port, key, stop, good))
        before = _transactions()
        thread.start()
        started = time.monotonic()
        with multiprocessing.Pool(ATTACKERS) as pool:
            parts = pool.map(_attacker, [(port, BAD_REQUESTS // ATTACKERS)] * ATTACKERS)
        attack_s = time.monotonic() - started
        stop.set()
        thread.join()
        transactions = _transactions() - before
    statuses: dict[int, int] = {}
    for part in parts:
        for status, n in part.items():
            statuses[status] = statuses.get(status, 0) + n
    return alone, good, statuses, transactions, attack_s


def run() -> None:
    rows, costs = [], []
    for label, env in [("throttled (default)", {}),
                       ("throttle off", {"AUTH_FAILS_PER_ADDRESS": "1000000000",
                                         "AUTH_FAILS_PER_KEY": "1000000000"})]:
        alone, good, statuses, transactions, seconds = flood(env)
        rows += [_summary(f"{label}: alone", alone, []),
                 _summary(f"{label}: during the flood", good, [])]
        costs.append([label, f"{seconds:.1f}", statuses.get(401, 0), statuses.get(429, 0),
                      sum(n for s, n in statuses.items() if s >= 500), transactions])
    table(f"Bad-key flood: {BAD_REQUESTS:,} requests with random keys from 127.0.0.2 at full "
          f"speed ({ATTACKERS} processes), a good client submitting {GOOD_RATE:.0f}/s from "
          "127.0.0.1 (API: gunicorn, 4 workers, 10 database connections each)",
          ["good client", "requests", "202", "503", "p50 ms", "p99 ms"], rows)
    table("What the flood cost",
          ["", "flood s", "401 (a database lookup each)", "429 (refused from Redis)",
           "5xx", "database transactions, all traffic"], costs)


if __name__ == "__main__":
    run()
