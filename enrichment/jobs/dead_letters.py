"""Dead letters: jobs whose provider round failed for good (`failed`: a final 4xx; `dead`:
retries used up, or a run killed again and again). Replay puts them back in their workspace's
line; the beat relay publishes the ones that get a slot."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from psycopg import Rollback

from ..billing.usage import hard_cap
from ..config import Settings
from ..db import Conn
from ..periods import period_start
from . import slots, states, units


def list_dead_letters(conn: Conn, include_replayed: bool = False,
                      limit: int | None = 100) -> list[dict]:
    return conn.execute(
        "SELECT d.job_id, d.workspace_id, j.template, d.status, d.attempts, d.error,"
        " d.created_at, d.replayed_at FROM dead_letters d"
        " JOIN enrichment_jobs j ON j.id = d.job_id"
        " WHERE %s OR d.replayed_at IS NULL ORDER BY d.created_at LIMIT %s",
        (include_replayed, limit)).fetchall()


PENDING = (
    "SELECT j.id, j.workspace_id, j.queue, j.raw_purged_at, j.livemode, w.plan,"  # noqa: S608
    " w.plan_since, "
    + states.SUPPRESSED + " AS suppressed FROM dead_letters d"
    " JOIN enrichment_jobs j ON j.id = d.job_id AND j.workspace_id = d.workspace_id"
    " JOIN workspaces w ON w.id = j.workspace_id"
    " WHERE d.job_id = %s AND d.replayed_at IS NULL AND j.status IN ('failed', 'dead')"
)


class Replay(StrEnum):
    REPLAYED = "replayed"
    NOT_DEAD = "not-dead"  # nothing to do: already replayed, or not a dead letter
    SUPPRESSED = "suppressed"  # its subject objected or was erased since
    PURGED = "purged"  # its lead is gone: the retention window passed
    OVER_CAP = "over-cap"  # its workspace has no unit left this period


def replay(conn: Conn, settings: Settings, job_id: uuid.UUID, now: datetime) -> Replay:
    """Put one dead-lettered job back in its workspace's line (see Replay for what else can
    happen)."""
    outcome = Replay.OVER_CAP
    with conn.transaction():
        found = conn.execute(PENDING, (job_id,)).fetchone()
        if found is None:
            return Replay.NOT_DEAD
        slots.lock_workspace(conn, found["workspace_id"])
        row = conn.execute(PENDING + " FOR UPDATE OF d, j", (job_id,)).fetchone()
        if row is None:  # replayed by someone else meanwhile
            return Replay.NOT_DEAD
        if row["suppressed"]:
            return Replay.SUPPRESSED
        if row["raw_purged_at"] is not None:
            return Replay.PURGED
        period = period_start(now) if row["livemode"] else None
        # The unit was given back when the job died; the rerun needs one again (a test-mode
        # job holds none).
        if period is not None and not units.reserve(conn, row["workspace_id"], period,
                                                    hard_cap(conn, settings.plans[row["plan"]],
                                                             row["workspace_id"], period,
                                                             row["plan_since"])):
            raise Rollback()
        conn.execute(
            "UPDATE enrichment_jobs SET status = 'waiting', error = NULL, completed_at = NULL,"
            " lease_token = NULL, lease_until = NULL, billing_period = %s, runs = 0"
            " WHERE id = %s", (period, job_id))
        # The dead run's usage row (0 units, what it spent) stays: the rerun adds to it.
        conn.execute("UPDATE dead_letters SET replayed_at = now() WHERE job_id = %s", (job_id,))
        runnable = slots.fill(conn, row["workspace_id"], settings.slots(row["plan"]))
        # Published by the next relay run, without its grace period.
        conn.execute("UPDATE job_outbox SET created_at = '-infinity' WHERE job_id = ANY(%s)",
                     ([r.job_id for r in runnable],))
        outcome = Replay.REPLAYED
    return outcome
