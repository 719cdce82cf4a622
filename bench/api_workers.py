"""The API under gunicorn's worker classes: for each, its capacity on POST /api/v1/enrichment
(closed loop, as bench/submit_path.py) and the latency at 80% of that capacity (open loop:
requests sent on a fixed schedule, whatever the answers' pace)."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import statistics
import time
from pathlib import Path

from . import submit_path
from .stack import Stack, create_workspace, fresh_database, table

PLANS = str(Path(__file__).with_name("plans.toml"))
SECONDS = 8.0
SENDERS = 16  # each sends its share on schedule, one request at a time
CLASSES = [("sync", 4, 1), ("gthread", 2, 8), ("gthread", 4, 4)]  # class, workers, threads


def _open_loop(args) -> list[float]:
    port, key, rate, seconds, seed = args
    latencies, n, start = [], 0, time.monotonic()
    while (due := start + n / rate) < start + seconds:
        time.sleep(max(0.0, due - time.monotonic()))
        n += 1
        body = json.dumps({"template": "company_profile",
                           "lead": {"domain": f"lead-{seed}-{n}.example.com"}})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/api/v1/enrichment", body, {
            "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        # From when it was due, not when it went: a request sent late waited too.
        latencies.append(time.monotonic() - due)
        assert resp.status == 202, resp.status
    return latencies


def at_rate(url: str, key: str, rate: float) -> list[float]:
    port = int(url.rsplit(":", 1)[1])
    run_id = time.monotonic_ns()
    with multiprocessing.Pool(SENDERS) as pool:
        parts = pool.map(_open_loop, [(port, key, rate / SENDERS, SECONDS, f"o{run_id}-{i}")
                                      for i in range(SENDERS)])
    return sorted(x for part in parts for x in part)


def run() -> None:
    rows = []
    for worker_class, workers, threads in CLASSES:
        fresh_database()
        with Stack({"PLANS_FILE": PLANS}) as stack:
            stack.env.update(PERPLEXITY_API_KEY="x", SOCIAL_LINKS_API_KEY="x")
            api = stack.gunicorn("api.wsgi:app", workers, threads, worker_class)
            key = create_workspace("bench", plans_file=PLANS)
            submit_path.load(api, "/api/v1/enrichment", key)  # warm-up
            capacity = submit_path.load(api, "/api/v1/enrichment", key)[0]
            lat = at_rate(api, key, 0.8 * capacity)
        rows.append([f"{worker_class}, {workers} x {threads}", capacity, 0.8 * capacity,
                     statistics.median(lat) * 1000, lat[int(0.99 * (len(lat) - 1))] * 1000])
    table("POST /api/v1/enrichment by gunicorn worker class: capacity (closed loop) and "
          "latency at 80% of it (open loop)",
          ["workers", "capacity req/s", "offered req/s", "p50 ms", "p99 ms"], rows)


if __name__ == "__main__":
    run()
