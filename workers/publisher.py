"""The `enrichment.jobs.Publisher` implementation on Celery."""

from __future__ import annotations

from .celery_app import app

RUN_JOB = "enrichment.run_job"


class CeleryPublisher:
    def publish(self, job_id: str, queue: str) -> None:
        app.send_task(RUN_JOB, args=[job_id], queue=queue)
