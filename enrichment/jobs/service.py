"""The jobs service's entry points for adapters (API views, the CLI, tasks): each runs its
transaction (the workspace lock first), and after commit publishes the jobs that became
runnable and has the job events turned into webhook messages (`Services.notify`). Adapters
never publish or write job tables themselves."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from .. import privacy
from ..templates import TEMPLATES
from . import batches, events, intake, outbox
from .slots import lock_workspace
from .states import DEFAULT_MIN_CONFIDENCE, Runnable

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..services import Services
    from ..workspaces import Workspace


def after_commit(svc: Services, runnable: list[Runnable], happened: list[int]) -> None:
    """Publish what became runnable, then notify what happened. Both are durable already
    (the relay and the webhook sweeper send whatever this misses), so a failure here is
    logged, never the caller's: what committed stays committed."""
    outbox.publish_all(svc.db, svc.publisher, runnable)
    notify(svc, happened)


def notify(svc: Services, happened: list[int]) -> None:
    try:
        svc.notify(happened)
    except Exception:
        log.exception("job events %s not turned into messages; the webhook sweeper will",
                      happened)


def submit(svc: Services, workspace: Workspace, template: str, lead: dict, metadata: dict,
           max_age_days: int, *, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
           batch_id: uuid.UUID | None = None) -> intake.Admitted:
    """Admit one lead (intake.admit: raises Refused), then publish and notify."""
    plan = svc.settings.plans[workspace.plan]
    with svc.db.connection() as conn:
        admitted = intake.admit(conn, workspace=workspace, plan=plan,
                                template=TEMPLATES[template], lead=lead, metadata=metadata,
                                now=svc.clock(), slots=svc.settings.slots(plan.name),
                                max_age_days=max_age_days, min_confidence=min_confidence,
                                batch_id=batch_id)
    if not admitted.replayed:
        after_commit(svc, admitted.runnable, admitted.events)
    return admitted


def submit_batch(svc: Services, workspace: Workspace, template: str, leads: list[dict],
                 metadata: dict, max_age_days: int, *,
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                 batch_id: uuid.UUID | None = None) -> list[intake.Admitted | intake.Refused]:
    """Admit a batch's leads in one transaction (intake.admit_batch), then publish and
    notify: per lead its Admitted or Refused."""
    plan = svc.settings.plans[workspace.plan]
    with svc.db.connection() as conn:
        outcomes, runnable, happened = intake.admit_batch(
            conn, workspace=workspace, plan=plan, template=TEMPLATES[template], leads=leads,
            metadata=metadata, now=svc.clock(), slots=svc.settings.slots(plan.name),
            max_age_days=max_age_days, min_confidence=min_confidence, batch_id=batch_id)
    after_commit(svc, runnable, happened)
    return outcomes


def open_batch(svc: Services, workspace_id: uuid.UUID, template: str, total: int,
               livemode: bool = True) -> uuid.UUID:
    with svc.db.connection() as conn:
        return batches.create(conn, workspace_id, template, total, livemode)


def close_batch(svc: Services, workspace_id: uuid.UUID, batch_id: uuid.UUID,
                items: list[tuple[int, uuid.UUID | None, bool]]) -> None:
    """Every lead of the batch has its answer: record its items; it completes now if all of
    them were answered at once (refused, cached, ended replays), else when its last job
    ends."""
    with svc.db.connection() as conn, conn.transaction():
        lock_workspace(conn, workspace_id)
        batches.submitted(conn, batch_id, items)
        happened = [events.record(conn, workspace_id)]
    notify(svc, happened)


def erase(svc: Services, workspace: Workspace, identifier: str) -> None:
    """Erase a subject (privacy.erase decides what goes), then hand on the slots its jobs
    held and notify the batches it completes."""
    with svc.db.connection() as conn:
        runnable, happened = privacy.erase(conn, workspace.id, identifier,
                                           svc.settings.slots(workspace.plan), svc.clock(),
                                           workspace.livemode)
    after_commit(svc, runnable, happened)
