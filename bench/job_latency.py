"""Seconds from submit (HTTP 202) to `succeeded`, through gunicorn, Redis, a Celery worker and
the provider simulator — against a no-op task's round trip on the same worker as baseline."""

from __future__ import annotations

import statistics
import time

import requests

from .stack import Stack, create_workspace, fresh_database, table

LEAD = {"template": "person_basic",
        "lead": {"email": "jane@acme.com", "name": "Jane Doe", "company": "Acme"}}


def run(n: int = 20, latency_ms: int = 300) -> None:
    fresh_database()
    with Stack() as stack:
        stack.simulator("--latency-ms", str(latency_ms), "--perplexity-rps", "0",
                        "--social-rps", "0")
        stack.worker(concurrency=2)
        api = stack.gunicorn()
        headers = {"Authorization": f"Bearer {create_workspace('pro')}"}
        totals = []
        for i in range(n):
            body = LEAD | {"lead": LEAD["lead"] | {"email": f"lead{i}@acme.com"}}
            start = time.perf_counter()
            job = requests.post(f"{api}/api/v1/enrichment", json=body, headers=headers,
                                timeout=5).json()
            while True:
                status = requests.get(f"{api}/api/v1/enrichment/{job['job_id']}",
                                      headers=headers, timeout=5).json()["status"]
                if status in ("succeeded", "failed", "dead"):
                    break
                time.sleep(0.01)
            totals.append(time.perf_counter() - start)
            assert status == "succeeded", status
    rows = [["submit → succeeded (s)", statistics.median(totals),
             sorted(totals)[int(0.95 * (n - 1))], min(totals)],
            ["simulator latency per call (s)", latency_ms / 1000 * 2, "", ""]]
    table(f"Job latency, person_basic, {n} sequential jobs (2 provider calls each)",
          ["", "p50", "p95", "min"], rows)


if __name__ == "__main__":
    run()
