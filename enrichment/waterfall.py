"""One job's provider round: the template's waterfall, step by step
(docs/api.md#the-waterfall).

Each step (`provider.operation`, in the template's order) is asked only for its fields that
are still missing or below the job's `min_confidence` — never for one already filled — and
only after the steps before it have answered. A provider with no key, or whose quota is used
up (it said so; every worker skips it until the quota resets), is `skipped`. Every call is
traced (provider, operation, fields asked and filled, status, HTTP status, duration, cost).
How sure each value is comes from `confidence` (the one owner of that rule).

A provider error other than a used-up quota ends the round (ProviderError): the job ends
`dead` or `failed` as before the waterfall, and a replay runs the whole round again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from . import confidence
from .confidence import Value
from .providers import Ask, CallPolicy, ProviderError, Spend
from .services import Services
from .templates import Template

COST_PLACES = Decimal("0.000001")


def estimate_cost(svc: Services, spend: Spend) -> Decimal:
    """What a round cost: the providers' own figures, estimated where they gave none."""
    s = svc.settings
    cost = spend.reported_cost_usd
    cost += Decimal(spend.unpriced_tokens) / 1000 * s.perplexity_usd_per_1k_tokens
    cost += spend.unpriced_searches * s.perplexity_usd_per_search
    cost += spend.social_requests * s.social_links_usd_per_request
    cost += spend.hunter_credits * s.hunter_usd_per_credit
    return cost.quantize(COST_PLACES)


@dataclass
class Enriched:
    fields: dict[str, str | None]
    provenance: dict[str, dict]
    citations: list[str]
    trace: list[dict]
    completeness: float
    match: bool


def enrich(svc: Services, template: Template, lead: dict, min_confidence: float,
           policy: CallPolicy, *, max_tokens: int = 1024, max_searches: int = 1,
           providers: tuple[str, ...] | None = None, livemode: bool = True) -> Enriched:
    """Run the template's waterfall for `lead`, with the providers of the job's mode.
    `providers` limits it to some providers (the quality benchmark measures each alone).
    Raises ProviderError."""
    clients, limiter = svc.providers_for(livemode), svc.limiter_for(livemode)
    suspended = limiter.suspended(*template.providers)  # quotas used up: skipped
    values: dict[str, Value] = {}
    citations: list[str] = []
    trace: list[dict] = []

    def filled(name: str) -> bool:
        return confidence.answered(values, name, min_confidence)

    for step in template.steps:
        if providers is not None and step.provider not in providers:
            continue
        wanted = tuple(n for n in template.fields_for(step) if not filled(n))
        if not wanted:
            continue
        entry = {"provider": step.provider, "operation": step.operation,
                 "fields": list(wanted), "filled": [], "status": "skipped",
                 "http_status": None, "duration_ms": 0, "cost_usd": "0.000000"}
        trace.append(entry)
        provider = clients[step.provider]
        if not provider.configured or step.provider in suspended:
            continue
        spent_before, started = estimate_cost(svc, policy.spend), time.monotonic()
        policy.last_status, sent_before = None, policy.sent
        try:
            answer = provider.fill(Ask(
                operation=step.operation, lead=lead, fields=wanted,
                known={n: v.value for n, v in values.items()}, policy=policy,
                person_level=template.person_level, max_tokens=max_tokens,
                max_searches=max_searches))
        except ProviderError as exc:
            entry |= {"status": "error", "http_status": exc.status}
            raise
        finally:
            entry["duration_ms"] = round((time.monotonic() - started) * 1000)
            entry["cost_usd"] = str(estimate_cost(svc, policy.spend) - spent_before)
        entry["http_status"] = answer.http_status or policy.last_status
        if policy.sent == sent_before:  # nothing to ask with (the Finder without a name)
            continue
        if answer.quota_exhausted is not None:
            limiter.suspend(step.provider, answer.quota_exhausted)
            suspended.add(step.provider)
            entry["status"] = "error"
            continue
        for name, candidate in answer.found.items():
            if name not in wanted:
                continue
            values[name] = confidence.merge(values.get(name), confidence.of(candidate))
            checks = candidate.checks or ""
            about = values.get(checks)
            if about is not None and confidence.same(about.value, candidate.checked or ""):
                values[checks] = confidence.verified(about, candidate.value)
        citations += [u for u in answer.citations if u not in citations]
        entry["status"] = answer.status
        entry["filled"] = [n for n in wanted if filled(n)]
    fields, provenance, completeness, match = confidence.gate(
        values, template.fields, min_confidence)
    for p in provenance.values():  # every source is among the citations
        citations += [u for u in p["sources"] if u not in citations]
    return Enriched(fields, provenance, citations, trace, completeness, match)
