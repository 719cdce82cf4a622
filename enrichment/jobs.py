"""Jobs: publication after commit, the relay that republishes what a crash left behind, the
sweeper of expired leases, and the job body of DESIGN §5.

Queue after commit: the job row and its outbox row are written in one transaction (see
`admission.admit`); the task is published only once that has committed, and the outbox row is
deleted after a successful publish. If the process dies (or the broker is down) in between,
the relay — a beat job — publishes the rows older than a grace period. Publishing twice is
harmless: the pipeline's guarded claim turns a second delivery into a no-op.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal
from typing import Protocol

from psycopg import Connection
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

TERMINAL = ("succeeded", "failed", "dead")


class Publisher(Protocol):
    """Sends the task that runs a job to its queue (Celery, in workers/)."""

    def publish(self, job_id: str, queue: str) -> None: ...


def publish(pool: ConnectionPool, publisher: Publisher, job_id: uuid.UUID, queue: str) -> bool:
    """Publish a committed job's task and clear its outbox row. On a broker error the row stays
    for the relay and False is returned: the job is durable either way."""
    try:
        publisher.publish(str(job_id), queue)
    except Exception:
        log.exception("publish of job %s failed; the outbox relay will retry", job_id)
        return False
    with pool.connection() as conn:
        conn.execute("DELETE FROM job_outbox WHERE job_id = %s", (job_id,))
    return True


def relay_outbox(
    pool: ConnectionPool, publisher: Publisher, older_than_seconds: int, limit: int = 500
) -> int:
    """Publish outbox rows left behind (older than the grace period). Concurrent relays skip
    each other's rows. Returns how many were published."""
    published = 0
    with pool.connection() as conn, conn.transaction():
        rows = conn.execute(
            "SELECT job_id, queue FROM job_outbox"
            " WHERE created_at < now() - make_interval(secs => %s)"
            " ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
            (older_than_seconds, limit),
        ).fetchall()
        for row in rows:
            publisher.publish(str(row["job_id"]), row["queue"])
            conn.execute("DELETE FROM job_outbox WHERE job_id = %s", (row["job_id"],))
            published += 1
    return published


def requeue_expired(pool: ConnectionPool, max_attempts: int) -> tuple[int, int]:
    """Sweep jobs stuck in `processing` past their lease (their worker died): back to `queued`
    through the outbox, or `dead` once they have used their attempts. Returns (requeued, dead)."""
    with pool.connection() as conn, conn.transaction():
        dead = conn.execute(
            "UPDATE enrichment_jobs SET status = 'dead', completed_at = now(), lease_token = NULL,"
            " error = coalesce(error, 'lease expired after ' || attempts || ' attempts')"
            " WHERE status = 'processing' AND lease_until < now() AND attempts >= %s",
            (max_attempts,),
        ).rowcount
        requeued = conn.execute(
            "WITH stuck AS ("
            "  UPDATE enrichment_jobs SET status = 'queued', lease_token = NULL"
            "  WHERE status = 'processing' AND lease_until < now() RETURNING id, queue)"
            " INSERT INTO job_outbox (job_id, queue, created_at)"
            " SELECT id, queue, '-infinity' FROM stuck"
            " ON CONFLICT (job_id) DO UPDATE SET created_at = '-infinity'",
        ).rowcount
    return requeued, dead


def requeue_lost(pool: ConnectionPool, older_than_seconds: int) -> int:
    """Jobs still queued long after they were published, with no outbox row and not parked:
    their message may have been lost by the broker (a crash within its fsync window). Send
    them again; if the message was only slow, the duplicate is a no-op claim."""
    with pool.connection() as conn:
        return conn.execute(
            "INSERT INTO job_outbox (job_id, queue, created_at)"
            " SELECT j.id, j.queue, '-infinity' FROM enrichment_jobs j"
            " WHERE j.status = 'queued' AND NOT j.deferred"
            " AND coalesce(j.started_at, j.created_at) < now() - make_interval(secs => %s)"
            " AND NOT EXISTS (SELECT 1 FROM job_outbox o WHERE o.job_id = j.id)"
            " ON CONFLICT DO NOTHING", (older_than_seconds,)).rowcount


JOB_QUERY = """
SELECT j.*, r.fields, r.citations, r.completeness,
       u.units, u.tokens, u.searches, u.social_requests, u.cost_estimate_usd
FROM enrichment_jobs j
LEFT JOIN enrichment_results r ON r.job_id = j.id AND r.workspace_id = j.workspace_id
LEFT JOIN enrichment_usage u ON u.job_id = j.id AND u.workspace_id = j.workspace_id
WHERE j.workspace_id = %s AND j.id = %s
"""


def get_job(conn: Connection, workspace_id: uuid.UUID, job_id: uuid.UUID) -> dict | None:
    """A job with its result and usage, only if it belongs to `workspace_id`."""
    return conn.execute(JOB_QUERY, (workspace_id, job_id)).fetchone()


def iso(ts) -> str | None:
    return ts.isoformat().replace("+00:00", "Z") if ts is not None else None


def job_body(row: dict) -> dict:
    """The job as the API shows it (DESIGN §5)."""
    result = None
    if row.get("fields") is not None:
        result = {
            "fields": row["fields"],
            "citations": row["citations"],
            "completeness": float(row["completeness"]),
        }
    usage = None
    if row.get("units") is not None:
        usage = {
            "units": row["units"],
            "tokens": row["tokens"],
            "searches": row["searches"],
            "social_requests": row["social_requests"],
            "cost_estimate_usd": str(Decimal(row["cost_estimate_usd"]).quantize(Decimal("0.0001"))),
        }
    return {
        "job_id": str(row["id"]),
        "status": row["status"],
        "template": row["template"],
        "queue": row["queue"],
        "lead": row["lead"],
        "metadata": row["metadata"],
        "attempts": row["attempts"],
        "error": row["error"],
        "result": result,
        "usage": usage,
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "completed_at": iso(row["completed_at"]),
    }
