"""Outgoing webhooks, following the Standard Webhooks specification.

A message (`job.succeeded`, `job.failed`, `job.dead`, `batch.completed`) is written, one row
per subscribed endpoint, in the transaction that commits the outcome (`webhook_deliveries` is
the outbox and the delivery log); its task goes to the `webhooks` queue after commit, which
its own workers consume — a slow or dead receiver never holds up enrichment. Each attempt
POSTs the same body with the same `webhook-id`, a fresh `webhook-timestamp` and
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed with the endpoint's
`whsec_` secret; a 2xx within 10 s is delivered, anything else is retried after about 5 s,
5 min, 30 min, 2 h, 5 h, 10 h and 10 h (with jitter; 27 h in all), then given up. An endpoint
failing for 3 days is disabled. At most WEBHOOK_ENDPOINT_CONCURRENCY deliveries to one
endpoint run at once.

The SSRF guard: a URL must be https and its host must resolve only to public addresses
(not loopback, private, link-local, multicast or reserved) — checked when the endpoint is
registered and again at every attempt, which connects to the address it checked (no second
lookup to rebind) and follows no redirect. WEBHOOKS_ALLOW_PRIVATE_URLS=true lifts the guard
(and allows http) for development and tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import certifi
import urllib3
from psycopg import Connection
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from .errors import Invalid

log = logging.getLogger(__name__)

EVENTS = ("job.succeeded", "job.failed", "job.dead", "batch.completed")
RETRY_DELAYS = (5, 300, 1800, 7200, 18000, 36000, 36000)  # seconds after attempts 1..7
DISABLE_AFTER = timedelta(days=3)
TIMEOUT_SECONDS = 10.0
LEASE = timedelta(seconds=30)


class BadWebhookUrl(Invalid):
    """The URL cannot be a webhook target (scheme, host, or where it resolves)."""

    def __init__(self, reason: str):
        super().__init__({"url": [f"{reason}."]})
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def resolve(url: str, allow_private: bool) -> tuple[str, str, int]:
    """(scheme, the address to connect to, port) of an allowed target; BadWebhookUrl if not."""
    parts = urlsplit(url)
    if parts.scheme not in (("https", "http") if allow_private else ("https",)):
        raise BadWebhookUrl("the URL must be https")
    if not parts.hostname:
        raise BadWebhookUrl("the URL has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise BadWebhookUrl(f"the host does not resolve ({exc})") from None
    addresses = [info[4][0] for info in infos]
    if not allow_private:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global or ip.is_multicast:
                raise BadWebhookUrl(f"the host resolves to a non-public address ({ip})")
    return parts.scheme, addresses[0], port


# --- endpoints ------------------------------------------------------------------------------

def endpoint_body(row: dict, with_secret: bool = False) -> dict:
    body = {"id": str(row["id"]), "url": row["url"], "events": list(row["events"]),
            "created_at": row["created_at"].isoformat().replace("+00:00", "Z"),
            "disabled": row["disabled_at"] is not None}
    if with_secret:
        body["secret"] = row["secret"]
    return body


def create_endpoint(conn: Connection, workspace_id: uuid.UUID, url: str, events: list[str],
                    allow_private: bool) -> dict:
    resolve(url, allow_private)
    return conn.execute(
        "INSERT INTO webhook_endpoints (id, workspace_id, url, events, secret)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING *",
        (uuid.uuid4(), workspace_id, url, sorted(set(events)), new_secret())).fetchone()


def list_endpoints(conn: Connection, workspace_id: uuid.UUID) -> list[dict]:
    return conn.execute("SELECT * FROM webhook_endpoints WHERE workspace_id = %s"
                        " ORDER BY created_at DESC", (workspace_id,)).fetchall()


def delete_endpoint(conn: Connection, workspace_id: uuid.UUID, endpoint_id: uuid.UUID) -> bool:
    return conn.execute("DELETE FROM webhook_endpoints WHERE id = %s AND workspace_id = %s",
                        (endpoint_id, workspace_id)).rowcount == 1


def deliveries(conn: Connection, workspace_id: uuid.UUID, endpoint_id: uuid.UUID,
               limit: int = 100) -> list[dict] | None:
    """The endpoint's delivery log, newest first; None for another workspace's endpoint."""
    if conn.execute("SELECT 1 FROM webhook_endpoints WHERE id = %s AND workspace_id = %s",
                    (endpoint_id, workspace_id)).fetchone() is None:
        return None
    rows = conn.execute(
        "SELECT id, event_type, status, attempts, last_status_code, last_error, created_at,"
        " delivered_at, next_attempt_at FROM webhook_deliveries WHERE endpoint_id = %s"
        " ORDER BY created_at DESC LIMIT %s", (endpoint_id, limit)).fetchall()
    iso = lambda ts: ts.isoformat().replace("+00:00", "Z") if ts else None  # noqa: E731
    return [{"id": str(r["id"]), "event": r["event_type"], "status": r["status"],
             "attempts": r["attempts"], "last_status_code": r["last_status_code"],
             "last_error": r["last_error"], "created_at": iso(r["created_at"]),
             "delivered_at": iso(r["delivered_at"]),
             "next_attempt_at": iso(r["next_attempt_at"])
             if r["status"] == "pending" else None} for r in rows]


# --- messages -------------------------------------------------------------------------------

def enqueue(conn: Connection, workspace_id: uuid.UUID, event: str, data: dict,
            now: datetime, job_id: uuid.UUID | None = None) -> list[uuid.UUID]:
    """One delivery per live endpoint of the workspace subscribed to `event`, in the caller's
    transaction. Returns their ids (publish them after commit)."""
    message = {"type": event, "timestamp": now.isoformat().replace("+00:00", "Z"),
               "data": data}
    rows = conn.execute(
        "INSERT INTO webhook_deliveries (id, endpoint_id, workspace_id, event_type, payload,"
        " job_id) SELECT gen_random_uuid(), e.id, e.workspace_id, %s, %s, %s"
        " FROM webhook_endpoints e WHERE e.workspace_id = %s AND e.disabled_at IS NULL"
        " AND %s = ANY(e.events) RETURNING id",
        (event, Jsonb(message), job_id, workspace_id, event)).fetchall()
    return [r["id"] for r in rows]


def job_ended(conn: Connection, workspace_id: uuid.UUID, job_id: uuid.UUID,
              status: str) -> list[uuid.UUID]:
    """In the transaction that ends a job: its `job.<status>` message, and `batch.completed`
    for each batch it completes (the workspace row is locked: the last job of a batch to end
    sees every other one ended)."""
    from . import jobs

    now = datetime.now(UTC)
    out = []
    if conn.execute("SELECT 1 FROM webhook_endpoints WHERE workspace_id = %s"
                    " AND disabled_at IS NULL AND %s = ANY(events) LIMIT 1",
                    (workspace_id, f"job.{status}")).fetchone():
        body = jobs.job_body(jobs.get_job(conn, workspace_id, job_id))
        out += enqueue(conn, workspace_id, f"job.{status}", body, now, job_id=job_id)
    for batch in complete_batches(conn, workspace_id, job_id):
        out += enqueue(conn, workspace_id, "batch.completed",
                       jobs.batch_progress(conn, workspace_id, batch), now)
    return out


def complete_batches(conn: Connection, workspace_id: uuid.UUID,
                     job_id: uuid.UUID | None = None) -> list[uuid.UUID]:
    """Mark done the workspace's batches (those holding `job_id`, or all open ones) whose jobs
    have all ended; returns them. Each batch is completed once."""
    scope = ("b.id IN (SELECT batch_id FROM batch_items WHERE job_id = %(job)s)"
             if job_id is not None else "b.workspace_id = %(ws)s")
    return [r["id"] for r in conn.execute(
        "UPDATE batches b SET completed_at = now() WHERE " + scope  # noqa: S608 (constant)
        + " AND b.completed_at IS NULL AND NOT EXISTS (SELECT 1 FROM batch_items i"
        "  JOIN enrichment_jobs j ON j.id = i.job_id WHERE i.batch_id = b.id"
        "  AND j.status NOT IN ('succeeded', 'failed', 'dead')) RETURNING b.id",
        {"job": job_id, "ws": workspace_id})]


@dataclass
class Attempt:
    """What became of one delivery attempt: `retry_in` seconds until the next one (None:
    none due — delivered, given up, or not claimable now); `busy`: the endpoint had its
    fill of deliveries in flight, try again in a moment."""

    outcome: str
    retry_in: float | None = None
    busy: bool = False


def _claim(conn: Connection, delivery_id: uuid.UUID, concurrency: int) -> dict | str | None:
    with conn.transaction():
        target = conn.execute("SELECT endpoint_id FROM webhook_deliveries WHERE id = %s",
                              (delivery_id,)).fetchone()
        if target is None:
            return None
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('webhook'),"
                     " hashtext(%s::text))", (target["endpoint_id"],))
        in_flight = conn.execute(
            "SELECT count(*) AS n FROM webhook_deliveries WHERE endpoint_id = %s"
            " AND status = 'delivering' AND lease_until > now()",
            (target["endpoint_id"],)).fetchone()["n"]
        if in_flight >= concurrency:
            return "busy"
        return conn.execute(
            "UPDATE webhook_deliveries d SET status = 'delivering', attempts = d.attempts + 1,"
            " lease_until = now() + %s FROM webhook_endpoints e WHERE d.id = %s"
            " AND e.id = d.endpoint_id AND e.disabled_at IS NULL"
            " AND (d.status = 'pending' OR (d.status = 'delivering' AND d.lease_until < now()))"
            " AND d.next_attempt_at <= now() + interval '1 second'"
            " RETURNING d.*, e.url, e.secret", (LEASE, delivery_id)).fetchone()


def _post(url: str, secret: str, msg_id: str, body: bytes, allow_private: bool
          ) -> tuple[int | None, str | None]:
    """POST once, to the address the guard checked, no redirects: (status, error)."""
    try:
        scheme, address, port = resolve(url, allow_private)
    except BadWebhookUrl as exc:
        return None, str(exc)
    parts = urlsplit(url)
    timestamp = int(datetime.now(UTC).timestamp())
    headers = {"content-type": "application/json", "host": parts.netloc,
               "user-agent": "lead-enrichment-webhooks/1", "webhook-id": msg_id,
               "webhook-timestamp": str(timestamp),
               "webhook-signature": sign(secret, msg_id, timestamp, body)}
    timeout = urllib3.Timeout(total=TIMEOUT_SECONDS)
    if scheme == "https":
        pool = urllib3.HTTPSConnectionPool(address, port, timeout=timeout, retries=False,
                                           server_hostname=parts.hostname,
                                           assert_hostname=parts.hostname,
                                           cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        with pool:
            resp = pool.urlopen("POST", path, body=body, headers=headers, redirect=False,
                                preload_content=True)
        return resp.status, None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except urllib3.exceptions.HTTPError as exc:
        return None, type(exc).__name__


def deliver(pool: ConnectionPool, delivery_id: uuid.UUID, *, allow_private: bool,
            concurrency: int) -> Attempt:
    """One attempt at a delivery, if it is due and its endpoint has room."""
    with pool.connection() as conn:
        row = _claim(conn, delivery_id, concurrency)
    if row is None:
        return Attempt("not-due")
    if row == "busy":
        return Attempt("busy", busy=True)
    body = json.dumps(row["payload"], separators=(",", ":")).encode()
    status, error = _post(row["url"], row["secret"], str(row["id"]), body, allow_private)
    with pool.connection() as conn, conn.transaction():
        if error is None:
            conn.execute("UPDATE webhook_deliveries SET status = 'succeeded',"
                         " delivered_at = now(), last_status_code = %s, last_error = NULL,"
                         " lease_until = NULL WHERE id = %s", (status, row["id"]))
            conn.execute("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = %s",
                         (row["endpoint_id"],))
            return Attempt("delivered")
        endpoint = conn.execute(
            "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, now())"
            " WHERE id = %s RETURNING failing_since < now() - %s AS gone",
            (row["endpoint_id"], DISABLE_AFTER)).fetchone()
        if endpoint["gone"]:  # failing for 3 days: disabled, its queue given up
            conn.execute("UPDATE webhook_endpoints SET disabled_at = now() WHERE id = %s",
                         (row["endpoint_id"],))
            conn.execute("UPDATE webhook_deliveries SET status = 'failed', lease_until = NULL,"
                         " last_error = coalesce(last_error, 'endpoint disabled')"
                         " WHERE endpoint_id = %s AND status IN ('pending', 'delivering')",
                         (row["endpoint_id"],))
        if endpoint["gone"] or row["attempts"] > len(RETRY_DELAYS):
            conn.execute("UPDATE webhook_deliveries SET status = 'failed', lease_until = NULL,"
                         " last_status_code = %s, last_error = %s WHERE id = %s",
                         (status, error, row["id"]))
            log.warning("webhook %s to endpoint %s given up: %s", row["id"],
                        row["endpoint_id"], error)
            return Attempt("failed")
        delay = RETRY_DELAYS[row["attempts"] - 1] * random.uniform(0.8, 1.2)
        conn.execute("UPDATE webhook_deliveries SET status = 'pending', lease_until = NULL,"
                     " next_attempt_at = now() + make_interval(secs => %s),"
                     " last_status_code = %s, last_error = %s WHERE id = %s",
                     (delay, status, error, row["id"]))
        return Attempt("retry", retry_in=delay)


def overdue(pool: ConnectionPool, late: timedelta = timedelta(minutes=1),
            limit: int = 1000) -> list[uuid.UUID]:
    """Deliveries whose attempt is overdue (a long backoff came due, a message was lost, a
    worker died mid-attempt): the sweeper sends them again (a second message is a no-op
    claim)."""
    with pool.connection() as conn:
        return [r["id"] for r in conn.execute(
            "SELECT id FROM webhook_deliveries WHERE (status = 'pending'"
            " AND next_attempt_at < now() - %s) OR (status = 'delivering'"
            " AND lease_until < now()) ORDER BY next_attempt_at LIMIT %s", (late, limit))]
