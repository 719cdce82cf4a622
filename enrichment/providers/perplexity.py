"""Perplexity client: the agent style (`POST /v1/agent`, Responses format) and the chat style
(`POST /chat/completions`). Both ask for one JSON object holding the template's fields."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation

from ..templates import Template
from . import ResearchResult
from .http import CallPolicy, ProviderError, call_json, new_session

NAME = "perplexity"
MAX_FIELD_CHARS = 500
INSTRUCTIONS = (
    "You research business contacts and companies for a B2B sales team using public web "
    "sources. Answer with one JSON object and nothing else. Use exactly the keys you are "
    "given; use null for anything you cannot support with a source. Keep each value short."
)


def build_prompt(lead: dict, template: Template, max_searches: int) -> str:
    known = "\n".join(f"- {k}: {v}" for k, v in sorted(lead.items()) if v)
    subject = "the person" if template.person_level else "the company"
    keys = ", ".join(template.research_fields)
    return (
        f"Find out about {subject} described by:\n{known}\n\n"
        f"Use at most {max_searches} web searches. "
        f"Return a JSON object with the keys: {keys}."
    )


def parse_fields(text: str, wanted: tuple[str, ...]) -> dict[str, str | None]:
    """The wanted keys from the first JSON object in `text` (code fences tolerated)."""
    fields: dict[str, str | None] = dict.fromkeys(wanted)
    match = re.search(r"\{.*\}", text or "", re.DOTALL)
    if not match:
        return fields
    try:
        data = json.loads(match.group(0))
    except ValueError:
        return fields
    if not isinstance(data, dict):
        return fields
    for key in wanted:
        value = data.get(key)
        if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
            continue
        value = str(value).strip()
        if value and value.lower() not in ("null", "none", "unknown", "n/a"):
            fields[key] = value[:MAX_FIELD_CHARS]
    return fields


def _cost(usage: dict) -> Decimal | None:
    cost = usage.get("cost")
    total = cost.get("total_cost") if isinstance(cost, dict) else None
    if total is None:
        return None
    try:
        return Decimal(str(total))
    except InvalidOperation:
        return None


def _urls(items) -> list[str]:
    urls = []
    for item in items or []:
        url = item.get("url") if isinstance(item, dict) else item
        if isinstance(url, str) and url.startswith(("http://", "https://")) and url not in urls:
            urls.append(url)
    return urls


class PerplexityClient:
    name = NAME

    def __init__(
        self, base: str, api_key: str | None, style: str = "agent", model: str | None = None,
        ca_bundle: str | None = None,
    ):
        self.base = base.rstrip("/")
        self.style = style
        self.model = model or ("perplexity/sonar" if style == "agent" else "sonar")
        self.session = new_session(self.base, ca_bundle)
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def research(
        self, lead: dict, template: Template, *, max_tokens: int, max_searches: int,
        policy: CallPolicy,
    ) -> ResearchResult:
        prompt = build_prompt(lead, template, max_searches)
        if self.style == "agent":
            return self._agent(prompt, template, max_tokens, max_searches, policy)
        return self._chat(prompt, template, max_tokens, policy)

    def _agent(self, prompt, template, max_tokens, max_searches, policy) -> ResearchResult:
        def check(body: dict) -> None:
            # Every answer is metered, a failed run's tokens included: they were spent.
            usage = body.get("usage") or {}
            steps = [i for i in body.get("output") or []
                     if isinstance(i, dict) and i.get("type") == "search_results"]
            policy.spend.research(int(usage.get("total_tokens") or 0), len(steps),
                                  _cost(usage))
            # A failed run can come back as HTTP 200: the status field decides.
            status = body.get("status")
            if status != "completed":
                error = body.get("error") or {}
                message = error.get("message") if isinstance(error, dict) else None
                raise ProviderError(NAME, f"run {status}: {message or 'no detail'}",
                                    retryable=True)

        body = call_json(
            self.session, NAME, "POST", f"{self.base}/v1/agent", policy, check=check,
            json={
                "model": self.model,
                "instructions": INSTRUCTIONS,
                "input": prompt,
                "max_output_tokens": max_tokens,
                "max_steps": max(1, max_searches),
                "tools": [{"type": "web_search"}],
            },
        )
        text_parts, citations, searches = [], [], 0
        for item in body.get("output") or []:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "search_results":
                searches += 1
                citations += [u for u in _urls(item.get("results")) if u not in citations]
            elif item.get("type") == "message":
                for part in item.get("content") or []:
                    if isinstance(part, dict) and part.get("type") == "output_text":
                        text_parts.append(part.get("text") or "")
        usage = body.get("usage") or {}
        return ResearchResult(
            fields=parse_fields("".join(text_parts), template.research_fields),
            citations=citations,
            tokens=int(usage.get("total_tokens") or 0),
            searches=searches,
            cost_usd=_cost(usage),
        )

    def _chat(self, prompt, template, max_tokens, policy) -> ResearchResult:
        def check(body: dict) -> None:
            usage = body.get("usage") or {}
            policy.spend.research(int(usage.get("total_tokens") or 0),
                                  int(usage.get("num_search_queries") or 0), _cost(usage))

        body = call_json(
            self.session, NAME, "POST", f"{self.base}/chat/completions", policy, check=check,
            json={
                "model": self.model,
                "messages": [
                    {"role": "system", "content": INSTRUCTIONS},
                    {"role": "user", "content": prompt},
                ],
                "max_tokens": max_tokens,
            },
        )
        try:
            text = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ProviderError(NAME, "answer has no choices[0].message.content") from exc
        usage = body.get("usage") or {}
        citations = _urls(body.get("search_results")) or _urls(body.get("citations"))
        return ResearchResult(
            fields=parse_fields(text, template.research_fields),
            citations=citations,
            tokens=int(usage.get("total_tokens") or 0),
            searches=int(usage.get("num_search_queries") or 0),
            cost_usd=_cost(usage),
        )
