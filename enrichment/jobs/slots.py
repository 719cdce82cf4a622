"""Workspace slots: the workspace lock every writer of jobs takes first, and the hand-over of a
freed slot to the oldest waiting job (see the package docstring)."""

from __future__ import annotations

import uuid

from psycopg.types.json import Jsonb

from ..db import Conn, Pool
from .states import Runnable


def lock_workspace(conn: Conn, workspace_id: uuid.UUID) -> dict | None:
    """Lock the workspace row; returns its plan and since when (as they are now)."""
    return conn.execute("SELECT plan, plan_since FROM workspaces WHERE id = %s"
                        " FOR NO KEY UPDATE", (workspace_id,)).fetchone()


# Each mode has the workspace's slots (docs/api.md#test-mode): test jobs never hold up live
# ones, nor the reverse.
PROMOTE = """
WITH busy AS (
  SELECT count(*) FILTER (WHERE livemode) AS live, count(*) FILTER (WHERE NOT livemode) AS test
  FROM enrichment_jobs WHERE workspace_id = %(ws)s AND status IN ('queued', 'processing')),
next AS (
  (SELECT id FROM enrichment_jobs WHERE workspace_id = %(ws)s AND status = 'waiting'
   AND livemode ORDER BY created_at, id
   LIMIT (SELECT greatest(%(limit)s - live, 0) FROM busy))
  UNION ALL
  (SELECT id FROM enrichment_jobs WHERE workspace_id = %(ws)s AND status = 'waiting'
   AND NOT livemode ORDER BY created_at, id
   LIMIT (SELECT greatest(%(limit)s - test, 0) FROM busy))),
promoted AS (
  UPDATE enrichment_jobs j SET status = 'queued', runnable_at = now(), published_at = now()
  FROM next WHERE j.id = next.id AND j.status = 'waiting' RETURNING j.id, j.queue),
outbox AS (
  INSERT INTO job_outbox (job_id, queue) SELECT id, queue FROM promoted
  ON CONFLICT (job_id) DO UPDATE SET created_at = excluded.created_at
  RETURNING job_id, queue, created_at)
"""
FILL = PROMOTE + "SELECT job_id, queue, created_at FROM outbox"  # noqa: S608 (constants)


def fill(conn: Conn, workspace_id: uuid.UUID, limit: int) -> list[Runnable]:
    """Give the workspace's free slots to its oldest waiting jobs. The caller is inside a
    transaction and has locked the workspace row in an earlier statement."""
    rows = conn.execute(FILL, {"ws": workspace_id, "limit": max(0, limit)}).fetchall()
    return [Runnable(r["job_id"], r["queue"], r["created_at"]) for r in rows]


def stranded(pool: Pool, limits: dict[str, int]) -> list[dict]:
    """Workspaces with waiting jobs and a free slot (a lowered load after a plan change, or a
    hand-over that never ran): what the sweeper fills."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT DISTINCT w.id, w.plan FROM workspaces w"
            " JOIN (SELECT DISTINCT workspace_id, livemode FROM enrichment_jobs"
            "       WHERE status = 'waiting') q ON q.workspace_id = w.id"
            " WHERE (SELECT count(*) FROM enrichment_jobs a WHERE a.workspace_id = w.id"
            "        AND a.livemode = q.livemode AND a.status IN ('queued', 'processing'))"
            "     < coalesce((%s::jsonb ->> w.plan)::int, 1)", (Jsonb(limits),)).fetchall()


def fill_workspace(pool: Pool, workspace_id: uuid.UUID, limit: int) -> list[Runnable]:
    with pool.connection() as conn, conn.transaction():
        lock_workspace(conn, workspace_id)
        return fill(conn, workspace_id, limit)


