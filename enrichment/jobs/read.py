"""Reading jobs: one job with its result and usage, lists of them, a batch's progress, and the
bodies the API shows. Every write that changes a job's state is in `lifecycle`."""

from __future__ import annotations

import uuid
from decimal import Decimal

from ..db import Conn, one
from ..errors import Invalid
from .states import PUBLIC_STATUSES, JobStatus

SELECT_JOBS = """
SELECT j.*, r.fields, r.citations, r.completeness, r.provenance, r.trace,
       u.units, u.tokens, u.searches, u.social_requests, u.cost_estimate_usd
FROM enrichment_jobs j
LEFT JOIN enrichment_results r ON r.job_id = j.id AND r.workspace_id = j.workspace_id
LEFT JOIN enrichment_usage u ON u.job_id = j.id AND u.workspace_id = j.workspace_id
"""
JOB_QUERY = SELECT_JOBS + "WHERE j.workspace_id = %s AND j.id = %s"


def get_job(conn: Conn, workspace_id: uuid.UUID, job_id: uuid.UUID,
            livemode: bool | None = None) -> dict | None:
    """A job with its result and usage, only if it belongs to `workspace_id` (and, when
    given, to that mode: a test key never sees a live job, nor the reverse)."""
    if livemode is None:
        return conn.execute(JOB_QUERY, (workspace_id, job_id)).fetchone()
    return conn.execute(JOB_QUERY + " AND j.livemode = %s",
                        (workspace_id, job_id, livemode)).fetchone()


def get_jobs(conn: Conn, workspace_id: uuid.UUID, job_ids: list[uuid.UUID],
             livemode: bool) -> list[dict]:
    """get_job for many jobs at once (those that exist, of this workspace and mode)."""
    return conn.execute(SELECT_JOBS + "WHERE j.workspace_id = %s AND j.id = ANY(%s::uuid[])"
                        " AND j.livemode = %s", (workspace_id, job_ids, livemode)).fetchall()


def known_job(conn: Conn, workspace_id: uuid.UUID, job_id: uuid.UUID) -> dict:
    """get_job, for a job this transaction knows exists."""
    return one(conn.execute(JOB_QUERY, (workspace_id, job_id)))


def iso(ts) -> str | None:
    return ts.isoformat().replace("+00:00", "Z") if ts is not None else None


def job_body(row: dict) -> dict:
    """The job as the API shows it (docs/api.md#the-job-object)."""
    result = None
    if row.get("fields") is not None:
        result = {
            "fields": row["fields"],
            "citations": row["citations"],
            "completeness": float(row["completeness"]),
        }
        if row.get("provenance") is not None:  # absent from answers stored before it was
            result |= {"provenance": row["provenance"], "trace": row["trace"] or []}
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
        "batch_id": str(row["batch_id"]) if row.get("batch_id") else None,
        "status": JobStatus(row["status"]).public,
        "template": row["template"],
        "queue": row["queue"],
        "lead": row["lead"],
        "metadata": row["metadata"],
        "attempts": row["attempts"],
        "error": row["error"],
        "result": result,
        "usage": usage,
        "cached": row.get("cached_from") is not None,
        "cached_from": str(row["cached_from"]) if row.get("cached_from") else None,
        "match": row.get("match"),
        "min_confidence": float(row["min_confidence"]),
        "livemode": row["livemode"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "completed_at": iso(row["completed_at"]),
    }


class UnknownCursor(Invalid):
    """`starting_after` names no job of this workspace."""

    def __init__(self) -> None:
        super().__init__({"starting_after": ["No job with this id in this workspace."]})


def list_jobs(conn: Conn, workspace_id: uuid.UUID, *, limit: int, livemode: bool = True,
              starting_after: uuid.UUID | None = None, status: str | None = None,
              template: str | None = None, batch_id: uuid.UUID | None = None,
              created_after=None, created_before=None) -> tuple[list[dict], bool]:
    """A page of the workspace's jobs, newest first (created_at, then id: a stable order),
    and whether another page follows. Cursor pages never repeat or skip a job, whatever is
    submitted meanwhile (new jobs sort before the cursor)."""
    where: list[str] = ["j.workspace_id = %s", "j.livemode = %s"]
    args: list = [workspace_id, livemode]
    if starting_after is not None:
        cursor = conn.execute("SELECT created_at, id FROM enrichment_jobs WHERE id = %s"
                              " AND workspace_id = %s AND livemode = %s",
                              (starting_after, workspace_id, livemode)).fetchone()
        if cursor is None:
            raise UnknownCursor
        where.append("(j.created_at, j.id) < (%s, %s)")
        args += [cursor["created_at"], cursor["id"]]
    if status is not None:
        states = PUBLIC_STATUSES[status]
        # One state as `=`, so the (workspace, status, created_at, id) index gives the order.
        where.append("j.status = %s" if len(states) == 1 else "j.status = ANY(%s)")
        args.append(states[0] if len(states) == 1 else list(states))
    if batch_id is not None:  # its items: every lead's job, same-day repeats included
        where.append("j.id IN (SELECT job_id FROM batch_items WHERE batch_id = %s)")
        args.append(batch_id)
    for column, op, value in (("template", "=", template), ("created_at", ">=", created_after),
                              ("created_at", "<", created_before)):
        if value is not None:
            where.append(f"j.{column} {op} %s")
            args.append(value)
    rows = conn.execute(
        SELECT_JOBS + "WHERE " + " AND ".join(where)
        + " ORDER BY j.created_at DESC, j.id DESC LIMIT %s", [*args, limit + 1]).fetchall()
    return rows[:limit], len(rows) > limit


def batch_progress(conn: Conn, workspace_id: uuid.UUID, batch_id: uuid.UUID,
                   livemode: bool | None = None) -> dict | None:
    """A batch's progress: its leads by their job's public status (refused ones as
    `rejected`; one whose job was erased as `failed`), and whether it is done."""
    row = conn.execute(
        "SELECT b.id, b.template, b.created_at, b.total, b.livemode,"
        " count(*) FILTER (WHERE i.rejected) AS rejected,"
        " count(*) FILTER (WHERE j.status IN ('waiting', 'queued')) AS queued,"
        " count(*) FILTER (WHERE j.status = 'processing') AS processing,"
        " count(*) FILTER (WHERE j.status = 'succeeded') AS succeeded,"
        " count(*) FILTER (WHERE j.status = 'failed'"
        "  OR (i.job_id IS NULL AND NOT i.rejected)) AS failed,"
        " count(*) FILTER (WHERE j.status = 'dead') AS dead"
        " FROM batches b JOIN batch_items i ON i.batch_id = b.id"
        " LEFT JOIN enrichment_jobs j ON j.id = i.job_id"
        " WHERE b.id = %s AND b.workspace_id = %s AND b.submitted_at IS NOT NULL"
        " AND (%s::boolean IS NULL OR b.livemode = %s) GROUP BY b.id",
        (batch_id, workspace_id, livemode, livemode)).fetchone()
    if row is None:
        return None
    counts = {k: int(row[k]) for k in (*PUBLIC_STATUSES,
                                       "rejected")}
    return {"batch_id": str(row["id"]), "template": row["template"],
            "created_at": iso(row["created_at"]), "total": row["total"], "counts": counts,
            "done": counts["queued"] + counts["processing"] == 0, "livemode": row["livemode"]}
