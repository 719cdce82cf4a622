"""Queue after commit: the outbox row, publication, and the relay."""

from __future__ import annotations

import pytest

from enrichment.jobs import intake, outbox
from enrichment.periods import period_start
from enrichment.templates import TEMPLATES


class Recorder:
    def __init__(self, fail: bool = False, refuse: frozenset[str] = frozenset()):
        self.sent: list[tuple[str, str]] = []
        self.fail, self.refuse = fail, refuse

    def publish(self, job_id: str, queue: str) -> None:
        if self.fail or job_id in self.refuse:
            raise ConnectionError("broker down")
        self.sent.append((job_id, queue))


def make_job(db, ws, domain: str = "acme.com", slots: int = 1):
    """A runnable job, committed and not published yet."""
    with db.db.connection() as conn:
        (runnable,) = intake.admit(conn, slots=slots, workspace=ws,
                                   plan=db.settings.plans["pro"],
                                   template=TEMPLATES["company_profile"],
                                   lead={"domain": domain}, metadata={},
                                   now=db.clock()).runnable
    return runnable


def outbox_rows(db):
    with db.db.connection() as conn:
        return [r["job_id"] for r in conn.execute("SELECT job_id FROM job_outbox")]


def test_refused_submission_leaves_neither_job_nor_outbox_nor_unit(db, make_workspace):
    ws, _ = make_workspace(plan="core")
    with db.db.connection() as conn:
        now = db.clock()
        conn.execute("INSERT INTO usage_counters VALUES (%s, %s, 375)",
                     (ws.id, period_start(now)))
        with pytest.raises(intake.Refused):
            intake.admit(conn, slots=1, workspace=ws, plan=db.settings.plans["core"],
                            template=TEMPLATES["company_profile"], lead={"domain": "a.com"},
                            metadata={}, now=now)
        assert conn.execute("SELECT count(*) AS n FROM enrichment_jobs").fetchone()["n"] == 0
        assert conn.execute("SELECT reserved FROM usage_counters").fetchone()["reserved"] == 375
    assert outbox_rows(db) == []


def test_failed_publish_keeps_the_outbox_row_and_the_relay_sends_it(db, make_workspace):
    ws, _ = make_workspace()
    job = make_job(db, ws)
    assert outbox.publish(db.db, Recorder(fail=True), job) is False
    assert outbox_rows(db) == [job.job_id]
    relay = Recorder()
    assert outbox.relay_outbox(db.db, relay, older_than_seconds=3600) == 0  # still in grace
    assert outbox.relay_outbox(db.db, relay, older_than_seconds=0) == 1
    assert relay.sent == [(str(job.job_id), "pro")]
    assert outbox_rows(db) == []


def test_successful_publish_clears_the_outbox(db, make_workspace):
    ws, _ = make_workspace()
    job = make_job(db, ws)
    sent = Recorder()
    assert outbox.publish(db.db, sent, job) is True
    assert sent.sent == [(str(job.job_id), "pro")] and outbox_rows(db) == []


def test_publish_all_clears_the_rows_of_the_jobs_sent_only(db, make_workspace):
    ws, _ = make_workspace()
    jobs = [make_job(db, ws, f"{n}.example.com", slots=3) for n in range(3)]
    sent = Recorder(refuse=frozenset({str(jobs[1].job_id)}))
    assert outbox.publish_all(db.db, sent, jobs) == 2
    assert sent.sent == [(str(jobs[0].job_id), "pro"), (str(jobs[2].job_id), "pro")]
    assert outbox_rows(db) == [jobs[1].job_id]


def test_relay_publish_failure_keeps_rows(db, make_workspace):
    ws, _ = make_workspace()
    make_job(db, ws)
    with pytest.raises(ConnectionError):
        outbox.relay_outbox(db.db, Recorder(fail=True), older_than_seconds=0)
    assert len(outbox_rows(db)) == 1
