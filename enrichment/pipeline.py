"""The life of one job, from claim to result (DESIGN §1).

    workspace slot (or park the job as deferred: see slots.py)
    → claim (guarded: a duplicate delivery does nothing)
    → caps from the plan → providers (global provider limit, retries and backoff inside a
      30 s round) → fields, citations, completeness
    → result + usage + status (+ dead letter) in ONE transaction → event
    → release the slot, wake the workspace's next deferred job

A provider that keeps failing ends the job `dead` (transient errors, retries used up) or
`failed` (a final 4xx); either way the job gets a usage row with 0 units. No database
connection is held while providers are called.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from psycopg.types.json import Jsonb

from . import jobs, slots
from .admission import release_unit
from .config import PERPLEXITY_MAX_TOKENS, Plan
from .metrics import COMPLETENESS, DEAD_LETTERS, JOBS_FINISHED, QUEUE_WAIT
from .providers import ProviderError, ResearchResult, SocialResult
from .services import Services
from .templates import RESEARCH, SOCIAL, TEMPLATES, Template
from .workspaces import person_level_allowed

log = logging.getLogger(__name__)

RESULT_CACHE_TTL = timedelta(days=7)
QUALITY_THRESHOLD = 0.8  # the seed's alert line for completeness
MAX_ATTEMPTS = 5  # runs of one job (crashes, expired leases) before it is dead
COST_PLACES = Decimal("0.000001")


@dataclass
class Usage:
    units: int = 0
    tokens: int = 0
    searches: int = 0
    social_requests: int = 0
    max_tokens: int | None = None
    max_searches: int | None = None
    cost_estimate_usd: Decimal = Decimal(0)


def caps(plan: Plan, template: Template) -> tuple[int, int]:
    """(max output tokens, max searches) for one job of this plan and template."""
    max_tokens = min(plan.max_tokens or PERPLEXITY_MAX_TOKENS, PERPLEXITY_MAX_TOKENS)
    max_searches = template.searches
    if plan.max_searches is not None:
        max_searches = min(max_searches, plan.max_searches)
    return max_tokens, max_searches


def assemble(
    template: Template, research: ResearchResult | None, social: SocialResult | None
) -> tuple[dict, list[str], float]:
    """Fields, citations and completeness (share of the template's fields found)."""
    fields: dict[str, str | None] = dict.fromkeys(template.fields)
    citations: list[str] = []
    if research is not None:
        fields.update(research.fields)
        citations += research.citations
    if social is not None:
        for network in template.social_fields:
            urls = social.links.get(network) or []
            fields[network] = urls[0] if urls else None
            citations += [u for u in urls[:1] if u not in citations]
    found = sum(1 for name in template.fields if fields.get(name))
    return fields, citations, round(found / len(template.fields), 3)


def estimate_cost(svc: Services, research: ResearchResult | None, social_requests: int) -> Decimal:
    s = svc.settings
    cost = Decimal(0)
    if research is not None:
        if research.cost_usd is not None:
            cost += research.cost_usd
        else:
            cost += Decimal(research.tokens) / 1000 * s.perplexity_usd_per_1k_tokens
            cost += research.searches * s.perplexity_usd_per_search
    cost += social_requests * s.social_links_usd_per_request
    return cost.quantize(COST_PLACES)


def claim(svc: Services, job_id: str) -> dict | None:
    """Move a queued job (or one whose lease ran out) to processing under a fresh lease token.
    Returns the job with its workspace's plan, or None if someone else holds or finished it."""
    with svc.db.connection() as conn:
        return conn.execute(
            "UPDATE enrichment_jobs j SET status = 'processing', attempts = j.attempts + 1,"
            " started_at = coalesce(j.started_at, now()), lease_token = %s,"
            " lease_until = now() + make_interval(secs => %s)"
            " FROM workspaces w WHERE w.id = j.workspace_id AND j.id = %s"
            " AND (j.status = 'queued' OR (j.status = 'processing' AND j.lease_until < now()))"
            " RETURNING j.*, w.plan, w.region, w.person_level_enabled",
            (uuid.uuid4(), svc.settings.job_lease_seconds, job_id),
        ).fetchone()


def peek(svc: Services, job_id: str) -> dict | None:
    """The job's workspace and plan, if the job can be claimed now."""
    with svc.db.connection() as conn:
        return conn.execute(
            "SELECT j.workspace_id, w.plan FROM enrichment_jobs j"
            " JOIN workspaces w ON w.id = j.workspace_id WHERE j.id = %s"
            " AND (j.status = 'queued' OR (j.status = 'processing' AND j.lease_until < now()))",
            (job_id,)).fetchone()


def run_job(svc: Services, job_id: str) -> str:
    """Run one job to its end, within its workspace's concurrency. Returns the job's final
    status; 'deferred' when the workspace has no free slot (the job waits, parked, for a
    wake-up); 'skipped' for a duplicate delivery; 'lost' when the lease was taken over."""
    job = peek(svc, job_id)
    if job is None:
        return "skipped"
    workspace_id = job["workspace_id"]
    limit = concurrency(svc, job["plan"])
    holder = svc.slots.acquire(workspace_id, job_id, limit)
    if holder is None:
        if not slots.defer(svc.db, job_id):
            return "skipped"
        # A slot may have been released between our acquire and defer, its wake-up finding
        # nothing to wake: look once more before leaving the job parked.
        holder = svc.slots.acquire(workspace_id, job_id, limit)
        if holder is None:
            return "deferred"
        if not slots.undefer(svc.db, job_id):  # a wake-up re-sent it: that delivery runs it
            svc.slots.release(workspace_id, holder, limit)
            return "deferred"
    try:
        return _run_claimed(svc, job_id)
    finally:
        if svc.slots.release(workspace_id, holder, limit) > 0:
            slots.wake(svc.db, svc.publisher, workspace_id)


def concurrency(svc: Services, plan_name: str) -> int:
    return svc.settings.plans[plan_name].workspace_concurrency or (
        svc.settings.workspace_concurrency)


def sweep(svc: Services) -> dict[str, int]:
    """The relay's minute: re-queue jobs whose worker died (expired lease) or whose message
    the broker may have lost, wake parked jobs whose wake-up was lost, publish what the
    outbox holds."""
    requeued, dead = jobs.requeue_expired(svc.db, MAX_ATTEMPTS)
    requeued += jobs.requeue_lost(svc.db, svc.settings.lost_message_seconds)
    woken = wake_stranded(svc)
    published = jobs.relay_outbox(svc.db, svc.publisher, svc.settings.outbox_relay_after_seconds)
    return {"requeued": requeued, "dead": dead, "woken": woken, "published": published}


def wake_stranded(svc: Services) -> int:
    """Sweeper: wake deferred jobs whose workspace has free slots (a lost wake-up, or a slot
    freed by an expired lease). Returns how many were woken."""
    woken = 0
    for row in slots.deferred_workspaces(svc.db):
        free = svc.slots.free(row["workspace_id"], concurrency(svc, row["plan"]))
        woken += slots.wake(svc.db, svc.publisher, row["workspace_id"], free)
    return woken


def _run_claimed(svc: Services, job_id: str) -> str:
    job = claim(svc, job_id)
    if job is None:
        log.info("job %s not claimable (duplicate delivery or already finished)", job_id)
        return "skipped"
    try:
        return _run(svc, job_id, job)
    except BaseException:
        _hand_back(svc, job)
        raise


def _hand_back(svc: Services, job: dict) -> None:
    """Something unexpected stopped the run (a Redis or database blip, a time limit): put the
    job back in line at once, through the outbox, instead of leaving it to its lease — or
    bury it when it has used its attempts. Best effort: if this fails too, the sweeper acts
    when the lease runs out."""
    try:
        with svc.db.connection() as conn, conn.transaction():
            back = conn.execute(
                "UPDATE enrichment_jobs SET lease_token = NULL, lease_until = NULL,"
                " status = CASE WHEN attempts >= %s THEN 'dead' ELSE 'queued' END,"
                " completed_at = CASE WHEN attempts >= %s THEN now() END,"
                " error = CASE WHEN attempts >= %s THEN 'interrupted ' || attempts || ' times'"
                "   END"
                " WHERE id = %s AND status = 'processing' AND lease_token = %s RETURNING status",
                (MAX_ATTEMPTS, MAX_ATTEMPTS, MAX_ATTEMPTS, job["id"], job["lease_token"]),
            ).fetchone()
            if back and back["status"] == "queued":
                conn.execute("INSERT INTO job_outbox (job_id, queue) VALUES (%s, %s)"
                             " ON CONFLICT DO NOTHING", (job["id"], job["queue"]))
            elif back:
                release_unit(conn, job["workspace_id"], job["billing_period"])
    except Exception:
        log.exception("could not hand job %s back; the sweeper will", job["id"])


def _run(svc: Services, job_id: str, job: dict) -> str:
    if job["attempts"] == 1:  # first start: how long it waited in line
        QUEUE_WAIT.labels(job["queue"]).observe(
            (job["started_at"] - job["created_at"]).total_seconds())
    plan = svc.settings.plans[job["plan"]]
    template = TEMPLATES[job["template"]]
    max_tokens, max_searches = caps(plan, template)
    if template.person_level and not person_level_allowed(job["region"],
                                                          job["person_level_enabled"]):
        # The workspace moved to the EU (or switched person-level off) while this was queued.
        error = "person-level enrichment is disabled for this workspace"
        return "failed" if _finish(svc, job, "failed", Usage(), 0, error=error) else "lost"
    retries = 0

    def on_retry(provider: str, exc: BaseException) -> None:
        nonlocal retries
        retries += 1

    policy = svc.call_policy(
        on_retry=on_retry,
        deadline=time.monotonic() + svc.settings.provider_round_seconds,
    )
    lead = job["lead"]
    usage = Usage(max_tokens=max_tokens, max_searches=max_searches)
    research = social = None
    try:
        if RESEARCH in template.providers:
            research = svc.research.research(
                lead, template, max_tokens=max_tokens, max_searches=max_searches, policy=policy
            )
            usage.tokens, usage.searches = research.tokens, research.searches
        if SOCIAL in template.providers:
            social = svc.social.lookup(lead, template.social_fields, policy=policy)
            usage.social_requests = social.requests
    except ProviderError as exc:
        status = "dead" if exc.retryable else "failed"
        usage.cost_estimate_usd = estimate_cost(svc, research, usage.social_requests)
        if not _finish(svc, job, status, usage, retries, error=str(exc), dead_letter=True):
            return "lost"
        JOBS_FINISHED.labels(status).inc()
        DEAD_LETTERS.labels(status).inc()
        svc.events.capture("api_error", str(job["workspace_id"]), {
            "job_id": job_id, "plan": plan.name, "template": template.name,
            "provider": exc.provider, "status_code": exc.status, "final_status": status,
        })
        return status

    fields, citations, completeness = assemble(template, research, social)
    usage.units = 1
    usage.cost_estimate_usd = estimate_cost(svc, research, usage.social_requests)
    if not _finish(svc, job, "succeeded", usage, retries,
                   result=(fields, citations, completeness)):
        return "lost"
    JOBS_FINISHED.labels("succeeded").inc()
    COMPLETENESS.labels(template.name).observe(completeness)
    workspace_id = str(job["workspace_id"])
    svc.events.capture("enrichment_succeeded", workspace_id, {
        "job_id": job_id, "plan": plan.name, "template": template.name,
        "completeness": completeness, "tokens": usage.tokens, "searches": usage.searches,
        "attempts": job["attempts"] + retries,
    })
    if completeness < QUALITY_THRESHOLD:
        svc.events.capture("enrichment_quality_issue", workspace_id, {
            "job_id": job_id, "plan": plan.name, "template": template.name,
            "completeness": completeness, "threshold": QUALITY_THRESHOLD,
            "missing_fields": sorted(name for name in template.fields if not fields.get(name)),
        })
    return "succeeded"


def _finish(svc: Services, job: dict, status: str, usage: Usage, retries: int, *,
            error: str | None = None, result: tuple | None = None,
            dead_letter: bool = False) -> bool:
    """Write the outcome in one transaction, fenced by the lease token: if another worker took
    the job over (our lease expired), nothing is written and False is returned."""
    with svc.db.connection() as conn, conn.transaction():
        done = conn.execute(
            "UPDATE enrichment_jobs SET status = %s, error = %s, attempts = attempts + %s,"
            " completed_at = now(), lease_token = NULL, lease_until = NULL"
            " WHERE id = %s AND workspace_id = %s AND status = 'processing' AND lease_token = %s",
            (status, error, retries, job["id"], job["workspace_id"], job["lease_token"]),
        ).rowcount
        if not done:
            log.warning("job %s: lease lost before finishing; outcome discarded", job["id"])
            return False
        if result is not None:
            fields, citations, completeness = result
            conn.execute(
                "INSERT INTO enrichment_results (job_id, workspace_id, idempotency_key,"
                " template, fields, citations, completeness, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, now() + %s)",
                (job["id"], job["workspace_id"], job["idempotency_key"], job["template"],
                 Jsonb(fields), Jsonb(citations), completeness, RESULT_CACHE_TTL),
            )
        else:
            release_unit(conn, job["workspace_id"], job["billing_period"])
        if dead_letter:
            conn.execute(
                "INSERT INTO dead_letters (job_id, workspace_id, status, error, attempts)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (job_id) DO UPDATE SET"
                " status = excluded.status, error = excluded.error,"
                " attempts = excluded.attempts, created_at = now(), replayed_at = NULL",
                (job["id"], job["workspace_id"], status, error, job["attempts"] + retries))
        conn.execute(
            "INSERT INTO enrichment_usage (workspace_id, job_id, template, units, tokens,"
            " searches, social_requests, max_tokens, max_searches, cost_estimate_usd)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (job_id) DO NOTHING",
            (job["workspace_id"], job["id"], job["template"], usage.units, usage.tokens,
             usage.searches, usage.social_requests, usage.max_tokens, usage.max_searches,
             usage.cost_estimate_usd),
        )
    return True
