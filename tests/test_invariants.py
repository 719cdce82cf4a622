"""The contract's invariants, checked by a stateful property test (hypothesis
`RuleBasedStateMachine`) on the real PostgreSQL and Redis — no mocks, no worker: the domain
functions are called directly, with an injected clock the machine moves.

One workspace (a tiny plan: 2 units included, hard cap 3), a webhook endpoint (so a job's end
writes its messages), a pool of three named subjects (so objections and erasures hit queued
and running jobs) plus fresh one-off leads. Rules: submit one lead or a batch, claim a queued
job, finish a running one (match / no match / failure / dead), erase or object to a subject,
buy a credit pack, refund it (in full or in part), lose a dispute, change plan, move the
clock (it starts ten minutes before a year ends, so month ends are crossed often), run the
nightly report.

The model keeps its own simple book — what it admitted and when, what the contract says each
job's end costs, the credits bought and taken back, when each subject was suppressed — and
after every step the database is checked against it (`contract_holds`):

* Suppression: a job that ends after its subject's objection or erasure ends failed, with no
  result, 0 units and no webhook message; no message about an objected subject's jobs
  remains queued; a suppressed subject is never admitted again.
* Units: every charged unit was reserved in the period it is charged in; the reservation
  counter agrees with the model (a unit charged at most once, given back at most once); in
  every period the units reserved or charged never exceed the period's hard cap (included +
  50 % + credits, the plan-change rule) — where a refunded or lost-disputed pack's units are
  taken back from what is not yet spent, and units only reserved when the refund arrived go
  to the take-back first when they come back.
* The nightly report never bills more overage units in a period than were charged in it.
* The daily usage rollup the usage endpoint and billing read equals the usage rows it sums.

Each violated invariant raises its own exception class from its own line, so hypothesis
reports (and shrinks) each distinct defect separately.

The calls into the domain are the small set of functions under "The domain" below: repoint
them when the code moves. Narrow the machine with INVARIANTS_DISABLE=rule,rule (e.g. to get
a clean minimal example of one defect); INVARIANTS_EXAMPLES / INVARIANTS_STEPS size the run;
INVARIANTS_START moves the clock's start (ISO time, UTC).

Run on the code before issue 20's fixes, this machine found (minimal examples in the issue's
closing note): a refund while units were only reserved let the refunded credit be spent again
once those units came back; a job finished after its subject's objection stored its result,
charged its unit and queued a message carrying the e-mail; a unit reserved on the month's
last minute was charged in the next month (dated by PostgreSQL's clock); a suppressed job's
`job.failed` message still carried the e-mail; a plan change was dated by PostgreSQL's clock,
not the service's."""

from __future__ import annotations

import inspect
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, Phase, settings, target
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from enrichment import pipeline, privacy, webhooks
from enrichment.authguard import KeyCache
from enrichment.billing import LedgerBilling, accounts, stripe_events
from enrichment.billing import report as billing_report
from enrichment.billing.usage import rollup_drift
from enrichment.config import CreditPack, Plan, Plans
from enrichment.jobs import intake, lifecycle, service, slots
from enrichment.jobs.states import SUPPRESSED_ERROR, JobStatus, Outcome
from enrichment.periods import next_period_start, period_start
from enrichment.workspaces import Workspace, create_workspace

from .conftest import TABLES

# --- configuration of the model ------------------------------------------------------------

PLANS = Plans(
    plans={"tiny": Plan("tiny", "core", 1.0, 60, included=2, overage_usd=Decimal("0.10")),
           "small": Plan("small", "pro", 1.0, 60, included=4, overage_usd=Decimal("0.08"))},
    queue_weights={"pro": 2, "core": 1},
    packs={"p2": CreditPack("p2", 2, Decimal("2.00")),
           "p3": CreditPack("p3", 3, Decimal("3.00"))})
FIRST_PLAN = "tiny"
SLOTS = 2  # the workspace's slots (jobs queued or running at once)
LEASE_SECONDS = 3600
SUBJECTS = ("ann", "bob", "cy")
JOB_TEMPLATES = ("person_basic", "person_social")
STEPS = (timedelta(minutes=5), timedelta(minutes=20), timedelta(hours=7), timedelta(days=1),
         timedelta(days=9), timedelta(days=31))


def _start() -> datetime:
    """Ten minutes before a month (and a year) ends — a fixed instant, whatever the day the
    suite runs on (INVARIANTS_START moves it). Its first step over midnight is a new period."""
    if os.environ.get("INVARIANTS_START"):
        return datetime.fromisoformat(os.environ["INVARIANTS_START"]).astimezone(UTC)
    return datetime(2026, 12, 31, 23, 50, tzinfo=UTC)


START = _start()
DISABLED = {r.strip() for r in os.environ.get("INVARIANTS_DISABLE", "").split(",") if r.strip()}
SETTINGS = settings(
    max_examples=int(os.environ.get("INVARIANTS_EXAMPLES", "100")),
    stateful_step_count=int(os.environ.get("INVARIANTS_STEPS", "40")),
    deadline=None, database=None,
    # No `explain` phase: its tracing makes every step many times slower on Python < 3.12.
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def email(subject: str) -> str:
    return f"{subject}@model.test"


# --- the domain: every call the model makes into the code under test ------------------------

def _call(fn, *args, now: datetime, **kwargs):
    """Call a domain function, giving it the injected clock if it takes one (`now`)."""
    try:
        takes_now = "now" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_now = False
    return fn(*args, **(kwargs | {"now": now} if takes_now else kwargs))


def reset(svc) -> None:
    """An empty database and Redis DB. The `db` fixture TRUNCATEs; a DELETE of these few rows
    is ten times faster (hypothesis runs hundreds of examples): the workspaces' rows go with
    them (ON DELETE CASCADE), then the tables that name no workspace."""
    with svc.db.connection() as conn, conn.transaction():
        for table in ("workspaces", "stripe_events", "credit_reversals", "billing_catalog",
                      "alert_states", "alert_events"):
            conn.execute(f"DELETE FROM {table}")
        left = [t for t in TABLES if conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM {t}) AS any").fetchone()["any"]]
        assert not left, f"not emptied by the reset: {left}"
    svc.redis.flushdb()


def new_workspace(svc) -> uuid.UUID:
    """A workspace on the first plan, with a webhook endpoint subscribed to every event."""
    with svc.db.connection() as conn:
        ws, _ = create_workspace(conn, PLANS, "Model", FIRST_PLAN, "us")
        webhooks.create_endpoint(conn, ws.id, "http://127.0.0.1:9/hooks", list(webhooks.EVENTS),
                                 allow_private=True)
    return ws.id


def load_workspace(conn, workspace_id: uuid.UUID) -> Workspace:
    row = conn.execute("SELECT id, name, plan, region, person_level_enabled, plan_since"
                       " FROM workspaces WHERE id = %s", (workspace_id,)).fetchone()
    return Workspace(row["id"], row["name"], row["plan"], row["region"],
                     row["person_level_enabled"], row["plan_since"])


@dataclass
class Admission:
    kind: str  # new | replayed | cached | refused
    job_id: uuid.UUID | None = None
    why: str | None = None


class Unsent:
    """The model's publisher: messages are not its concern (the outbox holds them)."""

    def publish(self, job_id: str, queue: str) -> None:
        pass

    def send_webhook(self, delivery_id: str, countdown: float | None = None) -> None:
        pass


def at(svc, now: datetime):
    """The services as the model runs them: its plans, its clock, no broker."""
    return replace(svc, clock=lambda: now, publisher=Unsent(),
                   settings=replace(svc.settings, plans=PLANS, workspace_concurrency=SLOTS))


def admit(svc, workspace_id, lead: dict, template: str, now: datetime,
          batch_id: uuid.UUID | None = None) -> Admission:
    with svc.db.connection() as conn:
        ws = load_workspace(conn, workspace_id)
    try:
        done = service.submit(at(svc, now), ws, template, lead, {}, intake.CACHE_DAYS,
                              batch_id=batch_id)
    except intake.Refused as exc:
        return Admission("refused", why=exc.slug)
    kind = "replayed" if done.replayed else "cached" if done.cached else "new"
    return Admission(kind, done.job["id"])


def admit_batch(svc, workspace_id, leads: list[dict], template: str,
                now: datetime) -> list[Admission]:
    """A batch, as POST /enrichment/batch does it: the batch row, each lead admitted on its
    own, then its items and `submitted_at` (from which it can complete)."""
    batch_id = service.open_batch(at(svc, now), workspace_id, template, len(leads))
    results = [admit(svc, workspace_id, lead, template, now, batch_id) for lead in leads]
    service.close_batch(at(svc, now), workspace_id, batch_id,
                        [(i, r.job_id, r.kind == "refused") for i, r in enumerate(results)])
    return results


def claimable(svc, workspace_id) -> list[uuid.UUID]:
    with svc.db.connection() as conn:
        return [r["id"] for r in conn.execute(
            "SELECT id FROM enrichment_jobs WHERE workspace_id = %s AND status = 'queued'"
            " ORDER BY created_at, id", (workspace_id,))]


def claim(svc, job_id, now: datetime) -> dict | None:
    return _call(lifecycle.claim, svc.db, str(job_id), LEASE_SECONDS, now=now)


OUTCOMES = {
    "match": lambda: Outcome(JobStatus.SUCCEEDED, units=1, match=True, tokens=100,
                             result={"fields": {"title": "CTO", "linkedin": "https://l.test/x"},
                                     "citations": ["https://l.test/x"], "completeness": 0.4}),
    "no_match": lambda: Outcome(JobStatus.SUCCEEDED, units=0, match=False,
                                result={"fields": {"title": None}, "citations": [],
                                        "completeness": 0.0}),
    "failure": lambda: Outcome(JobStatus.FAILED, error="provider said 400", dead_letter=True),
    "dead": lambda: Outcome(JobStatus.DEAD, error="retries used up", dead_letter=True),
}


def finish(svc, job: dict, how: str, now: datetime) -> bool:
    """End a claimed job as the pipeline does (a job claimed suppressed ends failed, no
    provider call; otherwise `how`). False if its lease was lost (erased while running): the
    slot it held is then handed on."""
    if job["suppressed"]:
        outcome = Outcome(JobStatus.FAILED, error=SUPPRESSED_ERROR)
    elif not pipeline.in_this_period(at(svc, now), job):
        outcome = Outcome(JobStatus.FAILED, error="hard-cap-reached")
    else:
        outcome = OUTCOMES[how]()
    with svc.db.connection() as conn:
        written = _call(lifecycle.finish, conn, job, outcome, SLOTS, now=now)
    if written is None:
        _call(slots.fill_workspace, svc.db, job["workspace_id"], SLOTS, now=now)
        return False
    service.after_commit(at(svc, now), written, outcome.events)
    return True


def erase(svc, workspace_id, identifier: str, now: datetime) -> None:
    with svc.db.connection() as conn:
        ws = load_workspace(conn, workspace_id)
    service.erase(at(svc, now), ws, identifier)


def object_to(svc, workspace_id, identifier: str, now: datetime) -> None:
    with svc.db.connection() as conn:
        _call(privacy.record_consent, conn, workspace_id, privacy.Consent(
            identifier, "enrichment", "legitimate_interest", False, "model"), now=now)


def stripe_event(svc, kind: str, obj: dict, now: datetime) -> str:
    event = {"id": f"evt_{uuid.uuid4().hex}", "type": kind, "created": int(now.timestamp()),
             "data": {"object": obj}}
    with svc.db.connection() as conn:
        return stripe_events.handle_event(conn, PLANS, svc.events, event)


def buy_pack(svc, workspace_id, pack: str, now: datetime) -> tuple[str, int]:
    """A Checkout session recorded as `start_checkout` records it, then paid
    (checkout.session.completed, paid). Returns (payment intent, amount in cents)."""
    units, cents = PLANS.packs[pack].units, int(PLANS.packs[pack].price_usd * 100)
    session, intent = f"cs_{uuid.uuid4().hex}", f"pi_{uuid.uuid4().hex}"
    with svc.db.connection() as conn:
        conn.execute("INSERT INTO checkout_sessions (id, workspace_id, pack, units,"
                     " amount_cents, currency, customer) VALUES (%s, %s, %s, %s, %s, 'usd', NULL)",
                     (session, workspace_id, pack, units, cents))
    stripe_event(svc, "checkout.session.completed", {
        "id": session, "customer": None, "amount_total": cents, "currency": "usd",
        "payment_status": "paid", "payment_intent": intent}, now)
    return intent, cents


def refund(svc, intent: str, amount: int, refunded_so_far: int, now: datetime) -> None:
    stripe_event(svc, "charge.refunded", {"payment_intent": intent, "amount": amount,
                                          "amount_refunded": refunded_so_far}, now)


def lose_dispute(svc, intent: str, now: datetime) -> None:
    stripe_event(svc, "charge.dispute.closed", {"payment_intent": intent, "status": "lost"},
                 now)


def set_plan(svc, key_cache, workspace_id, plan: str, now: datetime) -> bool:
    """What `enrichment workspace set-plan` does (without Stripe: ledger-only billing)."""
    with svc.db.connection() as conn:
        return _call(accounts.set_plan, conn, key_cache, PLANS, workspace_id, plan, now=now)


def nightly_report(svc, now: datetime) -> None:
    """The overage report for the closed days (what the beat task runs), ledger-only."""
    billing_report.report(svc.db, PLANS, LedgerBilling(), svc.events,
                          now.date() - timedelta(days=1), now)


# What the database says (read-only).

def reservation_counters(conn, workspace_id) -> dict[date, int]:
    """Units held per period (usage_counters: in this code, the units of the period's queued,
    running and charged jobs). If the units ledger changes what it stores, repoint this so it
    still returns, per period, the units reserved by unfinished jobs plus those charged."""
    return {r["period"]: int(r["reserved"]) for r in conn.execute(
        "SELECT period, reserved FROM usage_counters WHERE workspace_id = %s", (workspace_id,))}


def charges(conn, workspace_id) -> list[dict]:
    """Charged units: usage rows with units > 0, with their date."""
    return conn.execute("SELECT job_id, units, created_at FROM enrichment_usage"
                        " WHERE workspace_id = %s AND units > 0", (workspace_id,)).fetchall()


def job_traces(conn, mail: dict) -> dict:
    """Per job (id -> its subject's e-mail): its status (None: erased), whether a result is
    stored, the units charged, and its webhook messages (event, and whether it carries the
    e-mail)."""
    if not mail:
        return {}
    rows = conn.execute(
        "SELECT x.id, j.status,"
        " EXISTS (SELECT 1 FROM enrichment_results r WHERE r.job_id = x.id) AS result,"
        " (SELECT coalesce(sum(units), 0) FROM enrichment_usage u WHERE u.job_id = x.id)"
        "  AS units,"
        " (SELECT coalesce(array_agg(d.event_type || CASE WHEN d.payload::text LIKE"
        "   '%%' || x.mail || '%%' THEN ' (carrying ' || x.mail || ')' ELSE '' END), '{}')"
        "  FROM webhook_deliveries d WHERE d.job_id = x.id) AS messages"
        " FROM unnest(%s::uuid[], %s::text[]) AS x(id, mail)"
        " LEFT JOIN enrichment_jobs j ON j.id = x.id",
        (list(mail), list(mail.values()))).fetchall()
    return {r["id"]: r for r in rows}


def overage_reported(conn, workspace_id) -> dict[date, int]:
    return {r["period"]: int(r["n"]) for r in conn.execute(
        "SELECT period, sum(units) AS n FROM usage_reports WHERE workspace_id = %s"
        " GROUP BY period", (workspace_id,))}


# --- the invariants' failures: one class each, so each defect is reported on its own ---------

class ContractViolation(AssertionError):
    pass


class SuppressedJobKept(ContractViolation):
    """A job that ended after its subject's objection or erasure kept a result, a unit, or
    did not end failed."""


class SuppressedMessageSent(ContractViolation):
    """A webhook message about an objected subject's job is queued."""


class SuppressedSubjectAdmitted(ContractViolation):
    """A suppressed subject got a new job."""


class ChargeOutsideReservedPeriod(ContractViolation):
    """A unit charged in a period other than the one it was reserved in."""


class CounterDrift(ContractViolation):
    """The reservation counter or the charges disagree with the model: a unit charged twice,
    never charged, given back twice or never given back."""


class CapExceeded(ContractViolation):
    """More units reserved or charged in a period than its hard cap."""


class CapExceededAfterRefund(ContractViolation):
    """More units reserved or charged in a period than its hard cap, with a pack's credit
    taken back (refund, lost dispute)."""


class CapExceededAfterPlanChange(ContractViolation):
    """More units reserved or charged in a period than its hard cap, in a period whose plan
    changed."""


class OverageOverBilled(ContractViolation):
    """The nightly report billed more overage units in a period than were charged in it."""


class RollupDrift(ContractViolation):
    """`usage_daily` differs from the usage rows of some day."""


# --- the model -------------------------------------------------------------------------------

@dataclass
class MJob:
    id: uuid.UUID
    subject: str  # its e-mail
    period: date  # the period of its unit: admission's, or the one it first ran in
    step: int
    state: str  # pending (unit reserved) | charged | released | cached (no unit)
    ended_suppressed: bool = False  # ended after its subject's objection or erasure


@dataclass
class MPeriod:
    start: date
    base: int  # the highest plan cap in force in the period (included + 50 %, plan changes)
    included: int  # included units the billing walk uses first (0 once the plan changed)
    bought: int = 0  # credit units paid in the period
    taken: int = 0  # credit units taken back (at once, or as reserved units came back)
    debt: int = 0  # units still to take back from reserved units as they come back
    owed: set = field(default_factory=set)  # the jobs reserved when that debt arose
    plan_changed: bool = False
    refunded: bool = False

    @property
    def cap(self) -> int:
        return self.base + self.bought - self.taken


@dataclass
class MPack:
    intent: str
    units: int
    cents: int
    period: date
    refunded_cents: int = 0
    wanted: int = 0  # units the reversals call for so far


def grant(plan: Plan, start: date, period: date) -> int:
    """The included units a plan in force from `start` grants in the period (prorated)."""
    if start <= period:
        return plan.included
    days = (next_period_start(period) - period).days
    return plan.included * (next_period_start(period) - start).days // days


def enabled(name: str):
    return precondition(lambda self: name not in DISABLED)


subjects = st.one_of(st.none(), st.sampled_from(SUBJECTS))  # None: a fresh one-off lead
templates = st.sampled_from(JOB_TEMPLATES)


class ContractMachine(RuleBasedStateMachine):
    svc = None  # the test's services
    key_cache = None

    @initialize()
    def empty_world(self):
        reset(self.svc)
        self.ws = new_workspace(self.svc)
        self.clock = START
        self.step = 0
        self.plan = FIRST_PLAN
        self.jobs: dict[uuid.UUID, MJob] = {}
        self.running: dict[uuid.UUID, dict] = {}  # claimed jobs, by claim order
        self.suppressed: dict[str, tuple[int, str]] = {}  # e-mail -> (step, how)
        self.periods: dict[date, MPeriod] = {}
        self.packs: list[MPack] = []
        self.fresh = 0
        self.violations: list[str] = []  # found during a rule, raised by the invariant
        self.closest = -99  # the least headroom seen (units used - cap), to steer generation
        self.owed = 0  # the most credit owed by reserved units seen, likewise
        self.period(self.clock)

    # -- bookkeeping ------------------------------------------------------------------------

    def period(self, at: datetime | date) -> MPeriod:
        start = period_start(at) if isinstance(at, datetime) else at.replace(day=1)
        if start not in self.periods:
            plan = PLANS[self.plan]
            self.periods[start] = MPeriod(start, plan.hard_cap, plan.included)
        return self.periods[start]

    def count(self, period: date, state: str) -> int:
        return sum(j.period == period and j.state == state for j in self.jobs.values())

    def released(self, job: MJob) -> None:
        """The job's reserved unit comes back: first to a refund's take-back, while its
        period is current (a period that has ended takes nothing back)."""
        job.state = "released"
        p = self.periods[job.period]
        if job.id in p.owed:
            p.owed.discard(job.id)
            if p.debt > 0 and period_start(self.clock) == p.start:
                p.debt -= 1
                p.taken += 1

    def moves(self, job: MJob) -> bool:
        """One period per unit: a job first run in a later period moves its unit there if
        that period's cap has room; else it ends failed and its unit comes back."""
        now = period_start(self.clock)
        if job.period == now:
            return True
        self.periods[job.period].owed.discard(job.id)  # an ended period takes nothing back
        new = self.period(self.clock)
        if self.count(now, "pending") + self.count(now, "charged") >= new.cap:
            job.state = "released"
            return False
        job.period = now
        return True

    def reverse(self, pack: MPack, fraction: float) -> None:
        wanted = int(pack.units * fraction)
        more, pack.wanted = wanted - pack.wanted, max(pack.wanted, wanted)
        if more <= 0 or period_start(self.clock) != pack.period:
            return  # a period that has ended has no unused credit to take back
        p = self.periods[pack.period]
        p.refunded = True
        used = self.count(p.start, "pending") + self.count(p.start, "charged")
        credits = p.bought - p.taken
        spent = min(max(0, used - p.included), credits)  # credits come after included units
        take = min(more, max(0, credits - spent - p.debt))
        p.taken += take
        p.debt += more - take
        if p.debt:
            p.owed |= {j.id for j in self.jobs.values()
                       if j.period == p.start and j.state == "pending"}

    def lead(self, subject: str | None) -> dict:
        if subject is None:
            self.fresh += 1
            return {"email": email(f"lead{self.fresh}"), "name": f"Lead {self.fresh}"}
        return {"email": email(subject), "name": subject.title()}

    def admitted(self, lead: dict, result: Admission) -> None:
        mail = lead["email"]
        if result.kind in ("new", "cached") and mail in self.suppressed:
            self.violations.append(
                f"{mail} was suppressed ({self.suppressed[mail][1]}) at step "
                f"{self.suppressed[mail][0]}, yet admission gave it a {result.kind} job")
        if result.kind in ("new", "cached") and result.job_id not in self.jobs:
            self.jobs[result.job_id] = MJob(
                result.job_id, mail, period_start(self.clock), self.step,
                "pending" if result.kind == "new" else "cached")

    # -- rules ------------------------------------------------------------------------------

    @enabled("submit")
    @rule(subject=subjects, template=templates)
    def submit(self, subject, template):
        self.step += 1
        lead = self.lead(subject)
        self.admitted(lead, admit(self.svc, self.ws, lead, template, self.clock))

    @enabled("batch")
    @rule(batch=st.lists(subjects, min_size=2, max_size=6), template=templates)
    def submit_batch(self, batch, template):
        self.step += 1
        leads = [self.lead(s) for s in batch]
        for lead, result in zip(leads, admit_batch(self.svc, self.ws, leads, template,
                                                   self.clock), strict=True):
            self.admitted(lead, result)

    @enabled("claim")
    @rule(pick=st.integers(0, 7))
    def claim(self, pick):
        self.step += 1
        queued = claimable(self.svc, self.ws)
        if queued:
            job = claim(self.svc, queued[pick % len(queued)], self.clock)
            if job is not None:
                self.running[job["id"]] = job

    @enabled("finish")
    @precondition(lambda self: self.running)
    @rule(pick=st.integers(0, 7), how=st.sampled_from(tuple(OUTCOMES)))
    def finish(self, pick, how):
        self.step += 1
        job_id = list(self.running)[pick % len(self.running)]
        job = self.running.pop(job_id)
        mine = self.jobs[job_id]
        runs = mine.state != "pending" or mine.subject in self.suppressed or self.moves(mine)
        if not finish(self.svc, job, how, self.clock):
            return  # erased while it ran: nothing written, its unit came back at the erasure
        if mine.subject in self.suppressed:
            mine.ended_suppressed = True
            self.released(mine)
        elif not runs:
            return  # its new period had no unit left: failed, unit back (see moves)
        elif how == "match":
            mine.state = "charged"
            self.periods[mine.period].owed.discard(job_id)
        else:
            self.released(mine)

    @enabled("erase")
    @rule(subject=st.sampled_from(SUBJECTS))
    def erase_subject(self, subject):
        self.step += 1
        erase(self.svc, self.ws, email(subject), self.clock)
        self.suppressed.setdefault(email(subject), (self.step, "erasure"))
        for job in self.jobs.values():
            if job.subject == email(subject) and job.state == "pending":
                self.released(job)

    @enabled("object")
    @rule(subject=st.sampled_from(SUBJECTS))
    def object_subject(self, subject):
        self.step += 1
        object_to(self.svc, self.ws, email(subject), self.clock)
        self.suppressed.setdefault(email(subject), (self.step, "objection"))

    @enabled("buy")
    @rule(pack=st.sampled_from(tuple(PLANS.packs)))
    def buy_pack(self, pack):
        self.step += 1
        intent, cents = buy_pack(self.svc, self.ws, pack, self.clock)
        self.packs.append(MPack(intent, PLANS.packs[pack].units, cents,
                                period_start(self.clock)))
        self.period(self.clock).bought += PLANS.packs[pack].units

    @enabled("refund")
    @precondition(lambda self: self.packs)
    @rule(pick=st.integers(0, 3), full=st.booleans())
    def refund_pack(self, pick, full):
        self.step += 1
        pack = self.packs[pick % len(self.packs)]
        pack.refunded_cents = pack.cents if full else min(
            pack.cents, pack.refunded_cents + pack.cents // 2)
        refund(self.svc, pack.intent, pack.cents, pack.refunded_cents, self.clock)
        self.reverse(pack, pack.refunded_cents / pack.cents)

    @enabled("dispute")
    @precondition(lambda self: self.packs)
    @rule(pick=st.integers(0, 3))
    def lose_dispute(self, pick):
        self.step += 1
        pack = self.packs[pick % len(self.packs)]
        lose_dispute(self.svc, pack.intent, self.clock)
        self.reverse(pack, 1.0)

    @enabled("plan")
    @rule(plan=st.sampled_from(tuple(PLANS.names)))
    def change_plan(self, plan):
        self.step += 1
        if not set_plan(self.svc, self.key_cache, self.ws, plan, self.clock):
            return
        self.plan = plan
        p = self.period(self.clock)
        # From now on: what was used before (at most what is charged so far), plus the new
        # plan's prorated grant and half again; what was admitted under the old cap stays.
        granted = grant(PLANS[plan], self.clock.date(), p.start)
        p.base = max(p.base, self.count(p.start, "charged") + granted + granted // 2)
        p.plan_changed, p.included = True, 0

    @enabled("advance")
    @rule(by=st.sampled_from(STEPS))
    def advance_clock(self, by):
        self.step += 1
        self.clock += by
        self.period(self.clock)

    @enabled("report")
    @rule()
    def run_report(self):
        self.step += 1
        nightly_report(self.svc, self.clock)

    # -- the invariants ---------------------------------------------------------------------

    @invariant()
    def contract_holds(self):
        with self.svc.db.connection() as conn:
            self.check_suppression(conn)
            self.check_charges(conn)
            self.check_caps(conn)
            self.check_report(conn)
            self.check_rollup(conn)

    def check_suppression(self, conn):
        if self.violations:
            raise SuppressedSubjectAdmitted("; ".join(self.violations))
        ended = [j for j in self.jobs.values() if j.ended_suppressed]
        traces = job_traces(conn, {j.id: j.subject for j in ended})
        for job in ended:
            t = traces[job.id]
            if t["result"] or t["units"] or t["status"] not in ("failed", None):
                step, how = self.suppressed[job.subject]
                raise SuppressedJobKept(
                    f"job {job.id} of {job.subject} ended after the {how} of step {step}, yet: "
                    f"status {t['status']}, result stored: {t['result']}, units charged: "
                    f"{t['units']}, webhook messages queued: {list(t['messages']) or 'none'}")
        theirs = [j for j in self.jobs.values() if j.subject in self.suppressed]
        traces = job_traces(conn, {j.id: j.subject for j in theirs})
        for job in theirs:
            if traces[job.id]["messages"]:
                step, how = self.suppressed[job.subject]
                raise SuppressedMessageSent(
                    f"job {job.id} of {job.subject} (status {traces[job.id]['status']}): "
                    f"webhook messages {list(traces[job.id]['messages'])} queued after the "
                    f"{how} of step {step}")

    def check_charges(self, conn):
        charged_by_reservation: dict[date, int] = defaultdict(int)
        for row in charges(conn, self.ws):
            job = self.jobs.get(row["job_id"])
            if job is None:
                raise CounterDrift(f"a unit charged for job {row['job_id']}, never admitted")
            charged_in = period_start(row["created_at"])
            if charged_in != job.period:
                raise ChargeOutsideReservedPeriod(
                    f"job {job.id} reserved its unit in the period of {job.period} (admitted "
                    f"at step {job.step}), but its unit is charged on "
                    f"{row['created_at'].isoformat()} (period of {charged_in}); the model's "
                    f"clock is {self.clock.isoformat()}")
            charged_by_reservation[job.period] += row["units"]
        counters = reservation_counters(conn, self.ws)
        for start in sorted(set(counters) | set(charged_by_reservation) | set(self.periods)):
            pending, charged = self.count(start, "pending"), self.count(start, "charged")
            if charged_by_reservation.get(start, 0) != charged:
                raise CounterDrift(
                    f"period of {start}: {charged_by_reservation.get(start, 0)} units charged, "
                    f"the model expects {charged}")
            if counters.get(start, 0) != pending + charged:
                raise CounterDrift(
                    f"period of {start}: {counters.get(start, 0)} units reserved, the model "
                    f"expects {pending} queued or running + {charged} charged")

    def check_caps(self, conn):
        counters = reservation_counters(conn, self.ws)
        elsewhere: dict[date, int] = defaultdict(int)  # charged here, reserved in another period
        for row in charges(conn, self.ws):
            if period_start(row["created_at"]) != self.jobs[row["job_id"]].period:
                elsewhere[period_start(row["created_at"])] += row["units"]
        for start in sorted(set(counters) | set(elsewhere)):
            used = counters.get(start, 0) + elsewhere.get(start, 0)
            p = self.periods.get(start)
            if p is None:
                if used:
                    raise CapExceeded(f"period of {start}: {used} units reserved or charged, "
                                      "but the model's clock was never in it")
                continue
            self.closest, self.owed = max(self.closest, used - p.cap), max(self.owed, p.debt)
            if used <= p.cap:
                continue
            what = (f"period of {start}: {used} units reserved or charged, over its hard cap "
                    f"{p.cap} (plan cap {p.base} + {p.bought} credit units bought - {p.taken} "
                    f"taken back; {p.debt} still owed by reserved units); the model's clock is "
                    f"{self.clock.isoformat()}")
            if p.plan_changed:
                raise CapExceededAfterPlanChange(what)
            if p.refunded:
                raise CapExceededAfterRefund(what)
            raise CapExceeded(what)

    def teardown(self):
        if hasattr(self, "closest"):  # targeted generation: towards full caps, owed credit
            target(float(self.closest), label="units used - hard cap")
            target(float(self.owed), label="credit owed by reserved units")

    def check_rollup(self, conn):
        for start in sorted(self.periods):
            if drift := rollup_drift(conn, start):
                raise RollupDrift(f"period of {start}: {drift}")

    def check_report(self, conn):
        charged: dict[date, int] = defaultdict(int)
        for row in charges(conn, self.ws):
            charged[period_start(row["created_at"])] += row["units"]
        for start, units in overage_reported(conn, self.ws).items():
            if units > charged.get(start, 0):
                raise OverageOverBilled(
                    f"period of {start}: {units} overage units reported, "
                    f"{charged.get(start, 0)} charged")


@pytest.mark.timeout(900)  # a passing run takes well under a minute; shrinking failures longer
def test_the_contract_holds_in_any_interleaving(services):
    ContractMachine.svc = services
    ContractMachine.key_cache = KeyCache(services.redis, PLANS)
    run_state_machine_as_test(ContractMachine, settings=SETTINGS)
