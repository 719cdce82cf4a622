"""Admission: what happens to a submission before a job is queued.

    region rule → suppression → same-day idempotency → hard cap (unit reserved)
    → job: runnable (a free workspace slot: queued + outbox row) or waiting behind the
      workspace's own jobs

all in ONE transaction. Units are reserved at admission: queued, running and succeeded jobs
count toward the cap, and a job that ends failed/dead gives its unit back (pipeline). The
per-period counter row is updated with a guarded UPDATE, so concurrent admissions of one
workspace serialise on it and the cap is exact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from psycopg.types.json import Jsonb

from ..billing.usage import hard_cap
from ..config import Plan
from ..db import Conn, one
from ..errors import EnrichmentError
from ..leads import company_only, person_hashes, subject_hash, subject_identifier
from ..periods import day_start, next_period_start, period_start
from ..templates import Template
from ..workspaces import Workspace, person_level_allowed
from . import events, lifecycle, read, units
from .slots import fill, lock_workspace
from .states import CACHE_DAYS, DEFAULT_MIN_CONFIDENCE, Runnable

CLIENT_KEY_TTL_HOURS = 24


class Refused(EnrichmentError):
    """A submission the rules turn away, with its HTTP status and problem fields."""

    def __init__(self, status: int, slug: str, title: str, detail: str, **extra):
        super().__init__(detail, status=status, slug=slug, title=title, **extra)


@dataclass
class Admitted:
    job: dict
    replayed: bool = False
    cached: bool = False
    runnable: list[Runnable] = field(default_factory=list)  # publish these after commit
    events: list = field(default_factory=list)  # and notify these job events


def idempotency_key(workspace_id: uuid.UUID, identifier: str, template: str, day: date,
                    livemode: bool = True) -> str:
    """A job's key: one job per lead, template and UTC day — in each mode."""
    raw = f"{workspace_id}|{identifier}|{template}|{day.isoformat()}"
    return hashlib.sha256((raw if livemode else f"{raw}|test").encode()).hexdigest()


def client_key(workspace: Workspace, key: str) -> str:
    """A client Idempotency-Key as stored: each mode has its own keys. (A header's key is
    visible ASCII only: no live key can be spelled with the space of a test one.)"""
    return key if workspace.livemode else f"test {key}"


def check_region(workspace: Workspace, template: Template) -> None:
    if template.person_level and not person_level_allowed(
            workspace.region, workspace.person_level_enabled):
        where = "in the EU region" if workspace.region == "eu" else "for this workspace"
        raise Refused(403, "person-level-disabled", "Forbidden",
                      f"Person-level enrichment ({template.name}) is disabled {where}; "
                      "company-level templates are available.")


def cap_refusal(conn: Conn, workspace_id: uuid.UUID, cap: int, period: date) -> Refused:
    cap += units.credits(conn, workspace_id, period)
    resets_at = read.iso(day_start(next_period_start(period)))
    return Refused(402, "hard-cap-reached", "Payment Required",
                   f"This workspace has reserved all {cap} units its plan allows in this "
                   f"billing period (included + 50%, plus credits). The cap resets at "
                   f"{resets_at}; buy a credit pack to raise it now.",
                   hard_cap=cap, resets_at=resets_at)


def admit(conn: Conn, *, workspace: Workspace, plan: Plan, template: Template,
          lead: dict, metadata: dict, now: datetime, slots: int,
          max_age_days: int = CACHE_DAYS, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
          batch_id: uuid.UUID | None = None) -> Admitted:
    """Admit one lead: the same-day job it repeats; else a job answered at once from the
    subject's success with this template within `max_age_days` (from an earlier day; no
    unit, no provider call); else a new job (runnable if one of the workspace's `slots` is
    free, else waiting behind its older jobs). Raises Refused. Commits its own transaction;
    the caller publishes `Admitted.runnable` and notifies `.events` after it returns."""
    # A test-mode job holds no unit: no period, no cap (its rate limit bounds it).
    period = period_start(now) if workspace.livemode else None
    cap = hard_cap(conn, plan, workspace.id, period, workspace.plan_since) if period else None
    with conn.transaction():
        admitted = _admit(conn, workspace, plan, template, lead, metadata, now, period, cap,
                          max_age_days, min_confidence, batch_id)
        if _new(admitted):
            admitted.runnable = fill(conn, workspace.id, slots)
    return admitted


def admit_batch(conn: Conn, *, workspace: Workspace, plan: Plan, template: Template,
                leads: list[dict], metadata: dict, now: datetime, slots: int,
                max_age_days: int = CACHE_DAYS, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                batch_id: uuid.UUID | None = None
                ) -> tuple[list[Admitted | Refused], list[Runnable], list]:
    """Admit a batch's leads in ONE transaction, each as `admit` would one after the other:
    (per lead its Admitted or Refused, the jobs that became runnable, the job events). A lead
    refused after it wrote (the cap) is rolled back to its own savepoint; the others stand.
    One commit and one hand-out of free slots for the batch instead of one per lead: a list
    is admitted faster than the providers can work through it."""
    period = period_start(now) if workspace.livemode else None
    outcomes: list[Admitted | Refused] = []
    with conn.transaction():
        lock_workspace(conn, workspace.id)  # held to the end: the batch is one step
        cap = hard_cap(conn, plan, workspace.id, period, workspace.plan_since) if period else None
        # Only two refusals come after a write: the cap, and a suppressed subject on the
        # fresh-data path (after it cleared a cached answer's key). When neither can happen,
        # no savepoint is needed — each one is a subtransaction, and past 64 of them in one
        # transaction PostgreSQL's visibility checks slow down for every session.
        undo = max_age_days <= 0 or (
            period is not None and cap is not None
            and units.room(conn, workspace.id, period, cap) < len(leads))
        for lead in leads:
            try:
                # a savepoint where needed: a refusal undoes this lead only
                with conn.transaction() if undo else contextlib.nullcontext():
                    outcomes.append(_admit(conn, workspace, plan, template, lead, metadata,
                                           now, period, cap, max_age_days, min_confidence,
                                           batch_id))
            except Refused as exc:
                outcomes.append(exc)
        new = any(isinstance(o, Admitted) and _new(o) for o in outcomes)
        runnable = fill(conn, workspace.id, slots) if new else []
    happened = [e for o in outcomes if isinstance(o, Admitted) for e in o.events]
    return outcomes, runnable, happened


def _new(admitted: Admitted) -> bool:
    """A new job waiting for a slot (not a replay, not answered from the cache)."""
    return not (admitted.replayed or admitted.cached)


def _admit(conn: Conn, workspace: Workspace, plan: Plan, template: Template, lead: dict,
           metadata: dict, now: datetime, period: date | None, cap: int | None,
           max_age_days: int, min_confidence: float, batch_id: uuid.UUID | None) -> Admitted:
    """One lead's admission inside the caller's transaction (which gives the new job its
    slot, if one is free, after this returns). Raises Refused; the caller rolls back."""
    check_region(workspace, template)
    if not template.person_level and not person_level_allowed(
            workspace.region, workspace.person_level_enabled):
        # Where person-level enrichment is off, a company-level job never holds, stores or
        # sends a person's name, e-mail or profile: only the company's fields are kept.
        lead = company_only(lead)
        if not lead:
            raise Refused(422, "company-fields-required", "Unprocessable Content",
                          "Person-level enrichment is off for this workspace, so a company-"
                          "level lead is enriched from its company fields only (domain, "
                          "company); this lead has none.",
                          errors=[{"field": "lead", "message": "Give domain or company."}])
    identifier = subject_identifier(lead, template.person_level)
    if identifier is None:
        raise Refused(422, "identifier-required", "Unprocessable Content",
                      "The lead names no one this template can enrich.",
                      errors=[{"field": "lead", "message": "Give an identifier."}])
    subject = subject_hash(identifier)
    hashes = sorted({subject, *person_hashes(lead)})
    key = idempotency_key(workspace.id, identifier, template.name, now.astimezone(UTC).date(),
                          workspace.livemode)

    def insert(cached: dict | None) -> dict | None:
        return lifecycle.insert(conn, workspace_id=workspace.id, template=template.name,
                               queue=plan.queue, subject=subject, persons=person_hashes(lead),
                               lead=lead, metadata=metadata, key=key, period=period,
                               min_confidence=min_confidence, batch_id=batch_id,
                               cached=cached, cap=cap, livemode=workspace.livemode)

    if max_age_days > 0:
        cached = lifecycle.lock_and_fresh(conn, workspace.id, subject, template.name,
                                         max_age_days, min_confidence, workspace.livemode)
    else:  # fresh data asked for: a cached answer given earlier today is no replay
        cached = None
        lock_workspace(conn, workspace.id)
        conn.execute("UPDATE enrichment_jobs SET idempotency_key = NULL"
                     " WHERE idempotency_key = %s AND cached_from IS NOT NULL", (key,))
    row = insert(cached)
    if row is None and cached and not lifecycle.exists(conn, cached["id"]):
        # Erased while this waited for the lock: look again, now that it holds it.
        cached = lifecycle.lock_and_fresh(conn, workspace.id, subject, template.name,
                                         max_age_days, min_confidence, workspace.livemode)
        row = insert(cached)
    if row is None:  # suppressed, or the same lead and template today
        existing = conn.execute(
            "SELECT id FROM enrichment_jobs WHERE workspace_id = %s AND idempotency_key = %s"
            " AND NOT EXISTS (SELECT 1 FROM suppressions"
            "                 WHERE workspace_id = %s AND subject_hash = ANY(%s))",
            (workspace.id, key, workspace.id, hashes)).fetchone()
        if existing is None:
            raise Refused(403, "subject-suppressed", "Forbidden",
                          "This subject asked not to be enriched (erasure or objection).")
        return Admitted(read.known_job(conn, workspace.id, existing["id"]), replayed=True)
    if cached:  # answered from the earlier result: nothing to reserve or to run
        answered = events.record(conn, workspace.id, row["id"], "succeeded")
        return Admitted(read.known_job(conn, workspace.id, row["id"]), cached=True,
                        events=[answered])
    if not row["reserved"]:  # the cap: the job is rolled back with the transaction
        assert cap is not None and period is not None  # (a test job reserves nothing)
        raise cap_refusal(conn, workspace.id, cap, period)
    return Admitted(row)


# --- client Idempotency-Key header ---------------------------------------------------------

def request_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
                          ).hexdigest()


def stored_answer(conn: Conn, workspace_id: uuid.UUID, key: str, body_hash: str
                  ) -> tuple[int, dict] | None:
    """The answer kept for this key (within 24 h), or None. A different body → 422."""
    row = conn.execute(
        "SELECT request_hash, status, response FROM api_idempotency"
        " WHERE workspace_id = %s AND key = %s"
        " AND created_at > now() - make_interval(hours => %s)",
        (workspace_id, key, CLIENT_KEY_TTL_HOURS)).fetchone()
    if row is None:
        return None
    if row["request_hash"] != body_hash:
        raise Refused(422, "idempotency-key-reused", "Unprocessable Content",
                      "This Idempotency-Key was used with a different request body.")
    return row["status"], row["response"]


def store_answer(conn: Conn, workspace_id: uuid.UUID, key: str, body_hash: str,
                 status: int, response: dict) -> None:
    """Keep the answer for the key — unless a job it shows was erased since it was made: the
    workspace lock (which erasure takes too) makes "check, then store" one step, so an
    erased lead is never kept in an answer to replay."""
    shown = [str(job["job_id"]) for job in ([response] if "job_id" in response else [
        entry["job"] for entry in response.get("results", []) if "job" in entry])]
    with conn.transaction():
        lock_workspace(conn, workspace_id)
        alive = one(conn.execute("SELECT count(*) AS n FROM enrichment_jobs"
                                 " WHERE id = ANY(%s::uuid[])", (shown,)))["n"]
        if alive < len(set(shown)):
            return
        conn.execute(
            "INSERT INTO api_idempotency (workspace_id, key, request_hash, status, response)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (workspace_id, key) DO UPDATE"
            " SET request_hash = excluded.request_hash, status = excluded.status,"
            "     response = excluded.response, created_at = now()"
            " WHERE api_idempotency.created_at <= now() - make_interval(hours => %s)",
            (workspace_id, key, body_hash, status, Jsonb(response), CLIENT_KEY_TTL_HOURS))


def expire_caches(conn: Conn, batch: int = 5000) -> dict[str, int]:
    """Forget idempotency data past its window, in small batches (no long locks): results stop
    serving as cache after CACHE_DAYS (their key is cleared; the result itself stays until the
    retention purge), client Idempotency-Key answers after 24 h."""
    results = keys = 0
    while n := conn.execute(
        "UPDATE enrichment_results SET idempotency_key = NULL WHERE job_id IN ("
        " SELECT job_id FROM enrichment_results WHERE idempotency_key IS NOT NULL"
        " AND expires_at < now() LIMIT %s)", (batch,)).rowcount:
        results += n
    while n := conn.execute(
        "DELETE FROM api_idempotency WHERE (workspace_id, key) IN ("
        " SELECT workspace_id, key FROM api_idempotency"
        " WHERE created_at <= now() - make_interval(hours => %s) LIMIT %s)",
        (CLIENT_KEY_TTL_HOURS, batch)).rowcount:
        keys += n
    return {"result_cache_expired": results, "client_keys_deleted": keys}
