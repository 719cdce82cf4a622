"""The daily usage rollup (`usage_daily`, migration 0014): the triggers keep it equal to the
usage rows through every way they change — insert, a replayed job's upsert that moves its row
to another day, the retention purge, a workspace's deletion —, the migration backfills what
was written before it, the usage endpoint reads it, and reconciliation reports a rollup that
drifted."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import psycopg
from click.testing import CliRunner
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from enrichment import db as db_module
from enrichment.billing.reconcile import reconcile
from enrichment.billing.usage import rollup_drift
from enrichment.cli import main

from .conftest import TEST_DATABASE_URL
from .test_migrations import drop

DECEMBER = date(2026, 12, 1)


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 12, day, hour, tzinfo=UTC)


def usage(conn, ws, when: datetime, units: int = 1, match: bool | None = True,
          livemode: bool = True, job_id=None, tokens: int = 100) -> uuid.UUID:
    """A usage row as FINISH writes it (a second one for the same job: a replay's upsert)."""
    job_id = job_id or uuid.uuid4()
    conn.execute(
        "INSERT INTO enrichment_usage (workspace_id, job_id, template, units, tokens, searches,"
        " cost_estimate_usd, match, created_at, livemode)"
        " VALUES (%s, %s, 'company_profile', %s, %s, 1, 0.004, %s, %s, %s)"
        " ON CONFLICT (job_id) DO UPDATE SET units = excluded.units,"
        " created_at = excluded.created_at, match = excluded.match,"
        " tokens = enrichment_usage.tokens + excluded.tokens,"
        " searches = enrichment_usage.searches + excluded.searches,"
        " cost_estimate_usd = enrichment_usage.cost_estimate_usd + excluded.cost_estimate_usd",
        (ws, job_id, units, tokens, match, when, livemode))
    return job_id


def days(conn, ws) -> dict:
    return {(r["livemode"], r["day"].day): (r["jobs"], r["units"], r["matched"],
                                            r["unmatched"], r["tokens"])
            for r in conn.execute("SELECT * FROM usage_daily WHERE workspace_id = %s", (ws,))}


def test_the_rollup_follows_every_change_of_the_usage_rows(db, make_workspace):
    (a, _), (b, _) = make_workspace(name="A"), make_workspace(name="B")
    with db.db.connection() as conn:
        usage(conn, a.id, at(1, 9))
        replayed = usage(conn, a.id, at(1, 23), units=0, match=False)
        usage(conn, a.id, at(2), match=None, units=0)  # a cached answer's row
        usage(conn, a.id, at(2), livemode=False, units=0)  # test mode
        usage(conn, b.id, at(1))
        assert days(conn, a.id) == {(True, 1): (2, 1, 1, 1, 200), (True, 2): (1, 0, 0, 0, 100),
                                    (False, 2): (1, 0, 1, 0, 100)}
        # A replayed job's rerun ends two days later: its row moves, its spend adds up.
        usage(conn, a.id, at(3), job_id=replayed, units=1, match=True, tokens=50)
        assert days(conn, a.id) == {(True, 1): (1, 1, 1, 0, 100), (True, 2): (1, 0, 0, 0, 100),
                                    (False, 2): (1, 0, 1, 0, 100), (True, 3): (1, 1, 1, 0, 150)}
        # The retention purge deletes old rows: a day left without rows has no rollup row.
        conn.execute("DELETE FROM enrichment_usage WHERE created_at < %s", (at(2, 0),))
        assert (True, 1) not in days(conn, a.id) and days(conn, b.id) == {}
        usage(conn, b.id, at(4))
        conn.execute("DELETE FROM workspaces WHERE id = %s", (b.id,))  # cascades to its rows
        assert days(conn, b.id) == {}
        assert rollup_drift(conn, DECEMBER) == []


def test_the_usage_endpoint_reads_the_rollup(db, client, make_workspace):
    ws, key = make_workspace()
    with db.db.connection() as conn:
        for _ in range(3):
            usage(conn, ws.id, db.clock())
        usage(conn, ws.id, db.clock(), units=0, match=False)
    body = client.get("/api/v1/enrichment/usage",
                      headers={"Authorization": f"Bearer {key}"}).get_json()
    assert (body["used"], body["matched"], body["unmatched"], body["tokens"]) == (3, 3, 1, 400)
    with db.db.connection() as conn:  # what the endpoint answers is the rollup, not the rows
        conn.execute("UPDATE usage_daily SET units = units + 5 WHERE workspace_id = %s",
                     (ws.id,))
    body = client.get("/api/v1/enrichment/usage",
                      headers={"Authorization": f"Bearer {key}"}).get_json()
    assert body["used"] == 8


def test_reconciliation_reports_a_rollup_that_drifted(db, make_workspace):
    ws, _ = make_workspace()
    with db.db.connection() as conn:
        usage(conn, ws.id, at(1))
        assert reconcile(conn, db.settings.plans, db.billing, date(2026, 12, 1), at(2)) == []
        conn.execute("UPDATE usage_daily SET units = 2 WHERE workspace_id = %s", (ws.id,))
        problems = reconcile(conn, db.settings.plans, db.billing, date(2026, 12, 1), at(2))
    drift = [p for p in problems if "usage_daily" in p]
    assert drift == [{"workspace_id": str(ws.id), "day": "2026-12-01", "livemode": True,
                      "usage_rows": drift[0]["usage_rows"], "usage_daily": drift[0]["usage_daily"]}]
    assert (drift[0]["usage_rows"]["units"], drift[0]["usage_daily"]["units"]) == (1, 2)


def test_the_cli_check_exits_1_on_drift(db, make_workspace):
    ws, _ = make_workspace()
    yesterday = db.clock() - timedelta(days=1)
    with db.db.connection() as conn:
        usage(conn, ws.id, yesterday)
        conn.execute("UPDATE usage_daily SET jobs = 7 WHERE workspace_id = %s", (ws.id,))
    out = CliRunner().invoke(main, ["billing", "reconcile", "--date",
                                    yesterday.date().isoformat()])
    assert out.exit_code == 1 and '"usage_daily"' in out.output, out.output


def test_the_migration_backfills_the_rows_written_before_it():
    scratch = make_conninfo(TEST_DATABASE_URL, dbname="enrichment_test_migrations")
    drop(scratch)
    try:
        db_module.ensure_database(scratch)
        files = db_module.migration_files()
        with psycopg.connect(scratch, row_factory=dict_row) as conn:
            conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                         " applied_at timestamptz NOT NULL DEFAULT now())")
            for version, body in files:
                if version >= "0014":
                    break
                conn.execute(body)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            ws = conn.execute("INSERT INTO workspaces (id, name, plan, region) VALUES"
                              " (gen_random_uuid(), 'old', 'pro', 'us') RETURNING id"
                              ).fetchone()["id"]
            for n in range(5):
                usage(conn, ws, at(1 + n % 2), match=n % 3 != 0, livemode=n != 4)
        assert db_module.upgrade(scratch)[0].startswith("0014")
        with psycopg.connect(scratch, row_factory=dict_row) as conn:
            assert days(conn, ws) == {(True, 1): (2, 2, 1, 1, 200), (True, 2): (2, 2, 1, 1, 200),
                                      (False, 1): (1, 1, 1, 0, 100)}
            assert rollup_drift(conn, DECEMBER) == []
    finally:
        drop(scratch)
