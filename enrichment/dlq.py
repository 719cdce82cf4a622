"""Dead letters: jobs whose provider round failed for good (`failed`: a final 4xx; `dead`:
retries used up). Replay re-queues them through the outbox; the beat relay publishes them."""

from __future__ import annotations

import uuid
from datetime import datetime

from psycopg import Connection, Rollback

from .admission import period_start, reserve_unit
from .config import Plans


def list_dead_letters(conn: Connection, include_replayed: bool = False,
                      limit: int | None = 100) -> list[dict]:
    return conn.execute(
        "SELECT d.job_id, d.workspace_id, j.template, d.status, d.attempts, d.error,"
        " d.created_at, d.replayed_at FROM dead_letters d"
        " JOIN enrichment_jobs j ON j.id = d.job_id"
        " WHERE %s OR d.replayed_at IS NULL ORDER BY d.created_at LIMIT %s",
        (include_replayed, limit)).fetchall()


def replay(conn: Connection, plans: Plans, job_id: uuid.UUID, now: datetime) -> str:
    """Put one dead-lettered job back in its queue. Returns 'replayed', 'not-dead' (nothing to
    do: already replayed, or not a dead letter) or 'over-cap' (its workspace has no unit left
    this period)."""
    outcome = "over-cap"
    with conn.transaction():
        row = conn.execute(
            "SELECT j.id, j.workspace_id, j.queue, w.plan FROM dead_letters d"
            " JOIN enrichment_jobs j ON j.id = d.job_id AND j.workspace_id = d.workspace_id"
            " JOIN workspaces w ON w.id = j.workspace_id"
            " WHERE d.job_id = %s AND d.replayed_at IS NULL"
            " AND j.status IN ('failed', 'dead') FOR UPDATE OF d, j",
            (job_id,)).fetchone()
        if row is None:
            return "not-dead"
        period = period_start(now)
        # The unit was given back when the job died; the rerun needs one again.
        if not reserve_unit(conn, row["workspace_id"], period, plans[row["plan"]].hard_cap, row):
            raise Rollback()  # the reservation also wrote the outbox row: nothing of it stays
        conn.execute(
            "UPDATE enrichment_jobs SET status = 'queued', error = NULL, completed_at = NULL,"
            " lease_token = NULL, lease_until = NULL, deferred = false, billing_period = %s"
            " WHERE id = %s", (period, job_id))
        # The dead run's 0-unit usage row goes: the rerun writes the job's one usage row.
        conn.execute("DELETE FROM enrichment_usage WHERE job_id = %s AND units = 0", (job_id,))
        # Published by the next relay run, without its grace period.
        conn.execute("UPDATE job_outbox SET created_at = '-infinity' WHERE job_id = %s",
                     (job_id,))
        conn.execute("UPDATE dead_letters SET replayed_at = now() WHERE job_id = %s", (job_id,))
        outcome = "replayed"
    return outcome
