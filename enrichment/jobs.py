"""Reading jobs: one job with its result and usage, and the job body the API shows. Every
write that changes a job's state is in `jobstore`."""

from __future__ import annotations

import uuid
from decimal import Decimal

from psycopg import Connection

from .jobstore import JobStatus

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
        "status": JobStatus(row["status"]).public,
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
