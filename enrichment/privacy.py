"""Data-subject rights and retention (GDPR/CCPA).

Minimisation: a result keeps only the derived fields, citation links and completeness — never
raw provider payloads or prompts; logs and events carry ids, never a lead's personal data.
A subject is known by the SHA-256 of its normalised identifier, and found by every personal
identifier its leads carried: a job keyed by jane@acme.com whose lead also gave her LinkedIn
URL is found by either, and erasing or objecting by one suppresses both. Every function is
scoped to one workspace: B can neither see nor erase A's subjects.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .db import Conn, one
from .jobs import events, lifecycle, read
from .jobs.slots import fill, lock_workspace
from .jobs.states import JobStatus, Runnable
from .leads import normalise, subject_hash

# A subject's jobs: keyed by, or carrying, any of its identifiers.
OF_SUBJECT = ("workspace_id = %(ws)s AND (subject_hash = ANY(%(hashes)s)"
              " OR person_hashes && %(hashes)s::text[])")


def subject_hashes(conn: Conn, workspace_id: uuid.UUID, identifier: str,
                   livemode: bool = True) -> list[str]:
    """The identifier's hash and those of every personal identifier linked to it through this
    workspace's jobs — transitively (jane@a and a LinkedIn URL in one job, that URL and
    jane@b in another: all three): what an erasure or objection suppresses. In test mode,
    only links test-mode jobs make (live data is not test mode's to follow)."""
    found = {subject_hash(identifier)}
    for _ in range(10):  # links are short chains; the bound only guards against pathologies
        row = one(conn.execute(
            "SELECT array_agg(DISTINCT p) AS hashes"  # noqa: S608 (constant)
            " FROM enrichment_jobs, unnest(person_hashes) p WHERE " + OF_SUBJECT
            + " AND (%(live)s OR NOT livemode)",
            {"ws": workspace_id, "hashes": sorted(found), "live": livemode}))
        more = set(row["hashes"] or []) - found
        if not more:
            break
        found |= more
    return sorted(found)


def export(conn: Conn, workspace_id: uuid.UUID, identifier: str, livemode: bool = True
           ) -> dict:
    """Everything this workspace holds about the subject — asked in test mode, what test
    mode holds (its jobs and their messages; consents and suppressions are live-mode's)."""
    subject = subject_hash(identifier)
    hashes = subject_hashes(conn, workspace_id, identifier, livemode)
    job_ids = [r["id"] for r in conn.execute(
        "SELECT id FROM enrichment_jobs WHERE " + OF_SUBJECT  # noqa: S608 (constant)
        + " AND (%(live)s OR NOT livemode) ORDER BY created_at",
        {"ws": workspace_id, "hashes": hashes, "live": livemode})]
    found = [read.job_body(read.known_job(conn, workspace_id, job_id)) for job_id in job_ids]
    consents = conn.execute(
        "SELECT id, purpose, basis, granted, source, created_at FROM consents"
        " WHERE workspace_id = %s AND subject_hash = ANY(%s) AND %s ORDER BY created_at",
        (workspace_id, hashes, livemode)).fetchall()
    suppression = conn.execute(
        "SELECT reason, created_at FROM suppressions WHERE workspace_id = %s"
        " AND subject_hash = %s AND %s", (workspace_id, subject, livemode)).fetchone()
    sent = conn.execute(  # webhook messages that carried the subject's jobs to the customer
        "SELECT id, endpoint_id, event_type, status, created_at, delivered_at"
        " FROM webhook_deliveries WHERE job_id = ANY(%s) ORDER BY created_at",
        (job_ids,)).fetchall()
    return {
        "identifier": normalise(identifier),
        "subject_hash": subject,
        "jobs": found,
        "consents": [consent_body(c) for c in consents],
        "suppression": ({"reason": suppression["reason"],
                         "since": read.iso(suppression["created_at"])} if suppression else None),
        "webhook_deliveries": [
            {"id": str(d["id"]), "endpoint_id": str(d["endpoint_id"]), "event": d["event_type"],
             "status": d["status"], "created_at": read.iso(d["created_at"]),
             "delivered_at": read.iso(d["delivered_at"])} for d in sent],
    }


def erase(conn: Conn, workspace_id: uuid.UUID, identifier: str, slots: int,
          now: datetime | None = None, livemode: bool = True
          ) -> tuple[list[Runnable], list[int]]:
    """Erase the subject from this workspace and suppress future enrichment of it. Asked in
    test mode: only the subject's test-mode jobs go, and nothing is suppressed (suppression
    binds live enrichment: a live-mode act).

    Jobs go (their results, outbox rows, dead letters and webhook messages with them), with
    stored client Idempotency-Key answers that contain them; units reserved by unfinished
    jobs are given back, and slots they held pass to the workspace's next waiting jobs —
    except the slot of a job still running: its worker finds its fenced final write
    rejected, leaves nothing behind, and only then hands the slot on (so the workspace never
    runs more than its slots). A batch whose last open job this was completes (a job event).
    Returns the runnable jobs to publish and the events to notify, after commit. Usage rows
    stay: they hold no personal data (workspace, job id, units) and keep invoices
    explainable."""
    with conn.transaction():
        lock_workspace(conn, workspace_id)
        hashes = subject_hashes(conn, workspace_id, identifier, livemode)
        now = now or datetime.now(UTC)
        gone = lifecycle.delete_subject(conn, workspace_id, hashes, now, test_only=not livemode)
        if gone:
            conn.execute("DELETE FROM api_idempotency WHERE workspace_id = %s"
                         " AND response::text LIKE ANY(%s)",
                         (workspace_id, [f"%{job['id']}%" for job in gone]))
        if livemode:
            conn.execute(
                "INSERT INTO suppressions (workspace_id, subject_hash, reason)"
                " SELECT %s, h, 'erasure' FROM unnest(%s::text[]) h"
                " ON CONFLICT (workspace_id, subject_hash) DO UPDATE SET reason = 'erasure'",
                (workspace_id, hashes))
        running = sum(job["status"] == JobStatus.PROCESSING for job in gone)
        return fill(conn, workspace_id, slots - running), [events.record(conn, workspace_id)]


@dataclass
class Consent:
    identifier: str
    purpose: str
    basis: str
    granted: bool
    source: str


def consent_body(row: dict) -> dict:
    return {"id": str(row["id"]), "purpose": row["purpose"], "basis": row["basis"],
            "granted": row["granted"], "source": row["source"],
            "recorded_at": read.iso(row["created_at"])}


def record_consent(conn: Conn, workspace_id: uuid.UUID, consent: Consent) -> dict:
    """Record consent or an objection. An objection suppresses the subject — by every
    personal identifier found beside this one — without deleting this record, and drops the
    webhook messages about its jobs not yet delivered; a later grant lifts an objection,
    never an erasure."""
    subject = subject_hash(consent.identifier)
    with conn.transaction():
        lock_workspace(conn, workspace_id)  # as erasure: links seen whole
        row = one(conn.execute(
            "INSERT INTO consents (id, workspace_id, subject_hash, purpose, basis, granted,"
            " source) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *",
            (uuid.uuid4(), workspace_id, subject, consent.purpose, consent.basis,
             consent.granted, consent.source)))
        hashes = subject_hashes(conn, workspace_id, consent.identifier)
        if consent.granted:
            conn.execute("DELETE FROM suppressions WHERE workspace_id = %s"
                         " AND subject_hash = ANY(%s) AND reason = 'objection'",
                         (workspace_id, hashes))
        else:
            conn.execute("INSERT INTO suppressions (workspace_id, subject_hash, reason)"
                         " SELECT %s, h, 'objection' FROM unnest(%s::text[]) h"
                         " ON CONFLICT DO NOTHING", (workspace_id, hashes))
            conn.execute(
                "DELETE FROM webhook_deliveries WHERE status IN ('pending', 'delivering')"  # noqa: S608
                " AND job_id IN (SELECT id FROM enrichment_jobs WHERE " + OF_SUBJECT + ")",
                {"ws": workspace_id, "hashes": hashes})
    return {"identifier": normalise(consent.identifier), **consent_body(row)}


def purge(conn: Conn, now: datetime, raw_days: int = 90, summary_days: int = 365,
          batch: int = 1000) -> dict[str, int]:
    """The retention purge, for finished jobs only, in small batches (no long locks);
    idempotent. Raw data — the lead, the customer's metadata, error details and the dead
    letter's text — goes after `raw_days` (the identifier hashes stay, so an erasure still
    finds the job; a purged job cannot be replayed) and so do webhook messages, which carry
    job bodies; jobs with their results, and per-job usage rows, after `summary_days`
    (billing keeps its per-day aggregates in usage_reports)."""
    raw_cutoff, summary_cutoff = now - timedelta(days=raw_days), now - timedelta(days=summary_days)
    removed = {"raw": 0, "webhook_deliveries": 0, "jobs": 0, "usage_rows": 0}
    while n := lifecycle.purge_raw(conn, now, raw_cutoff, batch):
        removed["raw"] += n
    while n := conn.execute(
            "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries"
            " WHERE created_at < %s LIMIT %s)", (raw_cutoff, batch)).rowcount:
        removed["webhook_deliveries"] += n
    while n := lifecycle.delete_ended(conn, summary_cutoff, batch):
        removed["jobs"] += n
    while n := conn.execute(
            "DELETE FROM enrichment_usage WHERE id IN (SELECT id FROM enrichment_usage"
            " WHERE created_at < %s LIMIT %s)", (summary_cutoff, batch)).rowcount:
        removed["usage_rows"] += n
    return removed
