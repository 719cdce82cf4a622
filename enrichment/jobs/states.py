"""Job states, what a finished run reports, and what is published: the vocabulary every
module of the jobs service shares."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class JobStatus(StrEnum):
    WAITING = "waiting"  # behind its workspace's own jobs, no message in the broker
    QUEUED = "queued"  # holds a slot; its message is in its tier queue
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"

    @property
    def public(self) -> str:
        """The status the API shows: waiting is queued to the customer."""
        return JobStatus.QUEUED.value if self is JobStatus.WAITING else self.value


TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD)

DEFAULT_MIN_CONFIDENCE = 0.5  # a value less sure than this is not answered (nor charged)
CACHE_DAYS = 7  # a result answers a repeat of its lead this long (max_age_days: default, ceiling)

# The statuses a customer sees and filters by, and the states behind each (the one list).
PUBLIC_STATUSES: dict[str, tuple[str, ...]] = {}
for _state in JobStatus:
    PUBLIC_STATUSES.setdefault(_state.public, ())
    PUBLIC_STATUSES[_state.public] += (_state.value,)

# The one claimable condition: runnable, or running under a lease that ran out (its worker died).
CLAIMABLE = ("(j.status = 'queued' OR (j.status = 'processing' AND j.lease_until < now()))")


class Publisher(Protocol):
    """Sends the task that runs a job to its queue, and a webhook delivery's to the webhooks
    queue (Celery, in workers/). It may also offer `in_broker(recent_seconds) -> int | None`:
    the job messages the broker holds (queued, or delivered that recently and not
    acknowledged); the lost-message sweep then re-sends no more than are missing."""

    def publish(self, job_id: str, queue: str) -> None: ...

    def send_webhook(self, delivery_id: str, countdown: float | None = None) -> None: ...

    def send_admission(self, upload_id: str, countdown: float | None = None) -> None: ...


class NoPublisher:
    """The publisher of services built without a broker (the CLI): whatever would be sent
    stays in the outbox and the webhook table, and the beat relay and sweeper send it."""

    def publish(self, job_id: str, queue: str) -> None:
        raise ConnectionError("no broker: the outbox relay sends it")

    def send_webhook(self, delivery_id: str, countdown: float | None = None) -> None:
        raise ConnectionError("no broker: the webhook sweeper sends it")

    def send_admission(self, upload_id: str, countdown: float | None = None) -> None:
        raise ConnectionError("no broker: a console upload is admitted by a worker")


@dataclass(frozen=True)
class Runnable:
    """A job that took a slot in a committed transaction: publish it (and delete the outbox
    row written with it — not a newer one written since)."""

    job_id: uuid.UUID
    queue: str
    outbox_at: datetime


SUPPRESSED = (
    "EXISTS (SELECT 1 FROM suppressions s WHERE s.workspace_id = j.workspace_id"
    " AND (s.subject_hash = j.subject_hash OR s.subject_hash = ANY(j.person_hashes)))"
)


@dataclass
class Outcome:
    """How a claimed job ended, as written by `finish`."""

    status: JobStatus
    units: int = 0
    tokens: int = 0
    searches: int = 0
    social_requests: int = 0
    max_tokens: int | None = None
    max_searches: int | None = None
    cost_estimate_usd: object = 0
    error: str | None = None
    # A success's result: fields, citations, completeness, provenance, trace.
    result: dict | None = None
    dead_letter: bool = False
    retries: int = 0  # failed provider attempts in this run, added to `attempts`
    match: bool | None = None  # a success: did it find anything (0 units when not)
    events: list = field(default_factory=list)  # job events recorded: notify after commit


SUPPRESSED_ERROR = "the subject objected to enrichment or was erased; not enriched"
