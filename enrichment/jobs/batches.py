"""Batches: created before their leads are admitted, their items written once every lead has an
answer, completed once — when all their jobs have ended and all their leads are in."""

from __future__ import annotations

import uuid

from ..db import Conn


def create(conn: Conn, workspace_id: uuid.UUID, template: str, total: int,
           livemode: bool = True) -> uuid.UUID:
    batch_id = uuid.uuid4()
    conn.execute("INSERT INTO batches (id, workspace_id, template, total, livemode)"
                 " VALUES (%s, %s, %s, %s, %s)",
                 (batch_id, workspace_id, template, total, livemode))
    return batch_id


def submitted(conn: Conn, batch_id: uuid.UUID,
              items: list[tuple[int, uuid.UUID | None, bool]]) -> None:
    """Every lead is in — (index, job id or None, refused) each: from now on the batch can
    complete (once its jobs end). The caller holds the workspace lock. A job erased since its
    lead was admitted is no item's job any more (counted as failed)."""
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO batch_items (batch_id, idx, job_id, rejected)"
                        " VALUES (%s, %s, (SELECT id FROM enrichment_jobs WHERE id = %s), %s)",
                        [(batch_id, idx, job, refused) for idx, job, refused in items])
    conn.execute("UPDATE batches SET submitted_at = now() WHERE id = %s", (batch_id,))


def complete(conn: Conn, workspace_id: uuid.UUID,
             job_id: uuid.UUID | None = None) -> list[uuid.UUID]:
    """Mark done the workspace's batches (those holding `job_id`, or all open ones) whose jobs
    have all ended; returns them. Each batch is completed once, and only once all its leads
    are in (a batch still being submitted has no unfinished items yet). The caller holds the
    workspace lock: the last job of a batch to end sees every other one ended."""
    scope = ("b.id IN (SELECT batch_id FROM batch_items WHERE job_id = %(job)s)"
             if job_id is not None else "b.workspace_id = %(ws)s")
    return [r["id"] for r in conn.execute(
        "UPDATE batches b SET completed_at = now() WHERE " + scope  # noqa: S608 (constant)
        + " AND b.workspace_id = %(ws)s"
        " AND b.submitted_at IS NOT NULL AND b.completed_at IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM batch_items i"
        "  JOIN enrichment_jobs j ON j.id = i.job_id WHERE i.batch_id = b.id"
        "  AND j.status NOT IN ('succeeded', 'failed', 'dead')) RETURNING b.id",
        {"job": job_id, "ws": workspace_id})]
