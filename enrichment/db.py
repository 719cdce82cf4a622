"""PostgreSQL: connection pool, database creation and ordered SQL migrations."""

from __future__ import annotations

import logging
import time
import weakref
from importlib import resources
from typing import Any, TypeAlias

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

# What the domain's functions are given: autocommit connections returning rows as dicts.
Conn: TypeAlias = psycopg.Connection[dict[str, Any]]
Pool: TypeAlias = ConnectionPool[Conn]


def one(cursor: psycopg.Cursor[dict[str, Any]]) -> dict[str, Any]:
    """The row a statement always returns (an aggregate, an upsert's RETURNING)."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the statement returned no row")
    return row

# Serialises concurrent `db upgrade` runs (make run twice, several test workers).
MIGRATION_LOCK = 0x6C65_6164  # "lead"


RECHECK_IDLE_SECONDS = 1.0
_returned_at: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _note_return(conn: Conn) -> None:
    _returned_at[conn] = time.monotonic()


def _check_if_idle(conn: Conn) -> None:
    """Verify a connection before handing it out (one empty query) only if it sat idle: a
    database restart breaks idle connections, while one used a moment ago is almost surely
    fine — and under load every connection is, so the check costs nothing there."""
    if time.monotonic() - _returned_at.get(conn, 0.0) > RECHECK_IDLE_SECONDS:
        ConnectionPool.check_connection(conn)


def connect_pool(url: str, max_size: int = 10, timeout: float = 5.0) -> Pool:
    """A pool of autocommit connections returning dict rows: a single statement costs one
    round trip; statements that must hold together use `with conn.transaction():`.
    `timeout` bounds the wait for a connection, so a saturated or unreachable database becomes
    an error (503) instead of a hung request."""
    return ConnectionPool(
        url,
        connection_class=psycopg.Connection[dict[str, Any]],
        min_size=1,
        max_size=max_size,
        timeout=timeout,
        # A connection broken by a database restart is replaced on checkout, not handed out.
        check=_check_if_idle,
        reset=_note_return,
        kwargs={"row_factory": dict_row, "connect_timeout": 5, "autocommit": True,
                "options": "-c timezone=UTC"},
        open=True,
        name="enrichment",
    )


def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it does not exist. Returns True if it created it."""
    params = conninfo_to_dict(url)
    dbname = str(params.get("dbname") or params.get("user"))
    admin = make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        except psycopg.errors.DuplicateDatabase:
            return False  # created concurrently by another process
        log.info("created database %s", dbname)
        return True


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("enrichment") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text()) for p in files]


def upgrade(url: str) -> list[str]:
    """Apply every migration not yet recorded in schema_migrations, each in its own transaction,
    in file-name order. Idempotent; safe to run concurrently. Returns the versions applied."""
    applied: list[str] = []
    with psycopg.connect(url, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.commit()
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            conn.commit()  # so each migration below is a transaction of its own, not a savepoint
            for version, body in migration_files():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(body)
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
                log.info("applied migration %s", version)
            conn.commit()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
            conn.commit()
    return applied
