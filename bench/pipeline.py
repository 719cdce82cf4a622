"""The job pipeline against its floor: one Celery worker (prefork, 4 slots), an instant provider
simulator, person_social jobs of distinct workspaces (nothing waits behind its own) — against
a no-op task on the same worker. The jobs are submitted before the worker starts (a backlog:
no submitting competes for the CPU) and timed from the first start to the last finish, by
their own timestamps; the no-ops from the first send to the last one done."""

from __future__ import annotations

import psycopg

from .execution import FAST, _services, noop_rate, submit, wait_done, workspaces
from .stack import BENCH_DB, Stack, fresh_database, table

SLOTS = 4


def backlog(stack: Stack, n: int) -> None:
    svc = _services(stack)
    spaces = workspaces(svc, "pro", n)
    for i, ws in enumerate(spaces):
        submit(svc, ws, [{"email": f"t{i}@x.com"}], "person_social")
    svc.close()


def job_rate(n: int) -> float:
    wait_done(n, 300)
    with psycopg.connect(BENCH_DB) as conn:
        first, last = conn.execute("SELECT min(started_at), max(completed_at)"
                                   " FROM enrichment_jobs").fetchone()
    return n / (last - first).total_seconds()


def measure(n: int = 600) -> list:
    fresh_database()
    with Stack(FAST) as stack:
        stack.simulator("--latency-ms", "0", "--perplexity-rps", "0", "--social-rps", "0")
        backlog(stack, n)
        stack.worker(concurrency=SLOTS)
        jobs = job_rate(n)
        noop_rate(stack, 100)  # warm-up (the pool is up already)
        noop = noop_rate(stack, n)
    return [noop, jobs, jobs / noop]


def run() -> None:
    noop, jobs, ratio = measure()
    table(f"Pipeline: one worker, {SLOTS} prefork slots, instant simulator, person_social",
          ["no-op tasks/s", "jobs/s", "ratio"], [[noop, jobs, ratio]])


if __name__ == "__main__":
    run()
