"""The `enrichment.states.Publisher` implementation on Celery."""

from __future__ import annotations

import time

import redis

from enrichment import logs

from .celery_app import MAINTENANCE_QUEUE, WEBHOOKS_QUEUE, app, tier_queues

RUN_JOB = "enrichment.run_job"
DELIVER_WEBHOOK = "enrichment.deliver_webhook"
ADMIT_UPLOAD = "enrichment.admit_upload"
# kombu's Redis transport keeps delivered, unacknowledged messages by delivery time here.
UNACKED_INDEX = "unacked_index"


class CeleryPublisher:
    """`broker_url`: publish to that broker instead of the app's (tests and benchmarks that
    run several brokers in one process; a connection per message)."""

    def __init__(self, broker_url: str | None = None) -> None:
        self.broker_url = broker_url
        self._broker: redis.Redis | None = None

    def _send(self, task: str, arg: str, queue: str, **options) -> None:
        """Send one task message: to the app's broker, or to `broker_url`'s."""
        if self.broker_url is None:
            app.send_task(task, args=[arg], queue=queue, **options)
            return
        with app.connection_for_write(self.broker_url) as conn:
            app.send_task(task, args=[arg], queue=queue, connection=conn, **options)

    def publish(self, job_id: str, queue: str) -> None:
        # The submitting request's id travels as a header: the worker logs it with the job.
        # (Not from inside a job: a job handing its slot on is not the next one's request.)
        rid = logs.request_id.get() if logs.job_id.get() is None else None
        self._send(RUN_JOB, job_id, queue, headers={"request_id": rid} if rid else None)

    def send_webhook(self, delivery_id: str, countdown: float | None = None) -> None:
        self._send(DELIVER_WEBHOOK, delivery_id, WEBHOOKS_QUEUE, countdown=countdown)

    def send_admission(self, upload_id: str, countdown: float | None = None) -> None:
        """Admit a console upload's rows in the background (workers/tasks.admit_upload)."""
        self._send(ADMIT_UPLOAD, upload_id, MAINTENANCE_QUEUE, countdown=countdown)

    def in_broker(self, recent_seconds: float) -> int | None:
        """Messages in the tier queues plus those delivered less than `recent_seconds` ago and
        not acknowledged (Redis broker only). An older delivery of a job still queued was
        taken by a worker that died before claiming it (kombu gives it back only after the
        visibility timeout, an hour): it does not count as in the broker."""
        url = self.broker_url or app.conf.broker_url
        if not url.startswith(("redis://", "rediss://")):
            return None
        if self._broker is None:
            self._broker = redis.Redis.from_url(url, socket_timeout=1)
        with self._broker.pipeline(transaction=False) as pipe:
            for queue in tier_queues():
                pipe.llen(queue)
            pipe.zcount(UNACKED_INDEX, time.time() - recent_seconds, "+inf")
            return sum(pipe.execute())
