"""Scheduling and execution, measured with real worker processes and the simulator:

1. shares of jobs started per tier under saturation (many workspaces per tier), and with elite
   idle — against the 3:2:1 target;
2. provider utilisation vs the 80% cap and 429s over 60 s, 4 worker processes, the simulator
   enforcing the real plan limit;
3. pipeline throughput (instant simulator) vs a no-op Celery task on the same worker;
4. queue wait (created → started) p50/p95 at 80% of that capacity.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime

import psycopg
import redis
from psycopg.rows import dict_row

from .stack import BENCH_DB, Stack, fresh_database, table

FAST = {"PERPLEXITY_PLAN_RPS": "100000", "SOCIAL_LINKS_PLAN_RPS": "100000"}


def _setup_env(stack: Stack) -> None:
    # This process admits and publishes jobs itself: same database, Redis and broker.
    for key in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        os.environ[key] = stack.env[key]


def admit_jobs(per_plan: dict[str, int], workspaces_per_plan: int, template: str) -> list:
    """Admit jobs round-robin over workspaces (and plans), then publish them in that order."""
    from enrichment import admission
    from enrichment.config import Settings
    from enrichment.templates import TEMPLATES
    from enrichment.workspaces import create_workspace
    from workers.publisher import CeleryPublisher

    plans = Settings.from_env({}).plans
    jobs = []
    with psycopg.connect(BENCH_DB, row_factory=dict_row, autocommit=True) as conn:
        spaces = {p: [create_workspace(conn, plans, f"{p}{i}", p)[0]
                      for i in range(workspaces_per_plan)] for p in per_plan}
        for n in range(max(per_plan.values())):
            for plan, count in per_plan.items():
                if n < count:
                    ws = spaces[plan][n % workspaces_per_plan]
                    lead = {"email": f"j{n}@{plan}.example.com", "domain": f"{plan}.example.com"}
                    jobs.append(admission.admit(
                        conn, slots=1, workspace=ws, plan=plans[plan],
                        template=TEMPLATES[template],
                        lead=lead, metadata={}, now=datetime.now(UTC)).job)
    publisher = CeleryPublisher()
    for job in jobs:
        publisher.publish(str(job["id"]), job["queue"])
    return jobs


def job_rows() -> list[dict]:
    with psycopg.connect(BENCH_DB, row_factory=dict_row) as conn:
        return conn.execute("SELECT queue, status, created_at, started_at, completed_at"
                            " FROM enrichment_jobs").fetchall()


def wait_done(total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(BENCH_DB) as conn:
            done = conn.execute("SELECT count(*) FROM enrichment_jobs WHERE status IN"
                                " ('succeeded', 'failed', 'dead')").fetchone()[0]
        if done >= total:
            return
        time.sleep(0.2)
    raise RuntimeError(f"only {done}/{total} jobs finished")


def shares(per_plan: dict[str, int]) -> list:
    fresh_database()
    with Stack(FAST) as stack:
        stack.simulator("--latency-ms", "0", "--perplexity-rps", "0", "--social-rps", "0")
        _setup_env(stack)
        admit_jobs(per_plan, workspaces_per_plan=20, template="person_social")
        stack.worker(concurrency=4)
        wait_done(sum(per_plan.values()), 300)
    rows = [r for r in job_rows() if r["started_at"]]
    # The window in which every tier that had work still had a backlog.
    last_start = {q: max(r["started_at"] for r in rows if r["queue"] == q)
                  for q in {r["queue"] for r in rows}}
    window_end = min(last_start.values())
    started = [r for r in rows if r["started_at"] <= window_end]
    counts = {q: sum(1 for r in started if r["queue"] == q) for q in ("elite", "pro", "core")}
    total = sum(counts.values())
    return [counts, {q: 100 * c / total for q, c in counts.items()}, total]


def provider_utilisation(seconds: int = 60) -> list:
    fresh_database()
    with Stack({"PERPLEXITY_PLAN_RPS": "2.0"}) as stack:
        sim = stack.simulator("--latency-ms", "50", "--perplexity-rps", "2.0",
                              "--social-rps", "10")
        _setup_env(stack)
        admit_jobs({"elite": 60, "pro": 60, "core": 60}, 30, "company_profile")
        for i in range(4):
            stack.worker(concurrency=1, name=f"w{i}")
        import requests

        requests.post(f"{sim}/_sim/reset", timeout=5)
        time.sleep(seconds)
        stats = requests.get(f"{sim}/_sim/stats", timeout=5).json()
    accepted = stats["accepted"]["perplexity"]
    # Judge the steady state: from the first accepted call, over `seconds` - 2.
    start = min(accepted)
    window = [t for t in accepted if start <= t < start + seconds - 2]
    rate = len(window) / (seconds - 2)
    return [seconds - 2, len(window), rate, 1.6, 100 * rate / 1.6,
            stats["counts"].get("perplexity.429", 0)]


def throughput(n: int = 300) -> list:
    fresh_database()
    with Stack(FAST) as stack:
        stack.simulator("--latency-ms", "0", "--perplexity-rps", "0", "--social-rps", "0")
        _setup_env(stack)
        stack.worker(concurrency=4)
        from workers.celery_app import app

        r = redis.Redis.from_url(stack.env["REDIS_URL"])
        r.delete("bench:noop")
        t0 = time.perf_counter()
        for _ in range(n):
            app.send_task("enrichment.noop", args=["bench:noop", "x"], queue="pro")
        while r.llen("bench:noop") < n:
            time.sleep(0.01)
        noop_rate = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        admit_jobs({"pro": n}, workspaces_per_plan=n, template="person_social")
        wait_done(n, 300)
        job_rate = n / (time.perf_counter() - t0)
    return [noop_rate, job_rate, noop_rate / job_rate]


def queue_wait(capacity: float, seconds: int = 20) -> list:
    fresh_database()
    rate = 0.8 * capacity
    with Stack(FAST) as stack:
        stack.simulator("--latency-ms", "0", "--perplexity-rps", "0", "--social-rps", "0")
        _setup_env(stack)
        stack.worker(concurrency=4)
        from enrichment import admission
        from enrichment.config import Settings
        from enrichment.templates import TEMPLATES
        from enrichment.workspaces import create_workspace
        from workers.publisher import CeleryPublisher

        plans, publisher = Settings.from_env({}).plans, CeleryPublisher()
        n = int(rate * seconds)
        with psycopg.connect(BENCH_DB, row_factory=dict_row, autocommit=True) as conn:
            spaces = [create_workspace(conn, plans, f"w{i}", "pro")[0] for i in range(n)]
            t0 = time.perf_counter()
            for i, ws in enumerate(spaces):  # an open-loop arrival at a steady rate
                time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                job = admission.admit(conn, slots=1, workspace=ws, plan=plans["pro"],
                                      template=TEMPLATES["person_social"],
                                      lead={"email": f"q{i}@x.com"}, metadata={},
                                      now=datetime.now(UTC)).job
                publisher.publish(str(job["id"]), job["queue"])
        wait_done(n, 120)
    waits = sorted((r["started_at"] - r["created_at"]).total_seconds() for r in job_rows())
    return [rate, n, statistics.mean(waits), statistics.median(waits),
            waits[int(0.95 * (len(waits) - 1))]]


def run() -> None:
    saturated = shares({"elite": 300, "pro": 300, "core": 300})
    idle = shares({"pro": 300, "core": 300})
    fmt = lambda s: " / ".join(f"{s[1][q]:.1f}" for q in ("elite", "pro", "core"))  # noqa: E731
    table("Jobs started per tier while every busy tier had a backlog (1 worker, 4 slots, "
          "20 workspaces per tier)",
          ["scenario", "elite / pro / core %", "target", "jobs in window"],
          [["all tiers saturated", fmt(saturated), "50.0 / 33.3 / 16.7", saturated[2]],
           ["elite idle", fmt(idle), "0.0 / 66.7 / 33.3", idle[2]]])
    noop_rate, job_rate, ratio = throughput()
    table("Throughput on one worker (4 prefork slots), instant simulator",
          ["no-op task /s", "enrichment job /s", "ratio"], [[noop_rate, job_rate, ratio]])
    table("Queue wait (created → started) at 80% of measured capacity",
          ["arrivals /s", "jobs", "mean s", "p50 s", "p95 s"], [queue_wait(job_rate)])
    table("Provider utilisation: Perplexity plan 2.0 req/s (simulator enforces it), cap 80%",
          ["window s", "calls", "calls/s", "cap/s", "% of cap", "429s"],
          [provider_utilisation()])


if __name__ == "__main__":
    run()
