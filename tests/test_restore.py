"""The restore drill (`enrichment db restore`, docs/operations.md#the-restore-drill) against a
throw-away PostgreSQL cluster: a `pg_dump -Fc` taken while two keys were live, a key revoked
and a cache entry written after it, then the database lost; the script restores into a fresh
database, migrates, drops the key cache, revokes the key again and reconciles billing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg.rows import dict_row

from bench.stack import PostgresServer, pg_bindir
from enrichment import db as db_module
from enrichment.authguard import REVOCATIONS, KeyCache
from enrichment.config import load_plans
from enrichment.workspaces import create_api_key, create_workspace, key_prefix, revoke_api_key

from .conftest import ROOT, TEST_REDIS_URL

PLANS = load_plans()
ENRICHMENT = [sys.executable, "-m", "enrichment.cli"]


@pytest.fixture
def cluster():
    if pg_bindir() is None:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
    server = PostgresServer("enrichment_live")
    try:
        yield server
    finally:
        server.close()


def test_the_restore_drill_brings_back_the_database_and_what_happened_after_it(
        cluster, tmp_path: Path):
    r = redis.Redis.from_url(TEST_REDIS_URL)
    r.flushdb()
    cache = KeyCache(r, PLANS)
    db_module.upgrade(cluster.url)
    with psycopg.connect(cluster.url, row_factory=dict_row, autocommit=True) as conn:
        ws, kept = create_workspace(conn, PLANS, "Restored", "pro", "us")
        lost = create_api_key(conn, ws.id)
    dump = tmp_path / "backup.dump"
    subprocess.run([str(pg_bindir() / "pg_dump"), "-Fc", "-f", str(dump), cluster.url],
                   check=True)
    # After the backup point: a key revoked, a cache entry of the database as it was.
    with psycopg.connect(cluster.url, row_factory=dict_row, autocommit=True) as conn:
        assert revoke_api_key(conn, cache, key_prefix(lost))
    r.set(f"apikey:{key_prefix(kept)}", "an entry of the lost database")
    # The disaster: the database is gone; the restore goes into a fresh one.
    restored = cluster.url_for("enrichment_restored")
    env = {**os.environ, "DATABASE_URL": restored, "REDIS_URL": TEST_REDIS_URL,
           "STRIPE_API_KEY": "", "LOG_LEVEL": "WARNING"}
    done = subprocess.run([*ENRICHMENT, "db", "restore", "--dump", str(dump),
                           "--pg-restore", str(pg_bindir() / "pg_restore")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    steps = {s["step"]: s for s in map(json.loads, done.stdout.splitlines())}
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(steps) == ["restore", "upgrade", "flush-key-cache", "reapply-revocations",
                           "reconcile"]
    assert steps["upgrade"]["applied"] == []  # the dump had every migration
    assert steps["flush-key-cache"]["dropped"] >= 1
    assert r.get(f"apikey:{key_prefix(kept)}") is None  # the lost database's entry is gone
    assert {r.get(k) for k in r.scan_iter("apikey:*")} <= {b"stale"}  # the revoked one: marked
    assert steps["reapply-revocations"]["revoked_again"] == [key_prefix(lost)]
    assert steps["reconcile"] == {"step": "reconcile", "discrepancies": [], "unsent": []}
    with psycopg.connect(restored, row_factory=dict_row) as conn:
        keys = {k["prefix"]: k["revoked_at"] for k in conn.execute(
            "SELECT prefix, revoked_at FROM api_keys")}
    assert keys[key_prefix(lost)] is not None and keys[key_prefix(kept)] is None
    assert r.zscore(REVOCATIONS, key_prefix(lost)) is not None
    # A second run changes nothing more (the drill may be repeated).
    again = subprocess.run([*ENRICHMENT, "db", "restore", "--no-restore"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert '"revoked_again": []' in again.stdout
    # Restoring over a database a newer migration changed (going back after an upgrade): the
    # schema is emptied first, so what the dump lacks does not survive to fail the upgrade.
    with psycopg.connect(restored, autocommit=True) as conn:
        conn.execute("CREATE TABLE from_a_newer_migration (id int)")
    over = subprocess.run([*ENRICHMENT, "db", "restore", "--dump", str(dump), "--pg-restore",
                           str(pg_bindir() / "pg_restore")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert over.returncode == 0, over.stdout + over.stderr
    with psycopg.connect(restored) as conn:
        assert conn.execute("SELECT to_regclass('from_a_newer_migration')").fetchone()[0] is None


def test_the_drill_refuses_without_a_dump():
    done = subprocess.run([*ENRICHMENT, "db", "restore"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--dump FILE is required" in done.stderr
