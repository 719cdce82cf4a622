"""Every write that moves a job between states (see the package docstring for the diagram):
insert at admission, claim, finish, hand back, the month-end move of its unit, the sweeper's
requeue, and the writes privacy and replay need."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from psycopg import Rollback
from psycopg.types.json import Jsonb

from ..confidence import narrow
from ..db import Conn, Pool, one
from ..leads import PERSON_FIELDS
from . import events, units
from .slots import PROMOTE, lock_workspace
from .states import (
    CACHE_DAYS,
    CLAIMABLE,
    SUPPRESSED,
    SUPPRESSED_ERROR,
    TERMINAL,
    JobStatus,
    Outcome,
    Runnable,
)

# --- admission -----------------------------------------------------------------------------

INSERT_UNLESS_SUPPRESSED = (
    "INSERT INTO enrichment_jobs (id, workspace_id, template, queue, subject_hash,"
    " person_hashes, lead, metadata, idempotency_key, billing_period, batch_id, status,"
    " cached_from, min_confidence, livemode, match, started_at, completed_at, created_at)"
    " SELECT %(id)s, %(ws)s, %(template)s, %(queue)s, %(subject)s, %(persons)s, %(lead)s,"
    "  %(metadata)s, %(key)s, %(period)s, %(batch)s, %(status)s, %(cached_from)s,"
    "  %(min_confidence)s, %(livemode)s,"
    # created_at: the time of insert, under the workspace lock (not the transaction's
    # start): lists by created_at see a workspace's jobs in the order they were admitted.
    "  %(match)s, CASE WHEN %(cached)s THEN now() END, CASE WHEN %(cached)s THEN now() END,"
    "  clock_timestamp() WHERE NOT EXISTS ("
    "  SELECT 1 FROM suppressions WHERE workspace_id = %(ws)s"
    "  AND subject_hash = ANY(%(hashes)s))"
)
NEW_KEY_ONLY = " ON CONFLICT (idempotency_key) DO NOTHING RETURNING *"

# The workspace row locked, and with it the subject's latest success with the template,
# completed within `max_age` days and admitted before today, as the providers answered it
# (never itself a cached answer: the data is as old as that), asked with a threshold no
# stricter than this request's (its answer then holds every value this one may show; one
# stored before answers had provenance cannot be gated, and is not used). A
# job's timeline (created, started, completed) is PostgreSQL's clock, so its age is judged by
# that clock too — money and periods go by the service's. Read in a snapshot taken before the
# lock was granted, the result may belong to a job erased meanwhile: the insert that copies
# it (INSERT_CACHED, a statement later) checks that the job still exists.
LOCK_AND_FRESH = (
    "SELECT f.* FROM workspaces w LEFT JOIN LATERAL ("
    " SELECT j.id, j.match, r.fields, r.citations, r.completeness, r.provenance, r.trace"
    " FROM enrichment_jobs j JOIN enrichment_results r ON r.job_id = j.id"
    " WHERE j.workspace_id = w.id AND j.subject_hash = %(subject)s"
    " AND j.template = %(template)s AND j.status = 'succeeded' AND j.cached_from IS NULL"
    " AND j.livemode = %(livemode)s"
    " AND j.min_confidence <= %(min_confidence)s AND r.provenance IS NOT NULL"
    " AND j.raw_purged_at IS NULL"
    " AND j.completed_at >= now() - make_interval(days => %(max_age)s)"
    " AND j.created_at < ((now() AT TIME ZONE 'UTC')::date)::timestamp AT TIME ZONE 'UTC'"
    " ORDER BY j.completed_at DESC LIMIT 1) f ON true"
    " WHERE w.id = %(ws)s FOR NO KEY UPDATE OF w"
)


def lock_and_fresh(conn: Conn, workspace_id: uuid.UUID, subject: str, template: str,
                   max_age_days: int, min_confidence: float, livemode: bool = True
                   ) -> dict | None:
    """Lock the workspace row (as `lock_workspace`) and return the cacheable success, its
    answer gated at `min_confidence` (confidence.narrow)."""
    row = conn.execute(LOCK_AND_FRESH, {"ws": workspace_id, "subject": subject,
                                        "template": template, "max_age": max_age_days,
                                        "min_confidence": min_confidence,
                                        "livemode": livemode}).fetchone()
    if row is None or row["id"] is None:
        return None
    fields, provenance, completeness, match = narrow(row["fields"], row["provenance"],
                                                     min_confidence)
    return row | {"fields": fields, "provenance": provenance, "completeness": completeness,
                  "match": match}


# A new waiting job and the unit it reserves, in one statement: the job only where no
# identifier of its subject is suppressed and its idempotency key is new, the unit only where
# the cap (plus the period's credits) allows one more. `reserved` false: the caller rolls back.
INSERT_RESERVING = (
    "WITH job AS (" + INSERT_UNLESS_SUPPRESSED + NEW_KEY_ONLY + "), "  # noqa: S608
    + units.RESERVE_FOR_JOB + " SELECT job.*, EXISTS (SELECT 1 FROM unit) AS reserved FROM job"
)
# A test-mode job reserves nothing (it is never charged).
INSERT_TEST = (
    "WITH job AS (" + INSERT_UNLESS_SUPPRESSED + NEW_KEY_ONLY + ")"  # noqa: S608
    " SELECT job.*, true AS reserved FROM job")


def exists(conn: Conn, job_id: uuid.UUID) -> bool:
    row = conn.execute("SELECT 1 FROM enrichment_jobs WHERE id = %s", (job_id,)).fetchone()
    return row is not None


# A job answered from an earlier success: only while that job still exists (an erasure may
# have removed it while the caller waited for the workspace lock).
INSERT_CACHED = (
    INSERT_UNLESS_SUPPRESSED  # noqa: S608 (constants)
    + " AND EXISTS (SELECT 1 FROM enrichment_jobs WHERE id = %(cached_from)s)" + NEW_KEY_ONLY)


def insert(conn: Conn, *, workspace_id: uuid.UUID, template: str, queue: str,
           subject: str, persons: list[str], lead: dict, metadata: dict, key: str,
           period: date | None, min_confidence: float, batch_id: uuid.UUID | None = None,
           cached: dict | None = None, cap: int | None = None, livemode: bool = True
           ) -> dict | None:
    """A new job — waiting, with its unit reserved against `cap` (`reserved` says whether the
    cap allowed it), or, answered from `cached` (an earlier success), succeeded at once with
    a copy of its result and a 0-unit usage row; None if any of its subject's identifiers is
    suppressed, the idempotency key exists, or the job `cached` copies is gone. The caller
    has locked the workspace row in an earlier statement: the suppression check then sees an
    erasure that committed while it waited for the lock, the reservation and `fill` exact
    counts."""
    statement = INSERT_CACHED if cached else INSERT_RESERVING if livemode else INSERT_TEST
    row = conn.execute(statement, {
        "cap": cap, **(units.period_bounds(period) if period else {}), "livemode": livemode,
        "id": uuid.uuid4(), "ws": workspace_id, "template": template, "queue": queue,
        "subject": subject, "persons": persons, "hashes": sorted({subject, *persons}),
        "lead": Jsonb(lead), "metadata": Jsonb(metadata), "key": key, "period": period,
        "batch": batch_id, "status": JobStatus.SUCCEEDED if cached else JobStatus.WAITING,
        "cached_from": cached["id"] if cached else None, "min_confidence": min_confidence,
        "match": cached["match"] if cached else None,
        "cached": cached is not None}).fetchone()
    if row is not None and cached:
        conn.execute(
            "INSERT INTO enrichment_results (job_id, workspace_id, idempotency_key, template,"
            " fields, citations, completeness, provenance, trace, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now() + make_interval(days => %s))",
            (row["id"], workspace_id, key, template, Jsonb(cached["fields"]),
             Jsonb(cached["citations"]), cached["completeness"],
             None if cached["provenance"] is None else Jsonb(cached["provenance"]),
             None if cached["trace"] is None else Jsonb(cached["trace"]), CACHE_DAYS))
        conn.execute("INSERT INTO enrichment_usage (workspace_id, job_id, template, units,"
                     " livemode) VALUES (%s, %s, %s, 0, %s)",
                     (workspace_id, row["id"], template, livemode))
    return row


# --- the worker ----------------------------------------------------------------------------

CLAIM = (
    "UPDATE enrichment_jobs j SET status = 'processing', attempts = j.attempts + 1,"  # noqa: S608 (constant)
    " runs = j.runs + 1,"
    " started_at = coalesce(j.started_at, now()), lease_token = %s,"
    " lease_until = now() + make_interval(secs => %s)"
    " FROM workspaces w WHERE w.id = j.workspace_id AND j.id = %s AND " + CLAIMABLE +
    " RETURNING j.*, w.plan, w.plan_since, w.region, w.person_level_enabled, "
    + SUPPRESSED + " AS suppressed"
)


def claim(pool: Pool, job_id: str, lease_seconds: int) -> dict | None:
    """Move a claimable job to processing under a fresh lease token. Returns the job with its
    workspace's plan and region, or None for a duplicate delivery or a finished job."""
    with pool.connection() as conn:
        return conn.execute(CLAIM, (uuid.uuid4(), lease_seconds, job_id)).fetchone()


# The outcome in one statement: the job's status (fenced by its lease, and by suppression: a
# subject that objected or was erased since the claim ends the job `failed` with no result
# and no charge), its result, its usage row (a replayed job's rerun adds its spend to the dead
# run's and sets the units, dated `at`: when the run ended, within the period of its unit),
# the dead letter. The caller locked the workspace row in an earlier statement, so this
# statement's snapshot sees every objection and erasure committed before it.
FINISH = """
WITH job AS (
  SELECT j.id, """ + SUPPRESSED + """ AS suppressed FROM enrichment_jobs j
  WHERE j.id = %(id)s AND j.workspace_id = %(ws)s AND j.status = 'processing' AND {fence}),
settled AS (
  UPDATE enrichment_jobs j
  SET status = CASE WHEN job.suppressed THEN 'failed' ELSE %(status)s END,
    error = CASE WHEN job.suppressed THEN %(suppressed_error)s ELSE %(error)s END,
    match = CASE WHEN job.suppressed THEN NULL ELSE %(match)s::boolean END,
    attempts = j.attempts + %(retries)s, completed_at = now(), lease_token = NULL,
    lease_until = NULL
  FROM job WHERE j.id = job.id AND j.status = 'processing' AND {fence}
  RETURNING j.id, j.workspace_id, j.template, j.idempotency_key, j.attempts,
    j.billing_period, j.created_at, j.livemode, job.suppressed),
result AS (
  INSERT INTO enrichment_results (job_id, workspace_id, idempotency_key, template, fields,
                                  citations, completeness, provenance, trace, expires_at)
  SELECT id, workspace_id, idempotency_key, template, %(fields)s, %(citations)s,
         %(completeness)s, %(provenance)s, %(trace)s,
         now() + make_interval(days => %(cache_days)s)
  FROM settled WHERE %(fields)s::jsonb IS NOT NULL AND NOT suppressed),
usage AS (
  INSERT INTO enrichment_usage (workspace_id, job_id, template, units, tokens, searches,
                                social_requests, max_tokens, max_searches, cost_estimate_usd,
                                match, created_at, livemode)
  SELECT workspace_id, id, template,
         CASE WHEN suppressed OR NOT livemode THEN 0 ELSE %(units)s END,
         %(tokens)s, %(searches)s, %(social)s, %(max_tokens)s, %(max_searches)s, %(cost)s,
         CASE WHEN suppressed THEN NULL ELSE %(match)s::boolean END, %(at)s, livemode
  FROM settled
  ON CONFLICT (job_id) DO UPDATE SET units = excluded.units, created_at = excluded.created_at,
    match = excluded.match, tokens = enrichment_usage.tokens + excluded.tokens,
    searches = enrichment_usage.searches + excluded.searches,
    social_requests = enrichment_usage.social_requests + excluded.social_requests,
    cost_estimate_usd = enrichment_usage.cost_estimate_usd + excluded.cost_estimate_usd),
dead AS (
  INSERT INTO dead_letters (job_id, workspace_id, status, error, attempts)
  SELECT id, workspace_id, %(status)s, %(error)s, attempts FROM settled
  WHERE %(dead_letter)s AND NOT suppressed
  ON CONFLICT (job_id) DO UPDATE SET status = excluded.status, error = excluded.error,
    attempts = excluded.attempts, created_at = now(), replayed_at = NULL)
SELECT attempts, suppressed, billing_period, created_at FROM settled
"""  # noqa: S608 (constants)
# The fill after FINISH (under the workspace lock: slots are counted exactly), and whether the
# ended job has anyone to tell — endpoints, or batches it belongs to (a batch committed while
# FINISH waited for the lock is seen here).
FILL_AND_TELL = PROMOTE + """
SELECT array(SELECT job_id FROM outbox ORDER BY job_id) AS ids,
       array(SELECT queue FROM outbox ORDER BY job_id) AS queues,
       array(SELECT created_at FROM outbox ORDER BY job_id) AS outbox_at,
       EXISTS (SELECT 1 FROM webhook_endpoints WHERE workspace_id = %(ws)s
               AND disabled_at IS NULL)
       OR EXISTS (SELECT 1 FROM batch_items WHERE job_id = %(id)s) AS tell
"""  # noqa: S608 (constants)
FENCE_LEASE = "lease_token = %(token)s"
FENCE_EXPIRED = "lease_until < now()"


def finish(conn: Conn, job: dict, outcome: Outcome, limit: int, now: datetime,
           fence: str = FENCE_LEASE) -> list[Runnable] | None:
    """Write a claimed job's outcome in one transaction and hand its slot on. The write is
    fenced by the lease token (or, for the sweeper, by the expired lease): if another worker
    took the job over, nothing is written and None is returned. Otherwise returns the waiting
    jobs that took the freed slot (publish them after this returns). A job whose subject is
    suppressed by now ends failed whatever `outcome` says, and `outcome` is changed to say so.

    Statements: the workspace lock, the outcome (FINISH), the unit given back when nothing is
    charged (units ledger), then the fill with whether anyone is to be told (FILL_AND_TELL);
    only if there are endpoints or batches, a job event (`outcome.events`: the caller has
    them turned into messages after commit) — saying nothing of a suppressed subject."""
    result = outcome.result or {}

    def jsonb(name: str) -> Jsonb | None:
        return None if result.get(name) is None else Jsonb(result[name])

    params = {
        "ws": job["workspace_id"], "id": job["id"], "status": outcome.status,
        "error": outcome.error, "retries": outcome.retries, "match": outcome.match,
        "token": job.get("lease_token"), "fields": jsonb("fields"),
        "citations": jsonb("citations"), "provenance": jsonb("provenance"),
        "trace": jsonb("trace"),
        "completeness": result.get("completeness"), "units": outcome.units,
        "tokens": outcome.tokens,
        "searches": outcome.searches, "social": outcome.social_requests,
        "max_tokens": outcome.max_tokens, "max_searches": outcome.max_searches,
        "cost": outcome.cost_estimate_usd, "dead_letter": outcome.dead_letter,
        "suppressed_error": SUPPRESSED_ERROR, "cache_days": CACHE_DAYS,
        "at": units.charge_time(job["billing_period"], now) if job.get("billing_period")
        else now}
    with conn.transaction():
        lock_workspace(conn, job["workspace_id"])
        ended = conn.execute(FINISH.format(fence=fence), params).fetchone()
        if ended is None:
            return None  # taken over: nothing of this run is written
        if ended["suppressed"]:
            outcome.status, outcome.error, outcome.units = (
                JobStatus.FAILED, SUPPRESSED_ERROR, 0)
            outcome.result = outcome.match = None
            outcome.dead_letter = False
        if outcome.units == 0 and ended["billing_period"] is not None:  # (a test job has none)
            units.release(conn, job["workspace_id"], ended["billing_period"],
                          ended["created_at"], now)
        filled = one(conn.execute(FILL_AND_TELL, {**params, "limit": max(0, limit)}))
        if filled["tell"]:  # endpoints or batches: the layers above react after commit
            outcome.events.append(events.record(
                conn, job["workspace_id"], job["id"],
                None if ended["suppressed"] else outcome.status))
    return [Runnable(*r) for r in zip(filled["ids"], filled["queues"], filled["outbox_at"],
                                      strict=True)]


def move_unit(conn: Conn, job: dict, period: date, cap: int, now: datetime) -> bool:
    """A claimed job admitted in an earlier period takes its unit into `period` (units
    ledger: one period per unit). False, with nothing changed, if `period`'s cap has no unit
    left or the lease was lost. The caller holds the workspace lock."""
    moved = False
    with conn.transaction():
        if conn.execute("UPDATE enrichment_jobs SET billing_period = %s"
                        " WHERE id = %s AND status = 'processing' AND lease_token = %s",
                        (period, job["id"], job["lease_token"])).rowcount:
            moved = units.move(conn, job["workspace_id"], job["billing_period"], period, cap,
                               job["created_at"], now)
        if not moved:
            raise Rollback()
    return moved


def requeue(conn: Conn, job: dict, *, publish: bool = True, delay: float = 0.0,
            relay_after: float = 0.0, counts: bool = True) -> bool:
    """Put a claimed job back in line, keeping its slot. Fenced by its lease token.
    `publish`: through the outbox (the relay sends it, `delay` seconds from now at the
    earliest); otherwise the caller's own retry sends it. `counts=False`: this run does not
    use up one of the job's runs (it never reached a provider)."""
    with conn.transaction():
        back = conn.execute(
            "UPDATE enrichment_jobs SET status = 'queued', lease_token = NULL,"
            " lease_until = NULL, runnable_at = now(), published_at = now(),"
            " runs = runs - %s WHERE id = %s AND status = 'processing' AND lease_token = %s",
            (0 if counts else 1, job["id"], job["lease_token"])).rowcount
        if back and publish:  # the relay sends rows older than `relay_after`
            conn.execute("INSERT INTO job_outbox (job_id, queue, created_at) VALUES"
                         " (%s, %s, now() + make_interval(secs => %s)) ON CONFLICT (job_id)"
                         " DO UPDATE SET created_at = excluded.created_at",
                         (job["id"], job["queue"], delay - relay_after if delay else -1e9))
    return bool(back)


def expired(pool: Pool, limit: int = 500) -> list[dict]:
    """Jobs stuck in processing past their lease (their worker died)."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT j.*, w.plan FROM enrichment_jobs j JOIN workspaces w ON w.id = j.workspace_id"
            " WHERE j.status = 'processing' AND j.lease_until < now()"
            " ORDER BY j.lease_until LIMIT %s", (limit,)).fetchall()


def requeue_expired(conn: Conn, job: dict) -> bool:
    """Back in line (keeping its slot) a job whose lease ran out."""
    with conn.transaction():
        back = conn.execute(
            "UPDATE enrichment_jobs SET status = 'queued', lease_token = NULL,"
            " lease_until = NULL, runnable_at = now(), published_at = now()"
            " WHERE id = %s AND status = 'processing' AND lease_until < now()",
            (job["id"],)).rowcount
        if back:
            conn.execute("INSERT INTO job_outbox (job_id, queue, created_at)"
                         " VALUES (%s, %s, '-infinity') ON CONFLICT (job_id) DO UPDATE"
                         " SET created_at = '-infinity'", (job["id"], job["queue"]))
    return bool(back)


def oldest_runnable(pool: Pool) -> dict[str, float]:
    """Seconds the oldest runnable job not claimed since it became runnable has waited, per
    tier."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT queue, extract(epoch FROM now() - min(runnable_at))::float AS age"
            " FROM enrichment_jobs WHERE status = 'queued'"
            " AND (started_at IS NULL OR runnable_at > started_at) GROUP BY queue").fetchall()
    return {r["queue"]: r["age"] for r in rows}



# --- privacy and retention (privacy.py decides; these are the writes) -----------------------

def delete_subject(conn: Conn, workspace_id: uuid.UUID, hashes: list[str],
                   now: datetime, test_only: bool = False) -> list[dict]:
    """Erasure's write: delete the subject's jobs (only its test-mode ones: `test_only`) —
    results, outbox rows, dead letters and webhook messages go with them — and give back the
    units of unfinished ones. The caller holds the workspace lock. Returns the jobs deleted
    (id, status)."""
    gone = conn.execute(
        "DELETE FROM enrichment_jobs WHERE workspace_id = %(ws)s AND ("
        " subject_hash = ANY(%(hashes)s) OR person_hashes && %(hashes)s::text[])"
        " AND NOT (livemode AND %(test_only)s)"
        " RETURNING id, status, billing_period, created_at",
        {"ws": workspace_id, "hashes": hashes, "test_only": test_only}).fetchall()
    for job in gone:
        if job["status"] not in TERMINAL and job["billing_period"] is not None:
            units.release(conn, workspace_id, job["billing_period"], job["created_at"], now)
    return gone


def purge_raw(conn: Conn, now: datetime, cutoff: datetime, batch: int) -> int:
    """One batch of the retention purge's first stage: the lead, metadata and error texts of
    jobs ended before `cutoff` (and their dead letters' text). Returns how many."""
    ids = [r["id"] for r in conn.execute(
        "UPDATE enrichment_jobs SET lead = '{}', metadata = '{}', error = NULL,"
        " raw_purged_at = %s WHERE id IN (SELECT id FROM enrichment_jobs"
        " WHERE status = ANY(%s) AND completed_at < %s AND raw_purged_at IS NULL LIMIT %s)"
        " RETURNING id", (now, list(TERMINAL), cutoff, batch))]
    if ids:
        conn.execute("UPDATE dead_letters SET error = NULL WHERE job_id = ANY(%s)", (ids,))
    return len(ids)


def delete_ended(conn: Conn, cutoff: datetime, batch: int) -> int:
    """One batch of the retention purge's second stage: jobs ended before `cutoff`."""
    return conn.execute(
        "DELETE FROM enrichment_jobs WHERE id IN (SELECT id FROM enrichment_jobs"
        " WHERE status = ANY(%s) AND completed_at < %s LIMIT %s)",
        (list(TERMINAL), cutoff, batch)).rowcount


def strip_personal(conn: Conn, workspace_id: uuid.UUID, templates: list[str]) -> None:
    """Where person-level enrichment is off, a company-level job holds no name, e-mail or
    LinkedIn URL."""
    conn.execute("UPDATE enrichment_jobs SET lead = lead - %(fields)s::text[]"
                 " WHERE workspace_id = %(ws)s AND template = ANY(%(templates)s)"
                 " AND lead ?| %(fields)s::text[]",
                 {"ws": workspace_id, "templates": templates, "fields": list(PERSON_FIELDS)})
