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
