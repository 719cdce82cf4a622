"""Execution with real worker processes: per-workspace slots under a backlog, and a worker
killed mid-job."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from datetime import datetime

import pytest
import redis

from enrichment import pipeline
from enrichment.jobs import intake
from enrichment.templates import TEMPLATES

from .conftest import ROOT, TEST_BROKER_URL
from .helpers import eventually

pytestmark = pytest.mark.e2e


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


def test_backlog_of_one_workspace_runs_one_at_a_time_and_does_not_delay_another(
        client, make_workspace, worker, wait_job, simulator, db):
    simulator.config.latency_ms = 150
    _, key_a = make_workspace(name="Backlog")
    _, key_b = make_workspace(name="Single")
    a, b = {"Authorization": f"Bearer {key_a}"}, {"Authorization": f"Bearer {key_b}"}
    batch = client.post("/api/v1/enrichment/batch", headers=a, json={
        "template": "person_social", "leads": [{"email": f"a{i}@acme.com"} for i in range(20)]})
    backlog = [r["job"]["job_id"] for r in batch.get_json()["results"]]
    single = client.post("/api/v1/enrichment", headers=b, json={
        "template": "person_social", "lead": {"email": "b@globex.com"}}).get_json()["job_id"]
    done_a = [wait_job(client, a, j, timeout=90) for j in backlog]
    done_b = wait_job(client, b, single, timeout=30)
    assert all(j["status"] == "succeeded" for j in [*done_a, done_b])
    runs = sorted((parse(j["started_at"]), parse(j["completed_at"])) for j in done_a)
    for (_, end), (start, _) in itertools.pairwise(runs):
        assert start >= end  # never two of the backlog's jobs at once (slot of 1)
    finished_a = sorted(end for _, end in runs)
    assert parse(done_b["completed_at"]) < finished_a[3]  # not queued behind the backlog
    with db.db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM enrichment_jobs"
                            " WHERE status = 'waiting'").fetchone()["n"] == 0


def runs_never_overlap(db, ws_id) -> list[dict]:
    """The workspace's jobs, checked to have run one at a time (a slot of 1)."""
    with db.db.connection() as conn:
        rows = conn.execute("SELECT id, status, started_at, completed_at, attempts"
                            " FROM enrichment_jobs WHERE workspace_id = %s ORDER BY started_at",
                            (ws_id,)).fetchall()
    for a, b in itertools.pairwise(rows):
        assert b["started_at"] >= a["completed_at"], (a, b)
    return rows


def one_usage_row_each(db, ws_id) -> None:
    with db.db.connection() as conn:
        assert conn.execute(
            "SELECT count(*) AS n FROM enrichment_jobs j WHERE workspace_id = %s AND"
            " (SELECT count(*) FROM enrichment_usage u WHERE u.job_id = j.id) <> 1",
            (ws_id,)).fetchone()["n"] == 0


def all_succeeded(db, ws_id, n) -> bool:
    with db.db.connection() as conn:
        return conn.execute("SELECT count(*) AS n FROM enrichment_jobs WHERE workspace_id = %s"
                            " AND status = 'succeeded'", (ws_id,)).fetchone()["n"] == n


def admit(db, ws, n, tag):
    with db.db.connection() as conn:
        return [intake.admit(conn, slots=1, workspace=ws, plan=db.settings.plans["pro"],
                                template=TEMPLATES["person_social"],
                                lead={"email": f"{tag}{i}@acme.com"}, metadata={},
                                now=db.clock()) for i in range(n)]


def test_worker_killed_mid_job_its_workspace_line_still_runs_once_each(
        db, make_workspace, simulator, worker, tmp_path):
    from workers.celery_app import app

    simulator.config.latency_ms = 4000  # the job is mid-flight when the worker dies
    broker = TEST_BROKER_URL.rsplit("/", 1)[0] + "/10"
    redis.Redis.from_url(broker).flushdb()
    ws, _ = make_workspace()
    admitted = admit(db, ws, 4, "k")
    (first,) = [r for a in admitted for r in a.runnable]  # one slot: the rest wait
    log = open(tmp_path / "doomed.log", "wb")  # noqa: SIM115
    doomed = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
         "-c", "1", "--without-mingle", "--without-gossip",
         "-n", f"doomed-{os.getpid()}@%h"],
        cwd=ROOT, env={**os.environ, "CELERY_BROKER_URL": broker, "JOB_LEASE_SECONDS": "3"},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with app.connection_for_write(broker) as conn:
            app.send_task("enrichment.run_job", args=[str(first.job_id)], queue="pro",
                          connection=conn)

        def processing() -> bool:
            with db.db.connection() as conn:
                return conn.execute("SELECT status FROM enrichment_jobs WHERE id = %s",
                                    (first.job_id,)).fetchone()["status"] == "processing"

        eventually(processing, 30)
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)  # the whole machine, as it were
        doomed.wait()
        log.close()
    simulator.config.latency_ms = 100

    def swept() -> bool:  # the beat sweeper, run by hand once the 3 s lease has run out
        done = pipeline.sweep(db)
        return done["requeued"] == 1 and done["published"] == 1

    eventually(swept, 20, interval=0.5)
    eventually(lambda: all_succeeded(db, ws.id, 4), 60)
    rows = runs_never_overlap(db, ws.id)
    assert [r["attempts"] for r in rows] == [2, 1, 1, 1]
    one_usage_row_each(db, ws.id)


def test_api_crash_between_commit_and_publish_leaves_the_line_runnable(
        db, make_workspace, simulator, worker):
    simulator.config.latency_ms = 100
    ws, _ = make_workspace()
    admitted = admit(db, ws, 4, "crash")  # the API "dies" before publishing anything
    assert len([r for a in admitted for r in a.runnable]) == 1
    assert pipeline.sweep(db)["published"] == 0  # the relay's grace period: not yet
    with db.db.connection() as conn:
        conn.execute("UPDATE job_outbox SET created_at = now() - interval '1 minute'")
    assert pipeline.sweep(db)["published"] == 1  # the next relay run after the grace period
    eventually(lambda: all_succeeded(db, ws.id, 4), 60)
    runs_never_overlap(db, ws.id)
    one_usage_row_each(db, ws.id)
