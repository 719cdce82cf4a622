"""What happened to jobs, recorded in the transaction that made it happen, for the layers above
the jobs service to react to after commit (webhook messages, batch completion: see
`webhooks.notify`). The jobs service never calls those layers: it writes a row here."""

from __future__ import annotations

import uuid

from ..db import Conn, one


def record(conn: Conn, workspace_id: uuid.UUID, job_id: uuid.UUID | None = None,
           status: str | None = None) -> int:
    """A job ended with `status` (None: nothing may be said about it — its subject is
    suppressed — but its batches may be complete), or, with no job, the workspace's open
    batches may be complete. Returns the event's id."""
    return one(conn.execute(
        "INSERT INTO job_events (workspace_id, job_id, status) VALUES (%s, %s, %s) RETURNING id",
        (workspace_id, job_id, status)))["id"]


def take(conn: Conn, ids: list[int] | None, older_than_seconds: float,
         limit: int = 500) -> list[dict]:
    """Events to react to, locked (others skip them) and deleted with the caller's transaction:
    those named (`ids`), or, with `ids` None, those left behind longer than
    `older_than_seconds` (a crash after commit)."""
    which = ("id = ANY(%(ids)s)" if ids is not None
             else "created_at < now() - make_interval(secs => %(age)s)")
    return conn.execute(
        "DELETE FROM job_events WHERE id IN (SELECT id FROM job_events WHERE "  # noqa: S608
        + which + " ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"  # (constants)
        " RETURNING id, workspace_id, job_id, status",
        {"ids": ids, "age": older_than_seconds, "limit": limit}).fetchall()
