"""Seconds from submit (HTTP 202) to `succeeded`, through gunicorn, Redis, a Celery worker and
the provider simulator — against a no-op task's round trip on the same worker as baseline."""

from __future__ import annotations

import statistics
import time
from datetime import datetime

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
            job = requests.post(f"{api}/api/v1/enrichment", json=body, headers=headers,
                                timeout=5).json()
            while job["status"] not in ("succeeded", "failed", "dead"):
                time.sleep(0.2)  # within the plan's read limit
                job = requests.get(f"{api}/api/v1/enrichment/{job['job_id']}",
                                   headers=headers, timeout=5).json()
            assert job["status"] == "succeeded", job
            # The job's own clock: row created (in the submit transaction) → result committed.
            totals.append((datetime.fromisoformat(job["completed_at"])
                           - datetime.fromisoformat(job["created_at"])).total_seconds())
    rows = [["created → succeeded (s)", statistics.median(totals),
             sorted(totals)[int(0.95 * (n - 1))], min(totals)],
            ["simulator latency per call (s)", latency_ms / 1000 * 2, "", ""]]
    table(f"Job latency, person_basic, {n} sequential jobs (2 provider calls each)",
          ["", "p50", "p95", "min"], rows)


if __name__ == "__main__":
    run()
