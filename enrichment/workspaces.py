"""Workspaces and API keys.

A key looks like ``lek_<prefix>_<secret>`` (test mode: ``lek_test_<prefix>_<secret>``): the
prefix (public, unique) finds the row, the SHA-256 of the whole key is compared in constant
time, and the row says the key's mode. Only the hash is stored; the key is shown once, when
it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from .config import Plans
from .db import Conn
from .errors import Invalid, NotFound
from .jobs import lifecycle
from .ratelimit import TEST_BUCKET
from .templates import COMPANY_TEMPLATES

if TYPE_CHECKING:
    from .authguard import KeyCache

KEY_SCHEME = "lek"
TEST = "test"
PREFIX_BYTES = 6  # 12 hex chars
SECRET_BYTES = 32

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workspace:
    id: uuid.UUID
    name: str
    plan: str
    region: str
    person_level_enabled: bool
    plan_since: datetime | None = None  # when the current plan began, if not at creation
    livemode: bool = True  # the mode of the key that made this request (docs/api.md#test-mode)

    @property
    def bucket(self) -> str:
        """Whose rate limit a request spends: each mode has its own, at the plan's limits."""
        return str(self.id) if self.livemode else f"{self.id}{TEST_BUCKET}"


def person_level_allowed(region: str, person_level_enabled: bool) -> bool:
    """EU workspaces never get person-level enrichment; others unless switched off."""
    return region != "eu" and person_level_enabled


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def create_workspace(
    conn: Conn, plans: Plans, name: str, plan: str, region: str = "us"
) -> tuple[Workspace, str]:
    """Create a workspace and its first API key. Returns the workspace and the key (shown once)."""
    if plan not in plans:
        raise Invalid({"plan": [f"unknown plan {plan!r}; known: {', '.join(plans.names)}"]})
    if region not in ("us", "eu"):
        raise Invalid({"region": ["must be 'us' or 'eu'"]})
    ws = Workspace(uuid.uuid4(), name, plan, region, True)
    with conn.transaction():
        conn.execute(
            "INSERT INTO workspaces (id, name, plan, region) VALUES (%s, %s, %s, %s)",
            (ws.id, ws.name, ws.plan, ws.region),
        )
        conn.execute("INSERT INTO workspace_plans (workspace_id, effective_at, plan)"
                     " SELECT id, created_at, plan FROM workspaces WHERE id = %s", (ws.id,))
        key = create_api_key(conn, ws.id)
    return ws, key


def set_region(conn: Conn, cache: KeyCache, workspace_id: uuid.UUID, region: str,
               person_level_enabled: bool | None = None) -> None:
    """Move a workspace to a region. Where person-level enrichment ends up off, the personal
    fields (name, e-mail, LinkedIn URL) of its company-level jobs are removed: a company-level
    job there holds and sends company fields only."""
    if region not in ("us", "eu"):
        raise Invalid({"region": ["must be 'us' or 'eu'"]})
    if region == "eu" and person_level_enabled:
        raise Invalid({"person_level": ["person-level enrichment is never allowed in the EU"]})
    # The next requests see the new region.
    with cache.changing(lambda: prefixes(conn, workspace_id)), conn.transaction():
        row = conn.execute(
            "UPDATE workspaces SET region = %s,"
            " person_level_enabled = coalesce(%s, person_level_enabled) WHERE id = %s"
            " RETURNING region, person_level_enabled",
            (region, person_level_enabled, workspace_id)).fetchone()
        if row is None:
            raise NotFound(f"no workspace {workspace_id}")
        if not person_level_allowed(row["region"], row["person_level_enabled"]):
            lifecycle.strip_personal(conn, workspace_id, COMPANY_TEMPLATES)


def create_api_key(conn: Conn, workspace_id: uuid.UUID, livemode: bool = True) -> str:
    """A new key, shown once: `lek_<prefix>_<secret>`, or `lek_test_<prefix>_<secret>` for
    test mode."""
    prefix = secrets.token_hex(PREFIX_BYTES)
    scheme = KEY_SCHEME if livemode else f"{KEY_SCHEME}_{TEST}"
    key = f"{scheme}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    cur = conn.execute(
        "INSERT INTO api_keys (id, workspace_id, prefix, key_hash, livemode)"
        " SELECT %s, id, %s, %s, %s FROM workspaces WHERE id = %s",
        (uuid.uuid4(), prefix, _hash(key), livemode, workspace_id),
    )
    if cur.rowcount != 1:
        raise NotFound(f"no workspace {workspace_id}")
    return key


def prefixes(conn: Conn, workspace_id: uuid.UUID) -> list[str]:
    """The prefixes of the workspace's keys (what the key cache holds them by)."""
    return [r["prefix"] for r in conn.execute(
        "SELECT prefix FROM api_keys WHERE workspace_id = %s", (workspace_id,))]


def revoke_api_key(conn: Conn, cache: KeyCache, prefix: str) -> bool:
    """Revoke a key: refused from the next request on, in every API process (its cache entry
    is marked stale around the change), and journaled in Redis (a restore re-applies it)."""
    with cache.changing(lambda: [prefix]):
        row = conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE prefix = %s AND revoked_at IS NULL"
            " RETURNING revoked_at", (prefix,)).fetchone()
    if row is not None:
        cache.journal_revocation(prefix, row["revoked_at"])
        log.info("api key %s revoked", prefix)  # (the record a lost journal falls back on)
    return row is not None


def reapply_revocations(conn: Conn, cache: KeyCache) -> list[str]:
    """After a PostgreSQL restore: revoke again, as of when they were made, the keys the
    journal says were revoked (those revoked after the backup point are live in the restored
    database). Returns the prefixes revoked again."""
    again = []
    for prefix, at in cache.revocations():
        with cache.changing(lambda: [prefix]):  # noqa: B023 (called within the iteration)
            if conn.execute("UPDATE api_keys SET revoked_at = %s WHERE prefix = %s"
                            " AND revoked_at IS NULL", (at, prefix)).rowcount:
                again.append(prefix)
    return again


def list_workspaces(conn: Conn) -> list[dict]:
    """Every workspace, oldest first, with its count of live API keys."""
    return conn.execute(
        "SELECT w.id, w.name, w.plan, w.region, w.person_level_enabled, w.created_at,"
        " w.stripe_customer_id, count(k.id) FILTER (WHERE k.revoked_at IS NULL) AS live_keys"
        " FROM workspaces w LEFT JOIN api_keys k ON k.workspace_id = w.id"
        " GROUP BY w.id ORDER BY w.created_at, w.id").fetchall()


def list_api_keys(conn: Conn, workspace_id: uuid.UUID | None = None) -> list[dict]:
    """API keys by prefix (never the key: only its hash is stored), newest first; of one
    workspace (NotFound if there is none such), or of all."""
    if workspace_id is not None and conn.execute(
            "SELECT 1 FROM workspaces WHERE id = %s", (workspace_id,)).fetchone() is None:
        raise NotFound(f"no workspace {workspace_id}")
    return conn.execute(
        "SELECT prefix, workspace_id, livemode, created_at, revoked_at FROM api_keys"
        " WHERE %(ws)s::uuid IS NULL OR workspace_id = %(ws)s"
        " ORDER BY created_at DESC, prefix", {"ws": workspace_id}).fetchall()


def key_prefix(key: str) -> str | None:
    scheme, _, rest = key.partition("_")
    if rest.startswith(f"{TEST}_"):  # a test-mode key; its row says so too
        rest = rest[len(TEST) + 1:]
    prefix, _, secret = rest.partition("_")  # the secret itself may contain "_"
    if scheme != KEY_SCHEME or len(prefix) != 2 * PREFIX_BYTES or not secret:
        return None
    return prefix


# A key not revoked, by its prefix, with its workspace.
KEY_AND_WORKSPACE = (
    "SELECT k.key_hash, k.livemode, w.id, w.name, w.plan, w.region,"
    " w.person_level_enabled, w.plan_since"
    " FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id"
    " WHERE k.prefix = %s AND k.revoked_at IS NULL")


def _as_seen(row: dict) -> Workspace:
    return Workspace(row["id"], row["name"], row["plan"], row["region"],
                     row["person_level_enabled"], row["plan_since"], row["livemode"])


def authenticate(conn: Conn, key: str) -> Workspace | None:
    """The workspace a live key belongs to, or None (unknown, malformed or revoked key)."""
    prefix = key_prefix(key)
    if prefix is None:
        return None
    row = conn.execute(KEY_AND_WORKSPACE, (prefix,)).fetchone()
    if row is None or not hmac.compare_digest(bytes(row["key_hash"]), _hash(key)):
        return None
    return _as_seen(row)


def by_key_prefix(conn: Conn, prefix: str) -> Workspace | None:
    """The workspace, as its key's requests see it, of a key authenticated earlier (a console
    session, an upload it started) — None once that key is revoked."""
    row = conn.execute(KEY_AND_WORKSPACE, (prefix,)).fetchone()
    return None if row is None else _as_seen(row)
