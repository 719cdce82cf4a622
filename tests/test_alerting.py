"""Alerts reach a person: every alert rule, Prometheus's and the service's own, names a
runbook that exists in docs/operations.md."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from enrichment import alerts

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
