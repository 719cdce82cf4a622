"""Alert evaluation (beat, every minute): the service's critical metrics over a sliding
window, against the rules in `alerts.toml`. State changes (firing / resolved) are recorded in
`alert_states` / `alert_events`, logged, and sent as an `enrichment_alert` event. With
ALERTMANAGER_URL set, the firing alerts (again at every evaluation, as Alertmanager expects) and
the ones just resolved are also POSTed to Alertmanager, which routes them to a person.

Inputs: per-minute Redis counters (API requests and rejections, written by the rate-limit
script; provider attempts by outcome), the jobs and results tables (queue wait, completeness),
the last reconciliation's discrepancy count, and Redis's memory against its maxmemory.
"""

from __future__ import annotations

import logging
import operator
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import redis
import requests

from .config import DEFAULT_ALERTS_FILE
from .db import Conn, one
from .events import Events
from .ratelimit import minute_key

log = logging.getLogger(__name__)
DISCREPANCIES_KEY = "billing:discrepancies"
OPS = {">": operator.gt, "<": operator.lt}
# Alertmanager: a POST may take this long (connect, read), so that an unreachable Alertmanager
# delays the evaluation by seconds at most.
ALERTMANAGER_TIMEOUT = (2.0, 3.0)
# A firing alert is re-sent every evaluation (a minute); Alertmanager resolves it by itself if
# no evaluation re-sends it for this long (beat or the workers stopped).
FIRING_VALID_FOR = timedelta(minutes=5)


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    source: str
    op: str
    threshold: float
    target: float
    window_minutes: int
    min_samples: int
    runbook_url: str = ""  # its section of docs/operations.md
    severity: str = "warning"  # or "critical": Alertmanager's routes page on it


def load_rules(path: str | Path = DEFAULT_ALERTS_FILE) -> list[Rule]:
    """The rules of ALERTS_FILE (default: enrichment/alerts.toml); a rule's `runbook` is an
    anchor of the file's `runbook_base`, or a whole URL."""
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    base = raw.get("runbook_base", "")
    rules = []
    for name, spec in raw["rules"].items():
        spec = dict(spec)
        runbook = spec.pop("runbook", "")
        if runbook and "://" not in runbook:
            runbook = f"{base}#{runbook}"
        rules.append(Rule(name=name, runbook_url=runbook, **spec))
    return rules


def _minutes(client: redis.Redis, now: datetime, window: int) -> dict[str, int]:
    totals: dict[str, int] = {}
    with client.pipeline() as pipe:
        for m in range(window):
            pipe.hgetall(minute_key(now.timestamp() - 60 * m))
        for counters in pipe.execute():
            for key, value in counters.items():
                totals[key.decode()] = totals.get(key.decode(), 0) + int(value)
    return totals


def measure(rule: Rule, conn: Conn, client: redis.Redis,
            now: datetime) -> tuple[float | None, int]:
    """(value, samples) of the rule's source over its window."""
    if rule.source in ("rejection_rate", "provider_success_rate"):
        c = _minutes(client, now, rule.window_minutes)
        if rule.source == "rejection_rate":
            n = c.get("requests", 0)
            return (c.get("rejected", 0) / n if n else None), n
        n = c.get("provider_attempts", 0)
        return ((n - c.get("provider_fail", 0)) / n if n else None), n
    if rule.source == "queue_wait_avg":
        # Runnable → started, for the jobs that started in the window and for the runnable
        # ones still not started (so the alert fires when nothing starts at all). Time spent
        # waiting behind a workspace's own jobs is not queue wait.
        # A job's timeline is PostgreSQL's clock: so are the window and "now" here.
        cur = conn.execute(
            "SELECT avg(w) AS v, count(*) AS n FROM ("
            " SELECT extract(epoch FROM started_at - runnable_at) AS w FROM enrichment_jobs"
            " WHERE started_at >= now() - make_interval(mins => %(window)s)"
            " AND runnable_at <= started_at"  # first starts (a re-queued job waits anew)
            " UNION ALL"
            " SELECT extract(epoch FROM now() - runnable_at) FROM enrichment_jobs"
            " WHERE status = 'queued' AND runnable_at < now()"
            " AND (started_at IS NULL OR runnable_at > started_at)) waits",
            {"window": rule.window_minutes})
    elif rule.source == "completeness_avg":
        cur = conn.execute(
            "SELECT avg(r.completeness) AS v, count(*) AS n FROM enrichment_results r"
            " JOIN enrichment_jobs j ON j.id = r.job_id"  # test mode's answers are made up
            " WHERE r.created_at >= now() - make_interval(mins => %s) AND j.livemode",
            (rule.window_minutes,))
    elif rule.source == "billing_unsent":
        cur = conn.execute("SELECT count(*) AS v, 1 AS n FROM usage_reports"
                           " WHERE status IN ('failed', 'expired') OR (status = 'pending'"
                           "  AND created_at < now() - interval '2 days')")
    elif rule.source == "redis_memory":
        # used / maxmemory of REDIS_URL's server; no ceiling set, nothing to measure.
        info = client.info("memory")
        limit = int(info.get("maxmemory", 0))
        return (int(info["used_memory"]) / limit if limit else None), 1 if limit else 0
    elif rule.source == "billing_discrepancies":
        value = client.get(DISCREPANCIES_KEY)
        return (float(value) if value is not None else None), 1 if value is not None else 0
    else:
        raise ValueError(f"unknown alert source {rule.source!r}")
    row = one(cur)
    return (float(row["v"]) if row["v"] is not None else None), int(row["n"])


def evaluate(conn: Conn, client: redis.Redis, events: Events, now: datetime,
             rules: list[Rule], alertmanager_url: str | None = None) -> list[dict]:
    """Evaluate every rule; record and announce the ones whose state changed, and send the
    firing and just-resolved ones to Alertmanager when `alertmanager_url` is set."""
    changes = []
    notices = []  # for Alertmanager: every firing rule, and the ones resolved now
    for rule in rules:
        value, samples = measure(rule, conn, client, now)
        firing = (value is not None and samples >= rule.min_samples
                  and OPS[rule.op](value, rule.threshold))
        state = "firing" if firing else "ok"
        with conn.transaction():
            before = conn.execute("SELECT state, since FROM alert_states WHERE rule = %s"
                                  " FOR UPDATE", (rule.name,)).fetchone()
            since = one(conn.execute(
                "INSERT INTO alert_states (rule, state, value, since, evaluated_at)"
                " VALUES (%(r)s, %(s)s, %(v)s, %(t)s, %(t)s) ON CONFLICT (rule) DO UPDATE SET"
                " value = excluded.value, evaluated_at = excluded.evaluated_at,"
                " since = CASE WHEN alert_states.state = excluded.state THEN alert_states.since"
                "   ELSE excluded.since END, state = excluded.state RETURNING since",
                {"r": rule.name, "s": state, "v": value, "t": now}))["since"]
            changed = (before["state"] if before else "ok") != state
            if changed:
                conn.execute("INSERT INTO alert_events (rule, state, value, at)"
                             " VALUES (%s, %s, %s, %s)", (rule.name, state, value, now))
        if changed:
            change = {"rule": rule.name, "state": "firing" if firing else "resolved",
                      "value": value, "threshold": rule.threshold, "op": rule.op}
            (log.warning if firing else log.info)("alert %s %s: %s (%s %s %s)", rule.name,
                                                  change["state"], rule.description, value,
                                                  rule.op, rule.threshold)
            events.capture("enrichment_alert", "system", change)
            changes.append(change)
        if firing:
            notices.append(alertmanager_alert(rule, value, since, now + FIRING_VALID_FOR))
        elif changed and before is not None:
            notices.append(alertmanager_alert(rule, value, before["since"], now))
    if alertmanager_url and notices:
        send_to_alertmanager(alertmanager_url, notices)
    return changes


def alertmanager_alert(rule: Rule, value: float | None, starts: datetime,
                       ends: datetime) -> dict:
    """One alert as Alertmanager's API takes it (POST /api/v2/alerts): resolved once `ends`
    is past."""
    return {
        "labels": {"alertname": rule.name, "severity": rule.severity, "service": "enrichment"},
        "annotations": {
            "summary": rule.description,
            "description": f"{rule.description}: {value} {rule.op} {rule.threshold} over "
                           f"{rule.window_minutes} min (target {rule.target})",
            "runbook_url": rule.runbook_url,
        },
        "startsAt": starts.isoformat(),
        "endsAt": ends.isoformat(),
    }


def send_to_alertmanager(url: str, notices: list[dict]) -> bool:
    """POST the alerts to Alertmanager; a failure is logged, never raised: the evaluation
    and its record stand, and the next evaluation sends the firing alerts again."""
    try:
        response = requests.post(f"{url.rstrip('/')}/api/v2/alerts", json=notices,
                                 timeout=ALERTMANAGER_TIMEOUT)
        response.raise_for_status()
    except requests.RequestException as exc:
        log.warning("alerts not sent to Alertmanager at %s: %s", url, exc)
        return False
    return True


def current(conn: Conn) -> list[dict]:
    return conn.execute("SELECT rule, state, value, since, evaluated_at FROM alert_states"
                        " ORDER BY rule").fetchall()
