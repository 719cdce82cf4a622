"""Per-workspace concurrency: at most N jobs of one workspace run at once, across every worker
and machine, without holding a worker on a job that has to wait.

Running slots live in Redis (`lua/workspace_slots.lua`): one sorted set per workspace, job →
lease expiry, so a slot whose worker died frees itself. A job that finds no free slot is marked
`deferred` in PostgreSQL and its task ends at once; its place in line is its row (oldest
first). Every exit path of a running job releases the slot and wakes the workspace's oldest
deferred job through the outbox, which sends it to the back of its tier queue — so one
workspace's backlog never sits in front of another workspace's job. The beat sweeper wakes
deferred jobs whose workspace has free slots, in case a wake-up was lost (a worker killed
between release and wake).
"""

from __future__ import annotations

import uuid
from importlib import resources

import redis
from psycopg_pool import ConnectionPool

from .jobs import Publisher, publish


class WorkspaceSlots:
    def __init__(self, client: redis.Redis, lease_seconds: int, prefix: str = "slots"):
        source = (resources.files("enrichment") / "lua" / "workspace_slots.lua").read_text()
        self.script = client.register_script(source)
        self.lease = lease_seconds
        self.prefix = prefix

    def _call(self, op: str, workspace_id, holder: str, limit: int) -> tuple[bool, int]:
        ok, free = self.script(keys=[f"{self.prefix}:{{{workspace_id}}}"],
                               args=[op, holder, limit, self.lease])
        return bool(ok), int(free)

    def acquire(self, workspace_id, job_id, limit: int) -> str | None:
        """A slot for one run attempt of the job: its holder id, or None if all are taken."""
        holder = f"{job_id}:{uuid.uuid4().hex[:12]}"
        return holder if self._call("acquire", workspace_id, holder, limit)[0] else None

    def release(self, workspace_id, holder: str, limit: int) -> int:
        """Give the slot back; returns how many slots are free now."""
        return self._call("release", workspace_id, holder, limit)[1]

    def free(self, workspace_id, limit: int) -> int:
        return self._call("free", workspace_id, "", limit)[1]


def defer(pool: ConnectionPool, job_id) -> bool:
    """Park a queued job until a slot frees up."""
    with pool.connection() as conn:
        return conn.execute("UPDATE enrichment_jobs SET deferred = true"
                            " WHERE id = %s AND status = 'queued'", (job_id,)).rowcount == 1


def undefer(pool: ConnectionPool, job_id) -> bool:
    """Take a parked job back to run it now; False if a wake-up got to it first."""
    with pool.connection() as conn:
        return conn.execute("UPDATE enrichment_jobs SET deferred = false"
                            " WHERE id = %s AND deferred", (job_id,)).rowcount == 1


def wake(pool: ConnectionPool, publisher: Publisher, workspace_id: uuid.UUID,
         count: int = 1) -> int:
    """Send the workspace's `count` oldest deferred jobs back to their tier queue."""
    if count <= 0:
        return 0
    with pool.connection() as conn:  # one statement: autocommit is its transaction
        woken = conn.execute(
            "WITH next AS (SELECT id FROM enrichment_jobs"
            "  WHERE workspace_id = %s AND status = 'queued' AND deferred"
            "  ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED),"
            " woken AS (UPDATE enrichment_jobs j SET deferred = false FROM next"
            "  WHERE j.id = next.id RETURNING j.id, j.queue)"
            " INSERT INTO job_outbox (job_id, queue) SELECT id, queue FROM woken"
            " ON CONFLICT (job_id) DO UPDATE SET created_at = excluded.created_at"
            " RETURNING job_id, queue",
            (workspace_id, count)).fetchall()
    for row in woken:
        publish(pool, publisher, row["job_id"], row["queue"])
    return len(woken)


def deferred_workspaces(pool: ConnectionPool) -> list[dict]:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT DISTINCT j.workspace_id, w.plan FROM enrichment_jobs j"
            " JOIN workspaces w ON w.id = j.workspace_id"
            " WHERE j.status = 'queued' AND j.deferred").fetchall()
