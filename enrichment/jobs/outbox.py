"""Publishing after commit: a committed runnable job's message, the relay for what a crash left
in the outbox, the re-send of messages the broker may have lost."""

from __future__ import annotations

import logging

from ..db import Pool, one
from ..metrics import JOB_MESSAGES
from .states import Publisher, Runnable

log = logging.getLogger(__name__)


def publish(pool: Pool, publisher: Publisher, job: Runnable) -> bool:
    """Send a committed runnable job's message and clear its outbox row. On a broker error the
    row stays for the relay and False is returned: the job is durable either way."""
    return bool(publish_all(pool, publisher, [job]))


def publish_all(pool: Pool, publisher: Publisher, runnable: list[Runnable]) -> int:
    """Send each job's message, then clear the outbox rows of those sent in one statement
    (one commit for a batch's jobs, not one each). A job whose send failed keeps its row for
    the relay; were the delete to fail, the relay would send the others again too (a second
    message is a no-op claim). Returns how many were sent."""
    sent = []
    for job in runnable:
        try:
            publisher.publish(str(job.job_id), job.queue)
        except Exception:
            log.exception("publish of job %s failed; the outbox relay will retry", job.job_id)
            continue
        JOB_MESSAGES.labels("direct").inc()
        sent.append(job)
    if sent:
        try:
            with pool.connection() as conn:
                conn.execute("DELETE FROM job_outbox o"
                             " USING unnest(%s::uuid[], %s::timestamptz[]) AS s(job_id, created_at)"
                             " WHERE o.job_id = s.job_id AND o.created_at = s.created_at",
                             ([j.job_id for j in sent], [j.outbox_at for j in sent]))
        except Exception:  # the jobs are committed and sent: never the caller's failure
            log.exception("clearing the outbox rows of %d sent jobs failed; the relay will"
                          " send them again (a second message is a no-op claim)", len(sent))
    return len(sent)


def send_webhooks(publisher: Publisher, deliveries: list) -> None:
    """Send committed webhook messages to their queue (the webhook sweeper sends any this
    misses)."""
    for delivery_id in deliveries:
        try:
            publisher.send_webhook(str(delivery_id))
        except Exception:
            log.exception("webhook %s not queued; the sweeper will", delivery_id)


def relay_outbox(pool: Pool, publisher: Publisher, older_than_seconds: int,
                 limit: int = 500) -> int:
    """Publish outbox rows left behind (older than the grace period). Concurrent relays skip
    each other's rows. Returns how many were published. Only outbox rows are locked while
    publishing (the lock order of erasure and hand-back is job row, then outbox row); the
    jobs' `published_at` is stamped after that commits."""
    with pool.connection() as conn:
        with conn.transaction():
            rows = conn.execute(
                "SELECT job_id, queue FROM job_outbox"
                " WHERE created_at < now() - make_interval(secs => %s)"
                " ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (older_than_seconds, limit),
            ).fetchall()
            for row in rows:
                publisher.publish(str(row["job_id"]), row["queue"])
                JOB_MESSAGES.labels("relay").inc()
                conn.execute("DELETE FROM job_outbox WHERE job_id = %s", (row["job_id"],))
        if rows:
            conn.execute("UPDATE enrichment_jobs SET published_at = now() WHERE id = ANY(%s)",
                         ([r["job_id"] for r in rows],))
    return len(rows)


def requeue_lost(pool: Pool, older_than_seconds: int, at_most: int | None = None
                 ) -> int:
    """Queued jobs whose last publish is long past, with no outbox row: the broker may have
    lost the message (a crash within its fsync window). Queue a re-send of the `at_most`
    longest-unpublished ones; if a message was only slow, the duplicate is a no-op claim. A
    job's age never counts, only its last publish, so a backlog does not multiply
    messages."""
    with pool.connection() as conn:
        return conn.execute(
            "INSERT INTO job_outbox (job_id, queue, created_at)"
            " SELECT j.id, j.queue, '-infinity' FROM enrichment_jobs j"
            " WHERE j.status = 'queued'"
            " AND j.published_at < now() - make_interval(secs => %s)"
            " AND NOT EXISTS (SELECT 1 FROM job_outbox o WHERE o.job_id = j.id)"
            " ORDER BY j.published_at LIMIT %s"
            " ON CONFLICT DO NOTHING", (older_than_seconds, at_most)).rowcount


def published_unclaimed(pool: Pool) -> int:
    """Runnable jobs sent and not claimed yet: each should have a message in the broker."""
    with pool.connection() as conn:
        return one(conn.execute(
            "SELECT count(*) AS n FROM enrichment_jobs j WHERE j.status = 'queued'"
            " AND NOT EXISTS (SELECT 1 FROM job_outbox o WHERE o.job_id = j.id)"))["n"]


