"""Queue after commit: the outbox row, publication, and the relay."""

from __future__ import annotations

import pytest

from enrichment import jobs
from enrichment.leads import subject_hash


class Recorder:
    def __init__(self, fail: bool = False):
        self.sent: list[tuple[str, str]] = []
        self.fail = fail

    def publish(self, job_id: str, queue: str) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((job_id, queue))


def make_job(db, ws):
    with db.db.connection() as conn:
        return jobs.create_job(conn, workspace_id=ws.id, template="company_profile",
                               queue="pro", subject_hash=subject_hash("acme.com"),
                               lead={"domain": "acme.com"}, metadata={})


def outbox(db):
    with db.db.connection() as conn:
        return [r["job_id"] for r in conn.execute("SELECT job_id FROM job_outbox")]


def test_rolled_back_submission_leaves_neither_job_nor_outbox(db, make_workspace):
    ws, _ = make_workspace()
    with pytest.raises(RuntimeError), db.db.connection() as conn:
        jobs.create_job(conn, workspace_id=ws.id, template="company_profile", queue="pro",
                        subject_hash="x", lead={}, metadata={})
        raise RuntimeError("crash before commit")
    with db.db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM enrichment_jobs").fetchone()["n"] == 0
    assert outbox(db) == []


def test_failed_publish_keeps_the_outbox_row_and_the_relay_sends_it(db, make_workspace):
    ws, _ = make_workspace()
    row = make_job(db, ws)
    assert jobs.publish(db.db, Recorder(fail=True), row["id"], "pro") is False
    assert outbox(db) == [row["id"]]
    relay = Recorder()
    assert jobs.relay_outbox(db.db, relay, older_than_seconds=3600) == 0  # still in grace
    assert jobs.relay_outbox(db.db, relay, older_than_seconds=0) == 1
    assert relay.sent == [(str(row["id"]), "pro")]
    assert outbox(db) == []


def test_successful_publish_clears_the_outbox(db, make_workspace):
    ws, _ = make_workspace()
    row = make_job(db, ws)
    sent = Recorder()
    assert jobs.publish(db.db, sent, row["id"], "pro") is True
    assert sent.sent == [(str(row["id"]), "pro")] and outbox(db) == []


def test_relay_publish_failure_keeps_rows(db, make_workspace):
    ws, _ = make_workspace()
    make_job(db, ws)
    with pytest.raises(ConnectionError):
        jobs.relay_outbox(db.db, Recorder(fail=True), older_than_seconds=0)
    assert len(outbox(db)) == 1
