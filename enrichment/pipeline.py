"""The life of one job, from claim to result. The job's states and their writes live in
`enrichment/jobs/`; this module orchestrates.

    claim (guarded: a duplicate delivery does nothing)
    → caps from the plan → the template's waterfall of providers (global provider limits,
      retries and backoff inside a hard 30 s round) → fields with their confidence and
      sources, the trace of every call, completeness
    → result + usage + status (+ dead letter) in ONE transaction, which also hands the
      job's workspace slot to its next waiting job → publish that job → events

A provider that keeps failing ends the job `dead` (transient errors, retries used up, or a paid
request that got no answer in time) or `failed` (a final 4xx); either way the job gets a usage
row with 0 units and what its answers cost. No database connection is held while providers
are called.
"""

from __future__ import annotations

import logging
import time
from enum import StrEnum

from . import waterfall
from .billing.usage import hard_cap
from .config import PERPLEXITY_MAX_TOKENS, Plan
from .errors import BACKING_SERVICE_DOWN
from .jobs import lifecycle, outbox, service, slots, states
from .jobs.states import JobStatus, Outcome
from .leads import company_only
from .metrics import (
    COMPLETENESS,
    DEAD_LETTERS,
    JOB_DELIVERIES,
    JOBS_FINISHED,
    QUEUE_WAIT,
    WORKSPACE_WAIT,
)
from .periods import period_start
from .providers import ProviderError, Spend
from .services import Services
from .templates import TEMPLATES, Template
from .workspaces import person_level_allowed

log = logging.getLogger(__name__)

QUALITY_THRESHOLD = 0.8  # the completeness alert's line (alerts.toml)
MAX_RUNS = 5  # runs of one job (crashes, expired leases) before it is dead


def caps(plan: Plan, template: Template) -> tuple[int, int]:
    """(max output tokens, max searches) for one job of this plan and template."""
    max_tokens = min(plan.max_tokens or PERPLEXITY_MAX_TOKENS, PERPLEXITY_MAX_TOKENS)
    max_searches = template.searches
    if plan.max_searches is not None:
        max_searches = min(max_searches, plan.max_searches)
    return max_tokens, max_searches


class Run(StrEnum):
    """How a delivered job's run ended when it did not end the job (else: its JobStatus)."""

    SKIPPED = "skipped"  # not claimable: a duplicate delivery, a finished or erased job
    LOST = "lost"  # the lease was taken over before the run finished: nothing written
    DEFERRED = "deferred"  # no provider slot within the round: back in line, nothing sent


def run_job(svc: Services, job_id: str) -> JobStatus | Run:
    """Run one delivered job to its end. Returns its final status; 'skipped' for a duplicate
    delivery (or a job erased meanwhile); 'lost' when the lease was taken over."""
    job = lifecycle.claim(svc.db, job_id, svc.settings.job_lease_seconds)
    if job is None:
        JOB_DELIVERIES.labels("skipped").inc()
        log.info("job %s not claimable (duplicate delivery or already finished)", job_id)
        return Run.SKIPPED
    JOB_DELIVERIES.labels("claimed").inc()
    try:
        return _run(svc, job)
    except BACKING_SERVICE_DOWN:  # the task retries these itself: its retry is the job's message
        _hand_back(svc, job, publish=False)
        raise
    except BaseException:
        _hand_back(svc, job)
        raise


def _finish(svc: Services, job: dict, outcome: Outcome, fence: str = lifecycle.FENCE_LEASE
            ) -> bool:
    """Write the outcome, then publish the waiting job that took the freed slot."""
    with svc.db.connection() as conn:
        runnable = lifecycle.finish(conn, job, outcome, svc.settings.slots(job["plan"]),
                                   svc.clock(), fence)
    if runnable is None:
        log.warning("job %s: lease lost before finishing; outcome discarded", job["id"])
        # Erased while running: its slot was held back until now (see privacy.erase).
        outbox.publish_all(svc.db, svc.publisher, slots.fill_workspace(
            svc.db, job["workspace_id"], svc.settings.slots(job["plan"])))
        return False
    service.after_commit(svc, runnable, outcome.events)
    log.info("job %s %s (template %s)", job["id"], outcome.status, job["template"])
    JOBS_FINISHED.labels(outcome.status).inc()
    if outcome.dead_letter:
        DEAD_LETTERS.labels(outcome.status).inc()
    return True


def _hand_back(svc: Services, job: dict, publish: bool = True) -> None:
    """Something unexpected stopped the run (a Redis or database blip, a time limit): put the
    job back in line at once, keeping its slot — or bury it when it has used its runs.
    Best effort: if this fails too, the sweeper acts when the lease runs out."""
    try:
        if job["runs"] >= MAX_RUNS:
            _finish(svc, job, Outcome(JobStatus.DEAD, dead_letter=True,
                                      error=f"interrupted {job['runs']} times"))
        else:
            with svc.db.connection() as conn:
                lifecycle.requeue(conn, job, publish=publish)
    except Exception:
        log.exception("could not hand job %s back; the sweeper will", job["id"])


def sweep(svc: Services) -> dict[str, int]:
    """The relay's minute: re-queue jobs whose worker died (expired lease) — burying those that
    used their attempts —, re-send messages the broker may have lost, fill free slots a
    hand-over missed, publish what the outbox holds."""
    requeued = dead = 0
    for job in lifecycle.expired(svc.db):
        if job["runs"] >= MAX_RUNS:
            error = f"lease expired after {job['runs']} runs (killed or out of memory)"
            dead += _finish(svc, job, Outcome(JobStatus.DEAD, dead_letter=True, error=error),
                            fence=lifecycle.FENCE_EXPIRED)
        else:
            with svc.db.connection() as conn:
                requeued += lifecycle.requeue_expired(conn, job)
    # Re-send no more messages than the broker is missing (when it can tell): a long but
    # healthy queue is not a lost one.
    counter = getattr(svc.publisher, "in_broker", None)
    in_broker = counter(svc.settings.lost_message_seconds) if counter is not None else None
    missing = None if in_broker is None else max(
        0, outbox.published_unclaimed(svc.db) - in_broker)
    resent = outbox.requeue_lost(svc.db, svc.settings.lost_message_seconds, missing)
    filled = 0
    limits = {name: svc.settings.slots(name) for name in svc.settings.plans.names}
    for ws in slots.stranded(svc.db, limits):
        runnable = slots.fill_workspace(svc.db, ws["id"], svc.settings.slots(ws["plan"]))
        outbox.publish_all(svc.db, svc.publisher, runnable)
        filled += len(runnable)
    published = outbox.relay_outbox(svc.db, svc.publisher,
                                      svc.settings.outbox_relay_after_seconds)
    return {"requeued": requeued, "dead": dead, "resent": resent, "filled": filled,
            "published": published}


def _fail(svc: Services, job: dict, error: str) -> JobStatus | Run:
    """End the run failed before any provider is paid."""
    return JobStatus.FAILED if _finish(svc, job, Outcome(JobStatus.FAILED, error=error)) \
        else Run.LOST


def _run(svc: Services, job: dict) -> JobStatus | Run:
    if job["runs"] == 1 and job["runnable_at"] is not None:  # first start
        QUEUE_WAIT.labels(job["queue"]).observe(
            max(0.0, (job["started_at"] - job["runnable_at"]).total_seconds()))
        WORKSPACE_WAIT.labels(job["queue"]).observe(
            max(0.0, (job["runnable_at"] - job["created_at"]).total_seconds()))
    plan = svc.settings.plans[job["plan"]]
    template = TEMPLATES[job["template"]]
    max_tokens, max_searches = caps(plan, template)
    person_level = person_level_allowed(job["region"], job["person_level_enabled"])
    if template.person_level and not person_level:
        # The workspace moved to the EU (or switched person-level off) while this was queued.
        error = "person-level enrichment is disabled for this workspace"
        return _fail(svc, job, error)
    if job["suppressed"]:  # an objection or erasure since admission: no provider call
        return _fail(svc, job, states.SUPPRESSED_ERROR)
    if not in_this_period(svc, job):  # the month turned and its cap is reached
        error = "hard-cap-reached: the job first ran in a new billing period with no unit left"
        return _fail(svc, job, error)
    retries = 0

    def on_retry(provider: str, exc: BaseException) -> None:
        nonlocal retries
        retries += 1

    livemode = job["livemode"]
    policy = svc.call_policy(
        livemode, on_retry=on_retry,
        deadline=time.monotonic() + svc.settings.provider_round_seconds,
    )
    # Only company fields leave for a company-level job where person-level is off.
    lead = job["lead"] if template.person_level or person_level else company_only(job["lead"])
    if not lead:  # nothing but personal fields, which may not be used here: no paid call
        error = "person-level enrichment is off for this workspace and the lead has no company"
        return _fail(svc, job, error)
    try:
        found = waterfall.enrich(svc, template, lead, float(job["min_confidence"]), policy,
                                 max_tokens=max_tokens, max_searches=max_searches,
                                 livemode=livemode)
    except ProviderError as exc:
        if exc.busy and policy.sent == 0:
            # The shared provider limit has no slot within this round (a 429's Retry-After
            # holds every worker back): nothing was sent, so the job waits and runs later.
            with svc.db.connection() as conn:
                lifecycle.requeue(conn, job, delay=exc.retry_after or 0.0, counts=False,
                                 relay_after=svc.settings.outbox_relay_after_seconds)
            return Run.DEFERRED
        status = JobStatus(exc.final_status)
        outcome = _spent(svc, policy.spend, Outcome(
            status, max_tokens=max_tokens, max_searches=max_searches, error=str(exc),
            dead_letter=True, retries=retries))
        if not _finish(svc, job, outcome):
            return Run.LOST
        if livemode:  # (test mode sends no events)
            svc.events.capture("api_error", str(job["workspace_id"]), {
                "job_id": str(job["id"]), "plan": plan.name, "template": template.name,
                "provider": exc.provider, "status_code": exc.status, "final_status": status,
            })
        return status

    # Charged only for a match: a value at or above the job's min_confidence (and never in
    # test mode: FINISH writes 0 units for a test job).
    completeness, fields = found.completeness, found.fields
    outcome = _spent(svc, policy.spend, Outcome(
        JobStatus.SUCCEEDED, units=1 if found.match else 0, max_tokens=max_tokens,
        max_searches=max_searches, result={
            "fields": found.fields, "citations": found.citations,
            "completeness": found.completeness, "provenance": found.provenance,
            "trace": found.trace},
        retries=retries, match=found.match))
    if not _finish(svc, job, outcome):
        return Run.LOST
    if outcome.status is not JobStatus.SUCCEEDED or not livemode:  # suppressed; test mode
        return outcome.status
    COMPLETENESS.labels(template.name).observe(completeness)
    workspace_id = str(job["workspace_id"])
    svc.events.capture("enrichment_succeeded", workspace_id, {
        "job_id": str(job["id"]), "plan": plan.name, "template": template.name,
        "completeness": completeness, "tokens": outcome.tokens, "searches": outcome.searches,
        "attempts": job["attempts"] + retries,
    })
    if completeness < QUALITY_THRESHOLD:
        svc.events.capture("enrichment_quality_issue", workspace_id, {
            "job_id": str(job["id"]), "plan": plan.name, "template": template.name,
            "completeness": completeness, "threshold": QUALITY_THRESHOLD,
            "missing_fields": sorted(name for name in template.fields if not fields.get(name)),
        })
    return JobStatus.SUCCEEDED


def in_this_period(svc: Services, job: dict) -> bool:
    """One period per unit: a job admitted in an earlier billing period moves its unit into
    the current one before any provider is paid (units ledger), under the cap of the plan in
    force now. False: no unit is left."""
    period = period_start(svc.clock())
    if job["billing_period"] is None or job["billing_period"] == period:
        return True
    with svc.db.connection() as conn, conn.transaction():
        workspace = slots.lock_workspace(conn, job["workspace_id"])
        if workspace is None:
            return False
        cap = hard_cap(conn, svc.settings.plans[workspace["plan"]], job["workspace_id"],
                       period, workspace["plan_since"])
        if not lifecycle.move_unit(conn, job, period, cap, svc.clock()):
            return False
    job["billing_period"] = period
    return True


def _spent(svc: Services, spend: Spend, outcome: Outcome) -> Outcome:
    outcome.tokens, outcome.searches = spend.tokens, spend.searches
    outcome.social_requests = spend.social_requests
    outcome.cost_estimate_usd = waterfall.estimate_cost(svc, spend)
    return outcome
