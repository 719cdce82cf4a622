"""Submit path: POST /api/v1/enrichment under gunicorn (auth, rate limit, validation, region,
suppression, idempotency, cap, job + outbox, publish) against two floors served the same way:
a bare Flask JSON endpoint (the absolute floor) and the durable floor (bench/durable_app.py:
the same job row, unit reservation and outbox row in one transaction, the same publish after
commit, nothing else). Each endpoint has a workspace of its own."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import statistics
import time
from pathlib import Path

import psycopg

from .stack import BENCH_DB, Stack, create_workspace, fresh_database, table

CLIENT_PROCESSES = 4
SECONDS = 8.0
WORKERS = 4
ROUNDS = 2  # each endpoint's best of this many loads, taken in turn (the machine is shared)


def _client(args) -> list[float]:
    port, path, key, seconds, seed = args
    latencies = []
    n = 0
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        n += 1
        body = json.dumps({"template": "company_profile",
                           "lead": {"domain": f"lead-{seed}-{n}.example.com"}})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        start = time.perf_counter()
        conn.request("POST", path, body, {"Content-Type": "application/json",
                                          "Authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        resp.read()
        latencies.append(time.perf_counter() - start)
        conn.close()
        assert resp.status == 202, resp.status
    return latencies


def load(url: str, path: str, key: str) -> list:
    port = int(url.rsplit(":", 1)[1])
    with multiprocessing.Pool(CLIENT_PROCESSES) as pool:
        run_id = time.monotonic_ns()  # fresh leads each run: no same-day replays
        parts = pool.map(_client, [(port, path, key, SECONDS, f"{run_id}-{i}")
                                   for i in range(CLIENT_PROCESSES)])
    latencies = sorted(x for part in parts for x in part)
    rps = len(latencies) / SECONDS
    return [rps, statistics.median(latencies) * 1000,
            latencies[int(0.99 * (len(latencies) - 1))] * 1000]


def workspace_id(key: str) -> str:
    """The workspace an API key of the bench database belongs to."""
    from enrichment.workspaces import key_prefix

    with psycopg.connect(BENCH_DB) as conn:
        return str(conn.execute("SELECT workspace_id FROM api_keys WHERE prefix = %s",
                                (key_prefix(key),)).fetchone()[0])


def run() -> None:
    plans = Path(__file__).with_name("plans.toml")
    fresh_database()
    with Stack({"PLANS_FILE": str(plans)}) as stack:
        stack.env.update(PERPLEXITY_API_KEY="x", SOCIAL_LINKS_API_KEY="x")
        key = create_workspace("bench", plans_file=str(plans))
        stack.env["BENCH_WORKSPACE_ID"] = workspace_id(create_workspace(
            "bench", plans_file=str(plans)))
        bare = stack.gunicorn("bench.bare_app:app", workers=WORKERS)
        durable = stack.gunicorn("bench.durable_app:app", workers=WORKERS)
        api = stack.gunicorn("api.wsgi:app", workers=WORKERS)
        endpoints = [(bare, "/bare"), (durable, "/durable"), (api, "/api/v1/enrichment")]
        for url, path in endpoints:  # warm-up
            load(url, path, key)
        runs = [[load(url, path, key) for url, path in endpoints] for _ in range(ROUNDS)]
        b, d, s = (max(each, key=lambda r: r[0]) for each in zip(*runs, strict=True))
    table(f"Submit path under gunicorn ({WORKERS} sync workers, {CLIENT_PROCESSES} client "
          f"processes, {SECONDS:.0f} s each, new connection per request; best of {ROUNDS})",
          ["endpoint", "req/s", "p50 ms", "p99 ms"],
          [["bare Flask JSON endpoint", *b], ["durable floor (job + outbox, publish)", *d],
           ["POST /api/v1/enrichment", *s],
           ["cost ratio (durable rps / submit rps; aim <= 1.5)", d[0] / s[0], s[1] / d[1],
            s[2] / d[2]],
           ["cost ratio (bare rps / submit rps)", b[0] / s[0], s[1] / b[1], s[2] / b[2]]])

if __name__ == "__main__":
    run()
