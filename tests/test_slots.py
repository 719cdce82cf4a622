"""Per-workspace slots in PostgreSQL: only runnable jobs reach the broker, a freed slot goes
to the workspace's oldest waiting job in the same transaction, and the count is exact."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from enrichment import pipeline, privacy
from enrichment.jobs import dead_letters, intake, outbox
from enrichment.templates import TEMPLATES


class Sent:
    def __init__(self):
        self.ids: list[str] = []

    def publish(self, job_id, queue):
        self.ids.append(job_id)


@pytest.fixture
def svc(db):
    """Services whose publisher records what is sent."""
    return replace(db, publisher=Sent())


def submit(svc, ws, n, slots=1, tag="l"):
    """Admit n leads the way the API does: publish what became runnable."""
    ids = []
    for i in range(n):
        with svc.db.connection() as conn:
            admitted = intake.admit(
                conn, workspace=ws, plan=svc.settings.plans[ws.plan],
                template=TEMPLATES["person_social"], lead={"email": f"{tag}{i}@acme.com"},
                metadata={}, now=svc.clock(), slots=slots)
        outbox.publish_all(svc.db, svc.publisher, admitted.runnable)
        ids.append(str(admitted.job["id"]))
    return ids


def statuses(svc, ids):
    with svc.db.connection() as conn:
        rows = conn.execute("SELECT id::text, status FROM enrichment_jobs WHERE id::text = ANY(%s)",
                            (ids,)).fetchall()
    by_id = {r["id"]: r["status"] for r in rows}
    return [by_id.get(i) for i in ids]


def outbox_rows(svc):
    with svc.db.connection() as conn:
        return conn.execute("SELECT count(*) AS n FROM job_outbox").fetchone()["n"]


def test_only_the_runnable_job_is_published_the_rest_wait_in_postgres(svc, make_workspace):
    ws, _ = make_workspace()
    ids = submit(svc, ws, 4)
    assert statuses(svc, ids) == ["queued", "waiting", "waiting", "waiting"]
    assert svc.publisher.ids == ids[:1] and outbox_rows(svc) == 0


def test_a_finished_job_hands_its_slot_to_the_oldest_waiting_one(svc, make_workspace):
    ws, _ = make_workspace()
    ids = submit(svc, ws, 3)
    for n, job_id in enumerate(ids):  # FIFO: each finish publishes exactly the next one
        assert pipeline.run_job(svc, job_id) == "succeeded"
        assert svc.publisher.ids == ids[:n + 2][:3]
    assert statuses(svc, ids) == ["succeeded"] * 3 and outbox_rows(svc) == 0


def test_failed_and_dead_jobs_free_their_slot_too(svc, make_workspace, simulator):
    ws, _ = make_workspace()
    ids = submit(svc, ws, 3)
    simulator.config.outage_status = 403
    assert pipeline.run_job(svc, ids[0]) == "failed"
    simulator.config.outage_status = 503
    assert pipeline.run_job(replace(svc, base_policy=replace(svc.base_policy, max_attempts=1)),
                            ids[1]) == "dead"
    assert statuses(svc, ids) == ["failed", "dead", "queued"]
    assert svc.publisher.ids == ids


def test_a_slot_count_per_plan(svc, make_workspace):
    ws, _ = make_workspace(plan="elite")
    ids = submit(svc, ws, 5, slots=2)
    assert statuses(svc, ids) == ["queued", "queued", "waiting", "waiting", "waiting"]
    assert svc.publisher.ids == ids[:2]


def test_concurrent_admissions_never_exceed_the_slots(svc, make_workspace):
    ws, _ = make_workspace(plan="elite")
    errors = []

    def one(i):
        try:
            submit(svc, ws, 1, slots=3, tag=f"t{i}-")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with svc.db.connection() as conn:
        counts = {r["status"]: r["n"] for r in conn.execute(
            "SELECT status, count(*) AS n FROM enrichment_jobs GROUP BY status")}
    assert counts == {"queued": 3, "waiting": 21}
    assert len(svc.publisher.ids) == 3


def test_erasure_hands_the_slots_of_erased_jobs_on(svc, make_workspace):
    ws, _ = make_workspace()
    first = submit(svc, ws, 1, tag="gone")[0]
    rest = submit(svc, ws, 2, tag="stay")
    with svc.db.connection() as conn:
        runnable, _ = privacy.erase(conn, ws.id, "gone0@acme.com", slots=1)
    assert [str(r.job_id) for r in runnable] == rest[:1]
    assert statuses(svc, [first, *rest]) == [None, "queued", "waiting"]


def test_replayed_dead_letter_waits_its_turn(svc, make_workspace, simulator):
    ws, _ = make_workspace()
    (dead,) = submit(svc, ws, 1, tag="dead")
    simulator.config.outage_status = 403
    assert pipeline.run_job(svc, dead) == "failed"
    simulator.config.outage_status = 0
    (running,) = submit(svc, ws, 1, tag="run")  # took the free slot
    with svc.db.connection() as conn:
        assert dead_letters.replay(conn, svc.settings, dead, svc.clock()) == "replayed"
    assert statuses(svc, [dead, running]) == ["waiting", "queued"]
    assert pipeline.run_job(svc, running) == "succeeded"
    assert statuses(svc, [dead]) == ["queued"] and svc.publisher.ids[-1] == dead


def test_sweeper_fills_slots_a_plan_change_opened(svc, make_workspace):
    ws, _ = make_workspace(plan="elite")
    ids = submit(svc, ws, 4, slots=1)
    assert statuses(svc, ids).count("queued") == 1
    elite = replace(svc.settings.plans["elite"], workspace_concurrency=3)
    plans = replace(svc.settings.plans, plans={**svc.settings.plans.plans, "elite": elite})
    wider = replace(svc, settings=replace(svc.settings, plans=plans))
    assert pipeline.sweep(wider)["filled"] == 2
    assert statuses(svc, ids) == ["queued", "queued", "queued", "waiting"]
    assert pipeline.sweep(wider)["filled"] == 0


def test_a_message_is_resent_only_when_its_last_publish_is_old(svc, make_workspace):
    ws, _ = make_workspace()
    (job,) = submit(svc, ws, 1)
    old = replace(svc, settings=replace(svc.settings, lost_message_seconds=600))
    with svc.db.connection() as conn:  # an old job, published a moment ago: not resent
        conn.execute("UPDATE enrichment_jobs SET created_at = now() - interval '2 hours',"
                     " runnable_at = now() - interval '1 hour'")
    assert pipeline.sweep(old)["resent"] == 0
    with svc.db.connection() as conn:  # last sent 20 minutes ago: the broker may have lost it
        conn.execute("UPDATE enrichment_jobs SET published_at = now() - interval '20 minutes'")
    assert pipeline.sweep(old) == {"requeued": 0, "dead": 0, "resent": 1, "filled": 0,
                                   "published": 1}
    assert svc.publisher.ids == [job, job]
    assert pipeline.sweep(old)["resent"] == 0  # its publish is recent again
    assert pipeline.run_job(svc, job) == "succeeded"
    assert pipeline.run_job(svc, job) == "skipped"  # the duplicate is a no-op claim


def test_an_erasure_committed_while_an_admission_waits_for_the_lock_wins(svc, make_workspace):
    import psycopg

    from enrichment.leads import subject_hash
    from tests.conftest import TEST_DATABASE_URL

    ws, _ = make_workspace()
    eraser = psycopg.connect(TEST_DATABASE_URL)
    eraser.execute("SELECT 1 FROM workspaces WHERE id = %s FOR NO KEY UPDATE", (ws.id,))
    outcome = []

    def admit():
        try:
            submit(svc, ws, 1, tag="gone")
            outcome.append("admitted")
        except intake.Refused as exc:
            outcome.append(exc.status)

    thread = threading.Thread(target=admit)
    thread.start()
    thread.join(0.5)  # the admission now waits for the workspace lock
    eraser.execute("INSERT INTO suppressions VALUES (%s, %s, 'erasure')",
                   (ws.id, subject_hash("gone0@acme.com")))
    eraser.commit()
    eraser.close()
    thread.join(10)
    assert outcome == [403]


def test_lost_messages_are_resent_only_as_many_as_the_broker_is_missing(svc, make_workspace):
    spaces = [make_workspace(name=f"W{i}")[0] for i in range(3)]
    jobs = [submit(svc, ws, 1)[0] for ws in spaces]
    old = replace(svc, settings=replace(svc.settings, lost_message_seconds=60))
    with svc.db.connection() as conn:  # all three sent long ago, none claimed
        conn.execute("UPDATE enrichment_jobs SET published_at = now() - interval '1 hour'")
    svc.publisher.in_broker = lambda _recent: 3  # a slow queue: every message is still there
    assert pipeline.sweep(old)["resent"] == 0
    svc.publisher.in_broker = lambda _recent: 2  # one is missing: one goes again
    assert pipeline.sweep(old)["resent"] == 1
    assert len(svc.publisher.ids) == len(jobs) + 1
