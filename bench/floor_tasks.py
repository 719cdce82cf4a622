"""A job's durable floor on the worker, for `bench pipeline` only: a Celery task that claims a
job and finishes it as `enrichment.run_job` does (`lifecycle.claim`, `lifecycle.finish`, then
publishing what took the freed slot) with a trivial success — no provider call, no waterfall.
Registered only in a worker started with `-I bench.floor_tasks` (`Stack.worker(include=…)`);
`FloorPublisher` sends a job's message to it instead of `enrichment.run_job`."""

from __future__ import annotations

from enrichment.jobs import lifecycle, service
from enrichment.jobs.states import JobStatus, Outcome
from workers.celery_app import app
from workers.publisher import CeleryPublisher
from workers.tasks import EnrichmentTask, services

DURABLE_JOB = "bench.durable_job"


def trivial_outcome() -> Outcome:
    """A success with one unit and a small result (a row in each table a real success
    writes)."""
    return Outcome(JobStatus.SUCCEEDED, units=1, match=True, result={
        "fields": {"name": "Example"}, "citations": {}, "completeness": 1.0,
        "provenance": {}, "trace": []})


# The same task options as enrichment.run_job (its time limits cost the pool the same).
@app.task(name=DURABLE_JOB, base=EnrichmentTask, soft_time_limit=120, time_limit=150)
def durable_job(job_id: str) -> str:
    svc = services()
    job = lifecycle.claim(svc.db, job_id, svc.settings.job_lease_seconds)
    if job is None:
        return "skipped"
    outcome = trivial_outcome()
    with svc.db.connection() as conn:
        runnable = lifecycle.finish(conn, job, outcome, svc.settings.slots(job["plan"]),
                                    svc.clock())
    if runnable is None:
        return "lost"
    service.after_commit(svc, runnable, outcome.events)
    return outcome.status


class FloorPublisher(CeleryPublisher):
    """Sends a runnable job's message to the floor task."""

    def publish(self, job_id: str, queue: str) -> None:
        self._send(DURABLE_JOB, job_id, queue)
