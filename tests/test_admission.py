"""Admission on real Postgres: idempotency, exact hard caps under concurrency, regional rule,
suppression, credits, units given back."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from enrichment import pipeline
from enrichment.jobs import intake
from enrichment.leads import subject_hash
from enrichment.periods import next_period_start, period_start
from enrichment.templates import TEMPLATES

from .conftest import TEST_DATABASE_URL

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LEAD = {"email": "Jane@Acme.com ", "name": "Jane Doe"}


def admit(conn, ws, plan="pro", template="person_basic", lead=LEAD, now=NOW):
    from enrichment.config import load_plans

    return intake.admit(conn, slots=1, workspace=ws, plan=load_plans()[plan],
                           template=TEMPLATES[template], lead=lead, metadata={}, now=now)


def connect():
    return psycopg.connect(TEST_DATABASE_URL, row_factory=dict_row)


def in_parallel(n: int, submit) -> list:
    """Run submit(i, conn) for i < n from n threads released together, over a pool of 30
    connections (as the API would: PostgreSQL allows ~100 connections in all)."""
    barrier = threading.Barrier(n, timeout=30)
    with ConnectionPool(TEST_DATABASE_URL, min_size=30, max_size=30,
                        kwargs={"row_factory": dict_row}) as pool:
        def run(i):
            barrier.wait()
            with pool.connection() as conn:
                return submit(i, conn)

        with ThreadPoolExecutor(n) as threads:
            return list(threads.map(run, range(n)))


def count(db, sql, *args):
    with db.db.connection() as conn:
        return conn.execute(sql, args).fetchone()["n"]


def test_key_is_sha256_of_workspace_identifier_template_day():
    import hashlib
    import uuid

    ws = uuid.UUID(int=1)
    expected = hashlib.sha256(f"{ws}|jane@acme.com|person_basic|2026-11-28".encode()).hexdigest()
    assert intake.idempotency_key(ws, "jane@acme.com", "person_basic",
                                     date(2026, 11, 28)) == expected


def test_same_day_duplicate_returns_the_job_without_a_second_unit(db, make_workspace):
    ws, _ = make_workspace()
    with connect() as conn:
        first = admit(conn, ws)
        again = admit(conn, ws, lead={"email": "jane@acme.com", "name": "Other"})  # normalised
        next_day = admit(conn, ws, now=NOW.replace(day=29))
        other_template = admit(conn, ws, template="person_social")
    assert not first.replayed and again.replayed
    assert again.job["id"] == first.job["id"]
    assert not next_day.replayed and not other_template.replayed
    assert count(db, "SELECT reserved AS n FROM usage_counters") == 3


def test_fifty_concurrent_identical_submissions_make_one_job(db, make_workspace):
    ws, _ = make_workspace()
    results = in_parallel(50, lambda i, conn: admit(conn, ws))
    assert sum(not r.replayed for r in results) == 1
    assert len({r.job["id"] for r in results}) == 1
    assert count(db, "SELECT count(*) AS n FROM enrichment_jobs") == 1
    assert count(db, "SELECT reserved AS n FROM usage_counters") == 1


def test_hundred_parallel_submissions_with_ten_units_left_admit_exactly_ten(db, make_workspace):
    ws, _ = make_workspace(plan="core")  # hard cap 250 + 125 = 375
    with db.db.connection() as conn:
        conn.execute("INSERT INTO usage_counters VALUES (%s, %s, 365)", (ws.id, date(2026, 11, 1)))

    def submit(i, conn):
        try:
            return admit(conn, ws, plan="core", template="company_profile",
                         lead={"domain": f"lead{i}.com"})
        except intake.Refused as exc:
            return exc.status

    results = in_parallel(100, submit)
    assert sum(isinstance(r, intake.Admitted) for r in results) == 10
    assert results.count(402) == 90
    assert count(db, "SELECT count(*) AS n FROM enrichment_jobs") == 10
    assert count(db, "SELECT reserved AS n FROM usage_counters") == 375


def test_first_admissions_of_a_period_race_without_refusals(db, make_workspace):
    ws, _ = make_workspace(plan="core")
    results = in_parallel(40, lambda i, conn: admit(
        conn, ws, plan="core", template="company_profile", lead={"domain": f"l{i}.com"}))
    assert all(not r.replayed for r in results)
    assert count(db, "SELECT reserved AS n FROM usage_counters") == 40


def test_cap_refusal_says_the_cap_and_when_it_resets(db, make_workspace):
    ws, _ = make_workspace(plan="core")
    with db.db.connection() as conn:
        conn.execute("INSERT INTO usage_counters VALUES (%s, %s, 375)", (ws.id, date(2026, 11, 1)))
    with connect() as conn, pytest.raises(intake.Refused) as info:
        admit(conn, ws, plan="core")
    assert info.value.status == 402
    assert info.value.extra == {"hard_cap": 375, "resets_at": "2026-12-01T00:00:00Z"}
    with connect() as conn:  # a new month is a new period
        assert not admit(conn, ws, plan="core", now=datetime(2026, 12, 1, tzinfo=UTC)).replayed


def test_credits_raise_the_cap(db, make_workspace):
    ws, _ = make_workspace(plan="core")
    with db.db.connection() as conn:
        conn.execute("INSERT INTO usage_counters VALUES (%s, %s, 375)", (ws.id, date(2026, 11, 1)))
        # Dated by the test's clock, never PostgreSQL's now(): the period is NOW's.
        conn.execute("INSERT INTO credit_ledger (workspace_id, units, reason, created_at)"
                     " VALUES (%s, 1, 'x', %s)", (ws.id, NOW))
    with connect() as conn:
        admit(conn, ws, plan="core")
        with pytest.raises(intake.Refused) as info:
            admit(conn, ws, plan="core", lead={"email": "other@acme.com"})
    assert info.value.extra["hard_cap"] == 376


@pytest.mark.parametrize(("region", "enabled", "template", "allowed"), [
    ("eu", True, "person_basic", False),
    ("eu", True, "person_social", False),
    ("eu", True, "company_profile", True),
    ("us", False, "person_basic", False),
    ("us", False, "company_profile", True),
    ("us", True, "person_basic", True),
])
def test_regional_rule(db, make_workspace, region, enabled, template, allowed):
    ws, _ = make_workspace(region=region)
    ws = ws.__class__(ws.id, ws.name, ws.plan, ws.region, enabled)
    lead = LEAD | {"domain": "acme.com"}
    with connect() as conn:
        if allowed:
            admit(conn, ws, template=template, lead=lead)
        else:
            with pytest.raises(intake.Refused) as info:
                admit(conn, ws, template=template, lead=lead)
            assert info.value.status == 403


def test_suppressed_subject_is_refused(db, make_workspace):
    ws, _ = make_workspace()
    with db.db.connection() as conn:
        conn.execute("INSERT INTO suppressions VALUES (%s, %s, 'erasure')",
                     (ws.id, subject_hash("jane@acme.com")))
    with connect() as conn, pytest.raises(intake.Refused) as info:
        admit(conn, ws)
    assert info.value.status == 403 and info.value.slug == "subject-suppressed"
    other, _ = make_workspace(name="Other")
    with connect() as conn:  # suppression is per workspace
        assert not admit(conn, other).replayed


def test_failed_job_gives_its_unit_back(db, make_workspace, simulator):
    ws, _ = make_workspace()
    with connect() as conn:
        job = admit(conn, ws, now=db.clock()).job
    assert count(db, "SELECT reserved AS n FROM usage_counters") == 1
    simulator.config.outage_status = 400
    assert pipeline.run_job(db, str(job["id"])) == "failed"
    assert count(db, "SELECT reserved AS n FROM usage_counters") == 0


def test_worker_refuses_person_level_after_a_move_to_the_eu(db, make_workspace, simulator):
    ws, _ = make_workspace()
    with connect() as conn:
        job = admit(conn, ws, now=db.clock()).job
        conn.execute("UPDATE workspaces SET region = 'eu' WHERE id = %s", (ws.id,))
    assert pipeline.run_job(db, str(job["id"])) == "failed"
    assert simulator.stats.snapshot()["counts"] == {}  # no provider call
    assert count(db, "SELECT reserved AS n FROM usage_counters") == 0


def test_period_helpers():
    assert period_start(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == date(2026, 12, 1)
    assert next_period_start(date(2026, 12, 1)) == date(2027, 1, 1)
    assert next_period_start(date(2026, 1, 1)) == date(2026, 2, 1)


def test_expire_caches_forgets_only_what_is_past_its_window(db, make_workspace, simulator):
    ws, _ = make_workspace()
    with connect() as conn:
        old, new = (admit(conn, ws, lead={"email": f"{n}@acme.com"}, now=db.clock()).job
                    for n in ("old", "new"))
    for job in (old, new):
        assert pipeline.run_job(db, str(job["id"])) == "succeeded"
    with db.db.connection() as conn:
        conn.execute("UPDATE enrichment_results SET expires_at = now() - interval '1 s'"
                     " WHERE job_id = %s", (old["id"],))
        for key, age in (("stale", "25 hours"), ("fresh", "1 hour")):
            conn.execute("INSERT INTO api_idempotency VALUES (%s, %s, 'h', 202, '{}',"
                         " now() - %s::interval)", (ws.id, key, age))
        assert intake.expire_caches(conn) == {"result_cache_expired": 1,
                                                 "client_keys_deleted": 1}
        assert intake.expire_caches(conn) == {"result_cache_expired": 0,
                                                 "client_keys_deleted": 0}
        rows = conn.execute("SELECT job_id, idempotency_key FROM enrichment_results").fetchall()
        keys = [r["key"] for r in conn.execute("SELECT key FROM api_idempotency")]
    assert {r["job_id"]: r["idempotency_key"] is None for r in rows} == {old["id"]: True,
                                                                         new["id"]: False}
    assert keys == ["fresh"]


def test_an_answer_is_never_copied_from_a_job_erased_while_admission_waited(db, make_workspace):
    """The cached result is read with the workspace lock; if an erasure held the lock and
    removed the job meanwhile, admission looks again and runs the lead fresh."""
    from psycopg.types.json import Jsonb

    from enrichment import privacy

    ws, _ = make_workspace()
    company = {"domain": "acme.example"}
    with connect() as conn:  # yesterday's success for acme.example, whose lead named jane
        job = admit(conn, ws, template="company_profile",
                    lead=company | {"email": "jane@acme.example"}, now=NOW.replace(day=27)).job
        conn.execute("UPDATE enrichment_jobs SET status = 'succeeded', match = true,"
                     " created_at = %s, completed_at = %s WHERE id = %s",
                     (NOW.replace(day=27), NOW.replace(day=27), job["id"]))
        conn.execute("INSERT INTO enrichment_results (job_id, workspace_id, template, fields,"
                     " citations, completeness, expires_at) VALUES (%s, %s, 'company_profile',"
                     " %s, %s, 1, now() + interval '7 days')",
                     (job["id"], ws.id, Jsonb({"industry": "from jane's job"}), Jsonb([])))
    admitted, erased = {}, threading.Event()
    with connect() as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT 1 FROM workspaces WHERE id = %s FOR UPDATE", (ws.id,))

        def erase():
            with connect() as conn:
                privacy.erase(conn, ws.id, "jane@acme.example", 1)
            erased.set()

        def submit():
            with connect() as conn:
                admitted["job"] = admit(conn, ws, template="company_profile", lead=company)

        eraser = threading.Thread(target=erase)
        eraser.start()
        assert_waiting_on_lock(1)
        submitter = threading.Thread(target=submit)
        submitter.start()
        assert_waiting_on_lock(2)  # both wait behind the holder, the eraser first
        holder.execute("COMMIT")
        eraser.join(30)
        submitter.join(30)
    assert erased.is_set()
    fresh = admitted["job"]
    assert not fresh.cached and fresh.job["cached_from"] is None
    with connect() as conn:
        assert conn.execute("SELECT count(*) AS n FROM enrichment_results WHERE fields::text"
                            " LIKE '%%jane%%'").fetchone()["n"] == 0


def assert_waiting_on_lock(n: int) -> None:
    """Wait until n sessions of this database wait for a lock (seen from a connection of its
    own: pg_stat_activity is read once per transaction)."""
    from .helpers import eventually

    with connect() as conn:
        conn.autocommit = True
        eventually(lambda: conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()").fetchone()["n"] >= n, 10)
