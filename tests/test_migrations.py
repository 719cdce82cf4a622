"""`enrichment db upgrade`: creates the database, applies in order, twice is a no-op."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from enrichment import db

from .conftest import TEST_DATABASE_URL

SCRATCH = make_conninfo(TEST_DATABASE_URL, dbname="enrichment_test_migrations")


def drop(url: str) -> None:
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier("enrichment_test_migrations")))


def test_upgrade_creates_applies_and_is_idempotent():
    drop(SCRATCH)
    try:
        assert db.ensure_database(SCRATCH) is True
        assert db.ensure_database(SCRATCH) is False
        versions = [v for v, _ in db.migration_files()]
        assert db.upgrade(SCRATCH) == versions
        assert db.upgrade(SCRATCH) == []
        with psycopg.connect(SCRATCH) as conn:
            recorded = [r[0] for r in conn.execute(
                "SELECT version FROM schema_migrations ORDER BY version")]
            assert recorded == versions
            tables = {r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            assert {"workspaces", "api_keys", "enrichment_jobs", "enrichment_results",
                    "enrichment_usage", "job_outbox"} <= tables
            indexes = dict(conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
            ).fetchall())
        assert "(workspace_id, created_at DESC)" in indexes["idx_enrichment_usage_workspace"]
        assert "(idempotency_key)" in indexes["idx_enrichment_results_idem"]
        status = indexes["idx_enrichment_jobs_status"]
        assert "WHERE" in status and "'queued'" in status and "'processing'" in status
    finally:
        drop(SCRATCH)


def test_migrations_are_ordered_files():
    names = [v for v, _ in db.migration_files()]
    assert names == sorted(names) and names[0] == "0001_initial"


