"""Alerts reach a person: every alert rule, Prometheus's and the service's own, names a
runbook that exists in docs/operations.md; Prometheus sends its alerts to compose's
Alertmanager, which routes to a webhook; the service's own alerts reach Alertmanager too (a
local fake one proves it)."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from flask import Flask, request

from enrichment import alerts
from enrichment.config import Settings
from enrichment.ratelimit import minute_key
from simulators.serving import ThreadedServer

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "docs" / "operations.md"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces → `-`."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of every heading (a repeated one gets -1, -2, … as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6} (.+)", line)
        if m:
            slug = github_anchor(m[1])
            out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return out


def runbook_anchor(url: str) -> str:
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.path.endswith("/docs/operations.md"), url
    assert parts.fragment, f"{url}: no anchor"
    return parts.fragment


def prometheus_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_github_anchor():
    assert github_anchor("Queue not drained") == "queue-not-drained"
    assert github_anchor("TLS and the reverse proxy") == "tls-and-the-reverse-proxy"
    assert github_anchor("Read by `enrichment/config.py`") == "read-by-enrichmentconfigpy"
    assert github_anchor("Stripe: unsent reports and expired usage") == \
        "stripe-unsent-reports-and-expired-usage"


def test_every_prometheus_rule_has_a_runbook_section():
    headings = anchors(OPERATIONS.read_text())
    assert "queue-not-drained" in headings  # the scan works
    rules = prometheus_rules()
    assert rules
    for rule in rules:
        url = rule["annotations"].get("runbook_url")
        assert url, f"{rule['alert']}: no runbook_url"
        assert runbook_anchor(url) in headings, f"{rule['alert']}: {url}"


def test_every_in_service_rule_has_a_runbook_section():
    headings = anchors(OPERATIONS.read_text())
    rules = alerts.load_rules()
    assert rules
    for rule in rules:
        assert rule.runbook_url, f"{rule.name}: no runbook"
        assert runbook_anchor(rule.runbook_url) in headings, f"{rule.name}: {rule.runbook_url}"
    # The same base as the Prometheus rules: one place to point at your repository.
    bases = {r.runbook_url.split("#")[0] for r in rules}
    bases |= {r["annotations"]["runbook_url"].split("#")[0] for r in prometheus_rules()}
    assert len(bases) == 1


# --- The chain: Prometheus → Alertmanager → a receiver, in docker-compose.yml --------------

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ALERTMANAGER_DIR = ROOT / "deploy" / "alertmanager"


def test_prometheus_sends_its_alerts_to_alertmanager():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = [t for am in config["alerting"]["alertmanagers"]
               for sc in am["static_configs"] for t in sc["targets"]]
    assert targets == ["alertmanager:9093"]
    assert "alertmanager" in SERVICES


def test_alertmanager_routes_to_the_webhook_by_default():
    am = SERVICES["alertmanager"]
    assert am["image"].startswith("prom/alertmanager:")
    assert "./deploy/alertmanager:/etc/alertmanager:ro" in am["volumes"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in am["command"]
    assert all(p.startswith("127.0.0.1:") for p in am["ports"])
    assert am["environment"]["ALERT_WEBHOOK_URL"] == "${ALERT_WEBHOOK_URL:-}"

    config = yaml.safe_load((ALERTMANAGER_DIR / "alertmanager.yml").read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    default = receivers[config["route"]["receiver"]]
    (webhook,) = default["webhook_configs"]
    assert webhook["send_resolved"] is True
    # Alertmanager expands no variables: the entrypoint writes the URL to the file it reads,
    # on a tmpfs.
    url_file = webhook["url_file"]
    assert f"> {url_file} " in " ".join(am["entrypoint"])
    assert str(Path(url_file).parent) in am["tmpfs"]
    assert "$${ALERT_WEBHOOK_URL" in " ".join(am["entrypoint"])
    # Every route names a receiver that exists; the documented examples are comments.
    for route in config["route"].get("routes") or []:
        assert route["receiver"] in receivers
    text = (ALERTMANAGER_DIR / "alertmanager.yml").read_text()
    for example in ("email_configs", "slack_configs", "pagerduty_configs"):
        assert f"#   {example}:" in text


def test_redis_has_a_memory_ceiling_and_never_evicts():
    command = SERVICES["redis"]["command"]
    assert "--maxmemory ${REDIS_MAXMEMORY:-1gb}" in command
    assert "--maxmemory-policy noeviction" in command


# --- In-service alerts reach Alertmanager --------------------------------------------------


class FakeAlertmanager(ThreadedServer):
    """A local Alertmanager: records the alert lists POSTed to /api/v2/alerts."""

    def __init__(self, status: int = 200):
        self.received: list[list[dict]] = []
        app = Flask(__name__)

        @app.post("/api/v2/alerts")
        def receive():
            self.received.append(request.get_json(force=True))
            return "", status

        super().__init__(app)

    def alerts(self, name: str) -> list[dict]:
        return [a for batch in self.received for a in batch
                if a["labels"]["alertname"] == name]


@pytest.fixture
def fake_alertmanager():
    with FakeAlertmanager() as fake:
        yield fake


@pytest.fixture
def beat_task(db, monkeypatch):
    """Beat's alert evaluation task, run in this process over `db` with these settings."""
    from workers import tasks

    def run(**settings):
        monkeypatch.setattr(tasks, "_services", replace(db, settings=replace(db.settings,
                                                                              **settings)))
        return tasks.evaluate_alerts()

    return run


def burst(db, requests: int, rejected: int):
    """API traffic counters for the current minute (what the rate-limit script writes)."""
    db.redis.hset(minute_key(time.time()), mapping={"requests": requests, "rejected": rejected})


def test_an_alert_fired_reaches_alertmanager_with_its_runbook(db, fake_alertmanager, beat_task):
    burst(db, requests=100, rejected=10)
    changes = beat_task(alertmanager_url=fake_alertmanager.url)
    assert [c["rule"] for c in changes] == ["api_rejection_rate"]

    (alert,) = fake_alertmanager.alerts("api_rejection_rate")
    assert alert["labels"] == {"alertname": "api_rejection_rate", "severity": "warning",
                               "service": "enrichment"}
    runbook = alert["annotations"]["runbook_url"]
    assert runbook.endswith("/docs/operations.md#api-rejection-rate")
    assert runbook_anchor(runbook) in anchors(OPERATIONS.read_text())
    assert alert["annotations"]["summary"] == "API rejection rate (429s / requests)"
    assert "0.1 > 0.05" in alert["annotations"]["description"]
    starts, ends = (datetime.fromisoformat(alert[k]) for k in ("startsAt", "endsAt"))
    assert starts.tzinfo and ends - starts == alerts.FIRING_VALID_FOR  # firing: valid ahead
    # Only firing rules are sent: the others are fine.
    assert {a["labels"]["alertname"] for b in fake_alertmanager.received for a in b} == {
        "api_rejection_rate"}

    # Still firing: sent again (Alertmanager resolves an alert nobody re-sends), same start.
    assert beat_task(alertmanager_url=fake_alertmanager.url) == []
    again = fake_alertmanager.alerts("api_rejection_rate")[-1]
    assert len(fake_alertmanager.alerts("api_rejection_rate")) == 2
    assert again["startsAt"] == alert["startsAt"]

    # Resolved: sent once more with endsAt now, then no more.
    db.redis.flushdb()
    assert [c["state"] for c in beat_task(alertmanager_url=fake_alertmanager.url)] == [
        "resolved"]
    resolved = fake_alertmanager.alerts("api_rejection_rate")[-1]
    # ended at that evaluation: before the still-firing message's validity ran out
    assert starts < datetime.fromisoformat(resolved["endsAt"]) < datetime.fromisoformat(
        again["endsAt"])
    assert resolved["startsAt"] == alert["startsAt"]
    beat_task(alertmanager_url=fake_alertmanager.url)
    assert len(fake_alertmanager.alerts("api_rejection_rate")) == 3


def test_without_alertmanager_url_nothing_is_sent(db, fake_alertmanager, beat_task,
                                                  captured_events):
    assert Settings.from_env({}).alertmanager_url is None
    assert Settings.from_env({"ALERTMANAGER_URL": "http://am:9093/"}).alertmanager_url == \
        "http://am:9093"
    burst(db, requests=100, rejected=10)
    assert [c["state"] for c in beat_task(alertmanager_url=None)] == ["firing"]
    assert fake_alertmanager.received == []
    assert [e[0] for e in captured_events] == ["enrichment_alert"]  # today's behaviour


def test_an_unreachable_or_failing_alertmanager_never_fails_the_evaluation(
        db, beat_task, captured_events, caplog):
    burst(db, requests=100, rejected=10)
    with FakeAlertmanager(status=500) as failing:
        assert [c["state"] for c in beat_task(alertmanager_url=failing.url)] == ["firing"]
        assert len(failing.received) == 1
    # Nothing listens there any more: refused at once.
    db.redis.flushdb()
    assert [c["state"] for c in beat_task(alertmanager_url=failing.url)] == ["resolved"]
    with db.db.connection() as conn:
        history = conn.execute("SELECT state FROM alert_events ORDER BY id").fetchall()
    assert [h["state"] for h in history] == ["firing", "ok"]  # recorded all the same
    assert [e[2]["state"] for e in captured_events] == ["firing", "resolved"]
    assert sum("not sent to Alertmanager" in r.getMessage() for r in caplog.records) == 2


# --- What the new rules read ---------------------------------------------------------------


def test_api_responses_are_counted_by_route_and_status_class(app, client):
    from tests.test_observability import sample, scrape

    def boom():
        raise RuntimeError("a bug")

    app.add_url_rule("/_test/boom", "boom", boom)
    before = scrape(client)
    assert client.get("/_test/boom").status_code == 500
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/v1/jobs/someone@example.com").status_code in (401, 404)
    after = scrape(client)
    for labels in ({"route": "boom", "status": "5xx", "method": "GET"},
                   {"route": "health.healthz", "status": "2xx"}):
        assert sample(after, "enrichment_http_requests_total", **labels) == \
            sample(before, "enrichment_http_requests_total", **labels) + 1, labels
    assert "example.com" not in after  # the route's name, never its path
    durations = "enrichment_http_request_duration_seconds_count"
    assert sample(after, durations, route="health.healthz") == \
        sample(before, durations, route="health.healthz") + 1


def test_beat_silence_and_disabled_endpoints_are_gauges(db, client, beat_task):
    from tests.test_observability import sample, scrape

    assert "enrichment_alert_evaluation_age_seconds" not in scrape(client)  # never ran
    beat_task()
    text = scrape(client)
    assert 0 <= sample(text, "enrichment_alert_evaluation_age_seconds") < 60
    assert sample(text, "enrichment_webhook_endpoints_disabled") == 0


def test_redis_memory_alert(db, beat_task, monkeypatch, fake_alertmanager):
    monkeypatch.setattr(db.redis, "info", lambda *a, **k: {"used_memory": 10, "maxmemory": 0})
    assert beat_task() == []  # no ceiling: nothing to measure
    monkeypatch.setattr(db.redis, "info",
                        lambda *a, **k: {"used_memory": 900, "maxmemory": 1000})
    (change,) = beat_task(alertmanager_url=fake_alertmanager.url)
    assert change["rule"] == "redis_memory" and change["value"] == 0.9
    (alert,) = fake_alertmanager.alerts("redis_memory")
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["runbook_url"].endswith("#redis-memory")
