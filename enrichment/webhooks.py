"""Outgoing webhooks, following the Standard Webhooks specification.

A message (`job.succeeded`, `job.failed`, `job.dead`, `batch.completed`) is written, one row
per subscribed endpoint, from the event the jobs service records in the transaction that
commits the outcome (`notify`, right after that commit; the webhook sweeper turns events a
crash left). `webhook_deliveries` is the outbox and the delivery log; each message's task
goes to the `webhooks` queue after commit, which
its own workers consume — a slow or dead receiver never holds up enrichment. Each attempt
POSTs the same body with the same `webhook-id`, a fresh `webhook-timestamp` and
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed with the endpoint's
`whsec_` secret; a 2xx within 10 s is delivered, anything else is retried after about 5 s,
5 min, 30 min, 2 h, 5 h, 10 h and 10 h (with jitter; 27 h in all), then given up. An endpoint
failing for 3 days (no success, and no day without failures) is disabled until re-enabled.

An attempt takes at most 10 s in all — name lookup, connect, sending, the answer (of which
at most 64 KiB is read) — and only the attempt holding the delivery's lease token writes its
outcome. At most WEBHOOK_ENDPOINT_CONCURRENCY attempts to one endpoint, and
WORKSPACE_IN_FLIGHT to one workspace's endpoints, run at once, so one customer's slow
receivers cannot occupy every webhook worker; a delivery that finds no room waits a few
seconds (one message per delivery, never a loop). A workspace has at most MAX_ENDPOINTS.

A URL must be an absolute https URL per RFC 3986 (a host, a valid port, no credentials, no
space, control or other character RFC 3986 does not allow: such a URL could never be sent
to), and the SSRF guard: its host must resolve only to public addresses (none in BLOCKED_V4 /
BLOCKED_V6: loopback, private, link-local, site-local, multicast, reserved, IPv4-compatible;
IPv4-mapped, 6to4 and well-known NAT64 forms are judged by the IPv4 address they embed) —
checked when the endpoint is registered and again at every attempt, which connects to the
address it checked (no second lookup to rebind) and follows no redirect.
WEBHOOKS_ALLOW_PRIVATE_URLS=true lifts the guard (and allows http) for development and tests;
the URL's syntax is checked still. Any error in an attempt is a failed attempt, retried on the
schedule: a delivery is never left in flight. Messages arrive in no guaranteed order
(`batch.completed` may precede the last `job.*`): receivers order by the payload's timestamps.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import re
import secrets
import socket
import string
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import SplitResult, urlsplit

import certifi
import urllib3
import urllib3.connection
from psycopg.types.json import Jsonb

from .db import Conn, Pool, one
from .errors import Invalid
from .jobs import batches, events, read
from .jobs.outbox import send_webhooks
from .jobs.slots import lock_workspace
from .jobs.states import SUPPRESSED, Publisher

log = logging.getLogger(__name__)

EVENTS = ("job.succeeded", "job.failed", "job.dead", "batch.completed")
RETRY_DELAYS = (5, 300, 1800, 7200, 18000, 36000, 36000)  # seconds after attempts 1..7
DISABLE_AFTER = timedelta(days=3)
QUIET_DAY = timedelta(days=1)  # a day without failures ends a run of failures
TIMEOUT_SECONDS = 10.0  # one attempt, all of it
LEASE = timedelta(seconds=30)  # > TIMEOUT_SECONDS: a live attempt is never taken over
MAX_RESPONSE_BYTES = 64 * 1024  # of a receiver's answer body, read and dropped
MAX_ENDPOINTS = 16  # per workspace (Stripe's limit per account)
WORKSPACE_IN_FLIGHT = 4  # attempts at once to one workspace's endpoints
BUSY_DELAY = (2.0, 6.0)  # seconds a delivery that found no room waits (uniform)
SWEEP_AGAIN = timedelta(minutes=10)  # the sweeper re-sends a message at most this often
# Where a webhook never goes (IANA's special-purpose address registries), listed rather than
# left to ipaddress's is_global/is_private: those miss IPv4-compatible ::a.b.c.d, site-local
# fec0::/10 and local-use NAT64, and before Python 3.12.4 call 192.0.0.0/24 global
# (CVE-2024-4032). An address must also be is_global and not is_multicast (stricter still).
BLOCKED_V4 = tuple(map(ipaddress.IPv4Network, (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # private
    "100.64.0.0/10",  # shared (carrier-grade NAT)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local (cloud metadata services)
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # documentation
    "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
    "198.18.0.0/15",  # benchmarking
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4", "255.255.255.255/32",  # reserved, broadcast
)))
BLOCKED_V6 = tuple(map(ipaddress.IPv6Network, (
    "::/128", "::1/128",  # unspecified, loopback
    "::/96",  # IPv4-compatible (deprecated; ::a.b.c.d)
    "64:ff9b:1::/48",  # local-use NAT64: translated inside someone's network
    "100::/64",  # discard-only
    "2001::/23",  # IETF protocol assignments (Teredo, benchmarking, ORCHID, ...)
    "2001:db8::/32",  # documentation
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local (deprecated, still routed by some)
    "ff00::/8",  # multicast
)))
# IPv6 ranges that embed an IPv4 address, where the IPv4 one decides (it is where the packets
# end up): IPv4-mapped ::ffff:0:0/96, 6to4 2002::/16 (ipaddress unpacks both) and NAT64:
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# The characters RFC 3986 allows in a URI (unreserved, reserved, and "%" opening a %XX escape):
# a space, control character, backslash or non-ASCII one could never be sent as it is.
URL_CHARS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")
BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# host[:port]: a DNS name or IPv4 address, or a bracketed IPv6 one (no zone, no IPvFuture).
AUTHORITY = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")


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


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """In no blocked network (an IPv6 form embedding an IPv4 address judged by that one), and
    global by ipaddress's lights too."""
    if ip.version == 6:
        embedded = (ip.ipv4_mapped or ip.sixtofour
                    or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in NAT64 else None))
        if embedded is not None:
            return _public(embedded)
    blocked = BLOCKED_V4 if ip.version == 4 else BLOCKED_V6
    return not any(ip in net for net in blocked) and ip.is_global and not ip.is_multicast


def _lookup(host: str, port: int, timeout: float) -> list[str]:
    """The host's addresses, within `timeout` (the system resolver has no timeout of its own
    we can set: a slow lookup is abandoned to its thread)."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        infos = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM
                            ).result(timeout=timeout)
    except FutureTimeout:
        raise BadWebhookUrl("the host did not resolve in time") from None
    except (OSError, UnicodeError):
        raise BadWebhookUrl("the host does not resolve") from None
    finally:
        pool.shutdown(wait=False)
    return [str(info[4][0]) for info in infos]


def _parse(url: str, allow_private: bool) -> tuple[SplitResult, str, int]:
    """(parts, host, port) of an absolute URL per RFC 3986 that can be sent to; BadWebhookUrl
    if not — whether or not private targets are allowed."""
    if not set(url) <= URL_CHARS:
        raise BadWebhookUrl("the URL may hold only the characters RFC 3986 allows (no spaces "
                            "or control characters; percent-encode the others)")
    if BAD_ESCAPE.search(url):
        raise BadWebhookUrl("the URL has a malformed percent-escape")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadWebhookUrl("the URL is malformed") from None
    if parts.scheme not in (("https", "http") if allow_private else ("https",)):
        raise BadWebhookUrl("the URL must be https")
    if not parts.hostname:
        raise BadWebhookUrl("the URL has no host")
    if "@" in parts.netloc:
        raise BadWebhookUrl("the URL may not carry credentials")
    if not AUTHORITY.fullmatch(parts.netloc) or port == 0:  # (port 0 would mean the default)
        raise BadWebhookUrl("the URL's host or port is malformed")
    return parts, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def resolve(url: str, allow_private: bool, timeout: float = TIMEOUT_SECONDS
            ) -> tuple[str, str, int]:
    """(scheme, the address to connect to, port) of an allowed target; BadWebhookUrl if not.
    The reasons never name an address: they would map a private network for the caller."""
    parts, host, port = _parse(url, allow_private)
    addresses = _lookup(host, port, timeout)
    if not allow_private and not all(
            _public(ipaddress.ip_address(a.split("%")[0])) for a in addresses):
        raise BadWebhookUrl("the host resolves to a non-public address")
    return parts.scheme, addresses[0], port


# --- endpoints ------------------------------------------------------------------------------

def endpoint_body(row: dict, with_secret: bool = False) -> dict:
    body = {"id": str(row["id"]), "url": row["url"], "events": list(row["events"]),
            "created_at": row["created_at"].isoformat().replace("+00:00", "Z"),
            "disabled": row["disabled_at"] is not None, "livemode": row["livemode"]}
    if with_secret:
        body["secret"] = row["secret"]
    return body


def create_endpoint(conn: Conn, workspace_id: uuid.UUID, url: str, events: list[str],
                    allow_private: bool, livemode: bool = True) -> dict:
    """A new endpoint with a new secret, for the events of one mode (a test key's endpoint
    gets test-mode events only, and the reverse); Invalid past MAX_ENDPOINTS (per mode) or
    for a URL the guard refuses."""
    resolve(url, allow_private)
    with conn.transaction():
        conn.execute("SELECT 1 FROM workspaces WHERE id = %s FOR NO KEY UPDATE",
                     (workspace_id,))  # counted and added as one step
        row = conn.execute(
            "INSERT INTO webhook_endpoints (id, workspace_id, url, events, secret, livemode)"
            " SELECT %s, %s, %s, %s, %s, %s WHERE (SELECT count(*) FROM webhook_endpoints"
            " WHERE workspace_id = %s AND livemode = %s) < %s RETURNING *",
            (uuid.uuid4(), workspace_id, url, sorted(set(events)), new_secret(), livemode,
             workspace_id, livemode, MAX_ENDPOINTS)).fetchone()
    if row is None:
        raise Invalid({"url": [f"A workspace has at most {MAX_ENDPOINTS} endpoints; delete "
                               "one first."]})
    return row


def enable_endpoint(conn: Conn, workspace_id: uuid.UUID, endpoint_id: uuid.UUID,
                    enabled: bool, livemode: bool = True) -> dict | None:
    """Enable (a disabled endpoint starts with a clean record) or disable an endpoint;
    None for another workspace's."""
    return conn.execute(
        "UPDATE webhook_endpoints SET disabled_at = CASE WHEN %(on)s THEN NULL"
        " ELSE coalesce(disabled_at, now()) END,"
        " failing_since = CASE WHEN %(on)s THEN NULL ELSE failing_since END"
        " WHERE id = %(id)s AND workspace_id = %(ws)s AND livemode = %(mode)s RETURNING *",
        {"on": enabled, "id": endpoint_id, "ws": workspace_id, "mode": livemode}).fetchone()


def list_endpoints(conn: Conn, workspace_id: uuid.UUID, livemode: bool = True) -> list[dict]:
    return conn.execute("SELECT * FROM webhook_endpoints WHERE workspace_id = %s"
                        " AND livemode = %s ORDER BY created_at DESC",
                        (workspace_id, livemode)).fetchall()


def delete_endpoint(conn: Conn, workspace_id: uuid.UUID, endpoint_id: uuid.UUID,
                    livemode: bool = True) -> bool:
    return conn.execute("DELETE FROM webhook_endpoints WHERE id = %s AND workspace_id = %s"
                        " AND livemode = %s", (endpoint_id, workspace_id, livemode)
                        ).rowcount == 1


def deliveries(conn: Conn, workspace_id: uuid.UUID, endpoint_id: uuid.UUID,
               limit: int = 100, livemode: bool = True) -> list[dict] | None:
    """The endpoint's delivery log, newest first; None for another workspace's endpoint (or
    another mode's)."""
    if conn.execute("SELECT 1 FROM webhook_endpoints WHERE id = %s AND workspace_id = %s"
                    " AND livemode = %s", (endpoint_id, workspace_id, livemode)
                    ).fetchone() is None:
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

def enqueue(conn: Conn, workspace_id: uuid.UUID, event: str, data: dict,
            now: datetime, job_id: uuid.UUID | None = None) -> list[uuid.UUID]:
    """One delivery per enabled endpoint of the workspace subscribed to `event`, of the mode
    `data` (a job or batch body) belongs to, in the caller's transaction. Returns their ids
    (publish them after commit)."""
    message = {"type": event, "timestamp": now.isoformat().replace("+00:00", "Z"),
               "livemode": data["livemode"], "data": data}
    rows = conn.execute(
        "INSERT INTO webhook_deliveries (id, endpoint_id, workspace_id, event_type, payload,"
        " job_id) SELECT gen_random_uuid(), e.id, e.workspace_id, %s, %s, %s"
        " FROM webhook_endpoints e WHERE e.workspace_id = %s AND e.disabled_at IS NULL"
        " AND %s = ANY(e.events) AND e.livemode = %s RETURNING id",
        (event, Jsonb(message), job_id, workspace_id, event, data["livemode"])).fetchall()
    return [r["id"] for r in rows]


EVENTS_LEFT_SECONDS = 60  # a job event not turned into messages by then is the sweeper's


def notify(pool: Pool, publisher: Publisher, event_ids: list[int] | None = None,
           older_than_seconds: float = EVENTS_LEFT_SECONDS) -> int:
    """Turn the jobs service's events (`jobs.events`) into messages once their transaction
    has committed, and send them: `job.<status>` for a job that ended — never about a subject
    suppressed by now, nor a job erased since — and `batch.completed` for each batch it
    completes. The events named, or (the sweeper, `event_ids` None) those a crash left. Each
    event once. Returns the messages written."""
    if event_ids is not None and not event_ids:
        return 0
    now = datetime.now(UTC)
    deliveries: list[uuid.UUID] = []
    with pool.connection() as conn, conn.transaction():
        taken = events.take(conn, event_ids, older_than_seconds)
        for workspace_id in sorted({e["workspace_id"] for e in taken}):
            lock_workspace(conn, workspace_id)  # batches: the last job to end sees all ended
        for event in taken:
            workspace_id, job_id = event["workspace_id"], event["job_id"]
            if job_id is not None and event["status"] is not None:
                deliveries += _job_message(conn, workspace_id, job_id, event["status"], now)
            for batch in batches.complete(conn, workspace_id, job_id):
                progress = read.batch_progress(conn, workspace_id, batch)
                if progress is not None:
                    deliveries += enqueue(conn, workspace_id, "batch.completed", progress, now)
    send_webhooks(publisher, deliveries)
    return len(deliveries)


def _job_message(conn: Conn, workspace_id: uuid.UUID, job_id: uuid.UUID, status: str,
                 now: datetime) -> list[uuid.UUID]:
    if conn.execute("SELECT 1 FROM webhook_endpoints WHERE workspace_id = %s"
                    " AND disabled_at IS NULL AND %s = ANY(events) LIMIT 1",
                    (workspace_id, f"job.{status}")).fetchone() is None:
        return []
    row = read.get_job(conn, workspace_id, job_id)
    if row is None or one(conn.execute(
            "SELECT " + SUPPRESSED + " AS s FROM enrichment_jobs j"  # noqa: S608 (constant)
            " WHERE j.id = %s", (job_id,)))["s"]:
        return []  # erased, or its subject objected: nothing more is said about it
    return enqueue(conn, workspace_id, f"job.{status}", read.job_body(row), now, job_id=job_id)


class Ended(StrEnum):
    """How one delivery attempt ended."""

    DELIVERED = "delivered"
    RETRY = "retry"  # failed; the next attempt is due in `retry_in` seconds
    FAILED = "failed"  # failed, and that was the last attempt: given up
    BUSY = "busy"  # no room (the endpoint's or the workspace's attempts in flight): waits
    NOT_DUE = "not-due"  # delivered, given up, not yet due, suppressed or endpoint disabled
    LOST = "lost"  # deleted meanwhile (endpoint, erasure, objection): nothing written


@dataclass
class Attempt:
    """What became of one delivery attempt: `retry_in` seconds until the next one (None:
    none due)."""

    outcome: Ended
    retry_in: float | None = None


# A delivery an attempt may take: waiting and due, or taken by an attempt that outran its lease.
DUE = ("(d.status = 'pending' OR (d.status = 'delivering' AND d.lease_until < now()))"
       " AND d.next_attempt_at <= now() + interval '1 second'")


# A message about a job whose subject is suppressed by now is dropped, never sent (checked
# again at every attempt: objection and erasure delete what they find, this is the fence).
SUPPRESSED_MESSAGE = (
    "DELETE FROM webhook_deliveries d WHERE d.id = %s AND EXISTS ("  # noqa: S608 (constant)
    " SELECT 1 FROM enrichment_jobs j WHERE j.id = d.job_id AND " + SUPPRESSED + ")")


def _claim(conn: Conn, delivery_id: uuid.UUID, concurrency: int) -> dict | Ended | None:
    """The delivery under a new lease token if it is due and its endpoint and workspace have
    room; Ended.BUSY (it then waits BUSY_DELAY) if not; None if it is not due — delivered,
    given up, not yet due, or its endpoint disabled: the message is dropped."""
    with conn.transaction():
        row = conn.execute(
            "SELECT d.id, d.endpoint_id, d.workspace_id FROM webhook_deliveries d"
            " JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.id = %s"
            " AND e.disabled_at IS NULL", (delivery_id,)).fetchone()
        if row is None:
            return None
        # One claim at a time per workspace: its counts below are exact.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('webhook'),"
                     " hashtext(%s::text))", (row["workspace_id"],))
        if conn.execute("SELECT 1 FROM webhook_deliveries d WHERE id = %s AND "  # noqa: S608
                        + DUE, (delivery_id,)).fetchone() is None:  # (constant)
            return None
        in_flight = one(conn.execute(  # per mode: test deliveries never hold up live ones
            "SELECT count(*) FILTER (WHERE d.endpoint_id = %s) AS endpoint,"
            " count(*) AS workspace FROM webhook_deliveries d"
            " JOIN webhook_endpoints e ON e.id = d.endpoint_id"
            " WHERE d.workspace_id = %s AND d.status = 'delivering' AND d.lease_until > now()"
            " AND e.livemode = (SELECT livemode FROM webhook_endpoints WHERE id = %s)",
            (row["endpoint_id"], row["workspace_id"], row["endpoint_id"])))
        if conn.execute(SUPPRESSED_MESSAGE, (delivery_id,)).rowcount:
            return None  # its subject objected or was erased since it was queued
        if in_flight["endpoint"] >= concurrency or in_flight["workspace"] >= WORKSPACE_IN_FLIGHT:
            conn.execute("UPDATE webhook_deliveries SET next_attempt_at = now()"
                         " + make_interval(secs => %s) WHERE id = %s",
                         (random.uniform(*BUSY_DELAY), delivery_id))
            return Ended.BUSY
        return conn.execute(
            "UPDATE webhook_deliveries d SET status = 'delivering',"  # noqa: S608 (constant)
            " attempts = d.attempts + 1, lease_until = now() + %s, lease_token = gen_random_uuid()"
            " FROM webhook_endpoints e WHERE d.id = %s AND e.id = d.endpoint_id AND " + DUE
            + " RETURNING d.*, e.url, e.secret", (LEASE, delivery_id)).fetchone()


def _post(url: str, secret: str, msg_id: str, body: bytes, allow_private: bool
          ) -> tuple[int | None, str | None]:
    """POST once, to the address the guard checked, no redirects, all within
    TIMEOUT_SECONDS: a watchdog shuts the socket when the time is up, whatever the receiver
    is doing (a slow lookup, connect, or an answer dripping in). (status, error)."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    try:
        scheme, address, port = resolve(url, allow_private, TIMEOUT_SECONDS)
    except BadWebhookUrl as exc:
        return None, str(exc)
    parts = urlsplit(url)
    timestamp = int(datetime.now(UTC).timestamp())
    headers = {"content-type": "application/json", "host": parts.netloc,
               "user-agent": "lead-enrichment-webhooks/1", "webhook-id": msg_id,
               "webhook-timestamp": str(timestamp),
               "webhook-signature": sign(secret, msg_id, timestamp, body)}
    left = max(0.1, deadline - time.monotonic())
    conn: urllib3.connection.HTTPConnection
    if scheme == "https":
        conn = urllib3.connection.HTTPSConnection(
            address, port, timeout=left, server_hostname=parts.hostname,
            assert_hostname=parts.hostname, cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
    else:
        conn = urllib3.connection.HTTPConnection(address, port, timeout=left)
    watchdog = threading.Timer(left, _shut, (conn,))
    watchdog.start()
    try:
        conn.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     body=body, headers=headers)
        resp = conn.getresponse()
        resp.read(MAX_RESPONSE_BYTES)  # the answer's body is not used; a bounded part is read
        status = resp.status
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return None, "timed out" if time.monotonic() >= deadline else type(exc).__name__
    finally:
        watchdog.cancel()
        conn.close()
    return status, None if 200 <= status < 300 else f"HTTP {status}"


def _shut(conn) -> None:
    with contextlib.suppress(OSError, AttributeError):
        conn.sock.shutdown(socket.SHUT_RDWR)


SETTLE = "UPDATE webhook_deliveries SET {} WHERE id = %(id)s AND lease_token = %(token)s"


def deliver(pool: Pool, delivery_id: uuid.UUID, *, allow_private: bool,
            concurrency: int) -> Attempt:
    """One attempt at a delivery, if it is due and there is room for it."""
    with pool.connection() as conn:
        row = _claim(conn, delivery_id, concurrency)
    if row is None:
        return Attempt(Ended.NOT_DUE)
    if isinstance(row, Ended):  # busy
        return Attempt(Ended.BUSY, retry_in=BUSY_DELAY[1])
    try:
        body = json.dumps(row["payload"], separators=(",", ":")).encode()
        status, error = _post(row["url"], row["secret"], str(row["id"]), body, allow_private)
    except Exception as exc:
        # Whatever it was (a URL stored before these checks, a bug), the attempt failed: it
        # is retried on the schedule and counts against the endpoint — a delivery left
        # `delivering` would be re-sent forever and hold one of the workspace's slots.
        log.exception("webhook %s attempt failed unexpectedly", row["id"])
        status, error = None, type(exc).__name__
    done = {"id": row["id"], "token": row["lease_token"], "status": status, "error": error}
    with pool.connection() as conn, conn.transaction():
        if error is None:
            if not conn.execute(SETTLE.format(
                    "status = 'succeeded', delivered_at = now(), last_status_code = %(status)s,"
                    " last_error = NULL, lease_until = NULL, lease_token = NULL"), done).rowcount:
                return Attempt(Ended.LOST)  # deleted meanwhile (endpoint, erasure, objection)
            conn.execute("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = %s",
                         (row["endpoint_id"],))
            return Attempt(Ended.DELIVERED)
        endpoint = conn.execute(
            "UPDATE webhook_endpoints SET last_failure_at = now(),"
            " failing_since = CASE WHEN failing_since IS NULL OR last_failure_at < now() - %s"
            "  THEN now() ELSE failing_since END"
            " WHERE id = %s RETURNING failing_since < now() - %s AS gone",
            (QUIET_DAY, row["endpoint_id"], DISABLE_AFTER)).fetchone()
        if endpoint is None:
            return Attempt(Ended.LOST)  # the endpoint was deleted, its deliveries with it
        if endpoint["gone"]:  # failing for 3 days: disabled, its queue given up
            conn.execute("UPDATE webhook_endpoints SET disabled_at = now() WHERE id = %s",
                         (row["endpoint_id"],))
            conn.execute("UPDATE webhook_deliveries SET status = 'failed', lease_until = NULL,"
                         " last_error = coalesce(last_error, 'endpoint disabled')"
                         " WHERE endpoint_id = %s AND status = 'pending'",
                         (row["endpoint_id"],))
        if endpoint["gone"] or row["attempts"] > len(RETRY_DELAYS):
            if conn.execute(SETTLE.format(
                    "status = 'failed', lease_until = NULL, lease_token = NULL,"
                    " last_status_code = %(status)s, last_error = %(error)s"), done).rowcount:
                log.warning("webhook %s to endpoint %s given up: %s", row["id"],
                            row["endpoint_id"], error)
            return Attempt(Ended.FAILED)
        delay = RETRY_DELAYS[row["attempts"] - 1] * random.uniform(0.8, 1.2)
        if not conn.execute(SETTLE.format(
                "status = 'pending', lease_until = NULL, lease_token = NULL,"
                " next_attempt_at = now() + make_interval(secs => %(delay)s),"
                " last_status_code = %(status)s, last_error = %(error)s"),
                {**done, "delay": delay}).rowcount:
            return Attempt(Ended.LOST)
        return Attempt(Ended.RETRY, retry_in=delay)


def overdue(pool: Pool, late: timedelta = timedelta(minutes=1),
            limit: int = 1000) -> list[uuid.UUID]:
    """Deliveries whose attempt is overdue (a long backoff came due, a message was lost, a
    worker died mid-attempt), for the sweeper to send again — each at most once per
    SWEEP_AGAIN, so a backlog in the queue is not multiplied (an extra message is a no-op
    claim)."""
    with pool.connection() as conn:
        return [r["id"] for r in conn.execute(
            "UPDATE webhook_deliveries SET swept_at = now() WHERE id IN ("
            " SELECT id FROM webhook_deliveries WHERE ((status = 'pending'"
            "  AND next_attempt_at < now() - %s) OR (status = 'delivering'"
            "  AND lease_until < now())) AND (swept_at IS NULL OR swept_at < now() - %s)"
            " ORDER BY next_attempt_at LIMIT %s) RETURNING id", (late, SWEEP_AGAIN, limit))]
