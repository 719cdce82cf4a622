"""Per-workspace slots: the Redis leases, deferral and wake-up through the pipeline."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from enrichment import admission, pipeline, slots
from enrichment.slots import WorkspaceSlots
from enrichment.templates import TEMPLATES


@pytest.fixture
def ws_slots(db):
    return WorkspaceSlots(db.redis, lease_seconds=60, prefix=f"slots-{time.monotonic_ns()}")


def test_at_most_limit_holders_and_release_frees(ws_slots):
    a = ws_slots.acquire("ws", "job-a", 2)
    b = ws_slots.acquire("ws", "job-b", 2)
    assert a and b and a != b
    assert ws_slots.acquire("ws", "job-c", 2) is None
    assert ws_slots.acquire("other", "job-c", 2)  # per workspace
    assert ws_slots.release("ws", a, 2) == 1
    assert ws_slots.acquire("ws", "job-c", 2)
    assert ws_slots.free("ws", 2) == 0


def test_a_duplicate_attempt_cannot_release_anothers_slot(ws_slots):
    first = ws_slots.acquire("ws", "job", 1)
    assert first
    assert ws_slots.release("ws", "job:someone-else", 1) == 0  # nothing freed
    assert ws_slots.acquire("ws", "job", 1) is None


def test_a_dead_workers_slot_expires(db):
    short = WorkspaceSlots(db.redis, lease_seconds=1, prefix=f"slots-{time.monotonic_ns()}")
    assert short.acquire("ws", "job-a", 1)
    assert short.acquire("ws", "job-b", 1) is None
    time.sleep(1.1)
    assert short.acquire("ws", "job-b", 1)


def submit(db, ws, n, template="person_social"):
    ids = []
    with db.db.connection() as conn:
        for i in range(n):
            ids.append(str(admission.admit(
                conn, workspace=ws, plan=db.settings.plans[ws.plan],
                template=TEMPLATES[template], lead={"email": f"l{i}@acme.com"}, metadata={},
                now=datetime.now(UTC)).job["id"]))
    return ids


def status(db, job_id):
    with db.db.connection() as conn:
        return conn.execute("SELECT status, deferred FROM enrichment_jobs WHERE id = %s",
                            (job_id,)).fetchone()


class Sent:
    def __init__(self):
        self.ids = []

    def publish(self, job_id, queue):
        self.ids.append(job_id)


@pytest.fixture
def sent(db, monkeypatch):
    recorder = Sent()
    monkeypatch.setattr(db, "publisher", recorder)
    return recorder


def test_a_busy_workspace_parks_the_job_and_wakes_it_when_the_slot_frees(db, make_workspace,
                                                                        sent):
    ws, _ = make_workspace()
    first, second = submit(db, ws, 2)
    holder = db.slots.acquire(ws.id, first, 1)  # the first job is running elsewhere
    assert pipeline.run_job(db, second) == "deferred"
    assert status(db, second) == {"status": "queued", "deferred": True}
    assert sent.ids == []
    # The first job ends: its slot goes back and the parked job is sent again.
    db.slots.release(ws.id, holder, 1)
    assert slots.wake(db.db, db.publisher, ws.id) == 1
    assert sent.ids == [second] and status(db, second)["deferred"] is False
    assert pipeline.run_job(db, second) == "succeeded"


def test_finishing_a_job_wakes_the_oldest_parked_one(db, make_workspace, sent):
    ws, _ = make_workspace()
    jobs = submit(db, ws, 4)
    holder = db.slots.acquire(ws.id, "elsewhere", 1)
    assert [pipeline.run_job(db, j) for j in jobs[1:]] == ["deferred"] * 3
    db.slots.release(ws.id, holder, 1)
    assert pipeline.run_job(db, jobs[0]) == "succeeded"
    assert sent.ids == [jobs[1]]  # oldest first, one per freed slot
    assert pipeline.run_job(db, jobs[1]) == "succeeded"
    assert sent.ids == [jobs[1], jobs[2]]


def test_no_lost_wake_up_when_the_slot_frees_while_parking(db, make_workspace, sent,
                                                          monkeypatch):
    ws, _ = make_workspace()
    (job,) = submit(db, ws, 1)
    real = db.slots.acquire
    calls = []

    def busy_then_free(workspace_id, job_id, limit):  # freed just after our first look
        calls.append(job_id)
        return None if len(calls) == 1 else real(workspace_id, job_id, limit)

    monkeypatch.setattr(db.slots, "acquire", busy_then_free)
    assert pipeline.run_job(db, job) == "succeeded"
    assert status(db, job) == {"status": "succeeded", "deferred": False}


def test_sweeper_wakes_stranded_jobs(db, make_workspace, sent):
    ws, _ = make_workspace()
    (job,) = submit(db, ws, 1)
    with db.db.connection() as conn:  # parked, and its wake-up was lost
        conn.execute("UPDATE enrichment_jobs SET deferred = true WHERE id = %s", (job,))
    holder = db.slots.acquire(ws.id, "running", 1)
    assert pipeline.wake_stranded(db) == 0  # no free slot yet
    db.slots.release(ws.id, holder, 1)
    assert pipeline.wake_stranded(db) == 1 and sent.ids == [job]


def test_slots_follow_the_plan_override(db, make_workspace, sent, monkeypatch):
    from dataclasses import replace

    ws, _ = make_workspace(plan="elite")
    plans = db.settings.plans
    elite = replace(plans["elite"], workspace_concurrency=2)
    monkeypatch.setattr(db, "settings", replace(db.settings, plans=replace(
        plans, plans={**plans.plans, "elite": elite})))
    a, b, c = submit(db, ws, 3)
    h1 = db.slots.acquire(ws.id, a, 2)
    assert pipeline.run_job(db, b) == "succeeded"  # second slot
    h2 = db.slots.acquire(ws.id, b, 2)
    assert pipeline.run_job(db, c) == "deferred"
    for h in (h1, h2):
        db.slots.release(ws.id, h, 2)
