"""Dead letters: recorded on final failure, replayed once, through the CLI too."""

from __future__ import annotations

import json

from click.testing import CliRunner

from enrichment import pipeline
from enrichment.cli import main
from enrichment.jobs import dead_letters, intake, outbox
from enrichment.templates import TEMPLATES


def dead_job(db, ws, simulator, n=0):
    with db.db.connection() as conn:
        job_id = str(intake.admit(conn, slots=1, workspace=ws, plan=db.settings.plans["pro"],
                                     template=TEMPLATES["company_profile"],
                                     lead={"domain": f"d{n}.com"}, metadata={},
                                     now=db.clock()).job["id"])
    simulator.config.outage_status = 503
    assert pipeline.run_job(db, job_id) == "dead"
    simulator.config.outage_status = 0
    return job_id


def one(db, sql, *args):
    with db.db.connection() as conn:
        return conn.execute(sql, args).fetchone()


def test_permanent_failure_dead_letter_replay_success(db, make_workspace, simulator):
    ws, _ = make_workspace()
    job_id = dead_job(db, ws, simulator)
    with db.db.connection() as conn:
        (letter,) = dead_letters.list_dead_letters(conn)
        assert str(letter["job_id"]) == job_id and letter["status"] == "dead"
        assert letter["attempts"] >= 2 and "503" in letter["error"]
        assert one(db, "SELECT reserved FROM usage_counters")["reserved"] == 0  # unit back
        assert dead_letters.replay(conn, db.settings, job_id, db.clock()) == "replayed"
        assert dead_letters.replay(conn, db.settings, job_id, db.clock()) == "not-dead"
    assert one(db, "SELECT status FROM enrichment_jobs")["status"] == "queued"
    assert one(db, "SELECT reserved FROM usage_counters")["reserved"] == 1
    sent = []
    recorder = type("P", (), {"publish": lambda s, j, q: sent.append(j)})()
    assert outbox.relay_outbox(db.db, recorder, older_than_seconds=30) == 1  # no grace
    assert sent == [job_id]
    assert pipeline.run_job(db, job_id) == "succeeded"
    usage = one(db, "SELECT count(*) AS n, sum(units) AS units FROM enrichment_usage")
    assert (usage["n"], usage["units"]) == (1, 1)
    with db.db.connection() as conn:
        assert dead_letters.list_dead_letters(conn) == []
        assert len(dead_letters.list_dead_letters(conn, include_replayed=True)) == 1


def test_replay_respects_the_hard_cap(db, make_workspace, simulator):
    ws, _ = make_workspace(plan="core")
    job_id = dead_job(db, ws, simulator)
    with db.db.connection() as conn:
        conn.execute("UPDATE usage_counters SET reserved = 375")
        assert dead_letters.replay(conn, db.settings, job_id, db.clock()) == "over-cap"
        assert one(db, "SELECT status FROM enrichment_jobs")["status"] == "dead"
        assert conn.execute("SELECT count(*) AS n FROM job_outbox"  # nothing re-queued
                            " WHERE created_at = '-infinity'").fetchone()["n"] == 0
        assert len(dead_letters.list_dead_letters(conn)) == 1


def test_cli_list_and_replay_all(db, make_workspace, simulator):
    ws, _ = make_workspace()
    ids = {dead_job(db, ws, simulator, n) for n in range(2)}
    runner = CliRunner()
    listed = runner.invoke(main, ["dlq", "list", "--json"], catch_exceptions=False)
    assert {r["job_id"] for r in json.loads(listed.output.strip().splitlines()[-1])} == ids
    result = runner.invoke(main, ["dlq", "replay", "--all"], catch_exceptions=False)
    assert result.exit_code == 0 and result.output.count("replayed") == 2
    again = runner.invoke(main, ["dlq", "replay", next(iter(ids))])
    assert again.exit_code == 1 and "not-dead" in again.output
    assert runner.invoke(main, ["dlq", "replay"]).exit_code == 2
