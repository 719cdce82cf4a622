"""The job pipeline against its floors: one Celery worker (prefork, 4 slots), an instant provider
simulator, person_social jobs of distinct workspaces (nothing waits behind its own) — against
a no-op task on the same worker (the absolute floor) and against the durable floor: the same
jobs run by a bench-only task (bench/floor_tasks.py) that claims and finishes each as a real
job does, with a trivial success and no provider call. The jobs are submitted before the
worker starts (a backlog: no submitting competes for the CPU) and timed from the first start
to the last finish, by their own timestamps; the no-ops from the first send to the last one
done. Real jobs and floor jobs each run on a fresh database, in turn, best of ROUNDS."""

from __future__ import annotations

import psycopg

from .execution import FAST, _services, noop_rate, submit, wait_done, workspaces
from .stack import BENCH_DB, Stack, fresh_database, table

SLOTS = 4
ROUNDS = 2  # the best of this many drains of each, taken in turn (the machine is shared)
FLOOR_TASKS = "bench.floor_tasks"


def backlog(stack: Stack, n: int, floor: bool = False) -> None:
    """`n` jobs of as many workspaces, their messages sent to `enrichment.run_job` — or, with
    `floor`, to the durable floor's task."""
    svc = _services(stack)
    if floor:
        from .floor_tasks import FloorPublisher

        svc.publisher = FloorPublisher(svc.settings.broker_url)
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


def drain(n: int, floor: bool = False) -> tuple[float, float | None]:
    """Jobs/s of a backlog of `n` real jobs (and no-op tasks/s on the same worker after it) —
    or, with `floor`, of `n` jobs run by the durable floor's task."""
    fresh_database()
    with Stack(FAST) as stack:
        if not floor:
            stack.simulator("--latency-ms", "0", "--perplexity-rps", "0", "--social-rps", "0")
        backlog(stack, n, floor=floor)
        stack.worker(concurrency=SLOTS, include=FLOOR_TASKS)
        jobs = job_rate(n)
        if floor:
            return jobs, None
        noop_rate(stack, 100)  # warm-up (the pool is up already)
        return jobs, noop_rate(stack, n)


def measure(n: int = 600) -> list:
    """[no-op tasks/s, durable floor jobs/s, jobs/s], each the best of ROUNDS."""
    real, floor = [], []
    for _ in range(ROUNDS):
        real.append(drain(n))
        floor.append(drain(n, floor=True)[0])
    return [max(r[1] for r in real), max(floor), max(r[0] for r in real)]


def run() -> None:
    noop, floor, jobs = measure()
    table(f"Pipeline: one worker, {SLOTS} prefork slots, instant simulator, person_social; "
          f"best of {ROUNDS}",
          ["no-op tasks/s", "durable floor jobs/s", "jobs/s", "floor / jobs (aim <= 1.3)",
           "no-op / jobs"], [[noop, floor, jobs, floor / jobs, noop / jobs]])

if __name__ == "__main__":
    run()
