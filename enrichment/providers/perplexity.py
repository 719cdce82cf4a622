"""Perplexity client: the agent style (`POST /v1/agent`, Responses format) and the chat style
(`POST /chat/completions`). Both ask for a structured answer (`response_format`, a JSON
schema): for each field wanted, its value and the URLs of the search results that state it.
A URL the run did not read (not among its search results) is not a source."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation

from ..config import Settings
from . import Answer, Ask, Candidate, Operation
from .http import ProviderError, call_json, new_session

NAME = "perplexity"
OPERATIONS = {"research": Operation("research")}  # a web-research model: any field
MAX_FIELD_CHARS = 500
MAX_SOURCES = 10
SCHEMA_NAME = "lead_fields"
INSTRUCTIONS = (
    "You research business contacts and companies for a B2B sales team using public web "
    "sources. Answer with one JSON object and nothing else. Use exactly the keys you are "
    "given; for each, give its value and the URLs of the search results that state it; use "
    "null for anything you cannot support with a source. Keep each value short."
)


def build(settings: Settings) -> PerplexityClient:
    return PerplexityClient(settings.perplexity_api_base, settings.perplexity_api_key,
                            settings.perplexity_api_style, settings.perplexity_model,
                            settings.ca_bundle)


def build_prompt(lead: dict, fields: tuple[str, ...], person_level: bool,
                 max_searches: int) -> str:
    known = "\n".join(f"- {k}: {v}" for k, v in sorted(lead.items()) if v)
    subject = "the person" if person_level else "the company"
    return (
        f"Find out about {subject} described by:\n{known}\n\n"
        f"Use at most {max_searches} web searches. "
        f"Return a JSON object with the keys: {', '.join(fields)}."
    )


def response_format(fields: tuple[str, ...]) -> dict:
    """The JSON schema of the answer: per field, {"value": string|null, "sources": [url]}."""
    one = {"type": "object", "additionalProperties": False,
           "required": ["value", "sources"],
           "properties": {"value": {"type": ["string", "null"]},
                          "sources": {"type": "array", "items": {"type": "string"}}}}
    return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": {
        "type": "object", "additionalProperties": False, "required": list(fields),
        "properties": dict.fromkeys(fields, one)}}}


def _value(raw) -> str | None:
    if raw is None or isinstance(raw, (bool, dict, list)):
        return None
    value = str(raw).strip()
    if not value or value.lower() in ("null", "none", "unknown", "n/a"):
        return None
    return value[:MAX_FIELD_CHARS]


def parse_answer(text: str, wanted: tuple[str, ...], read: list[str]
                 ) -> dict[str, Candidate]:
    """Candidates for the wanted keys from the first JSON object in `text` (code fences
    tolerated; a bare value is a value with no source). A source counts only if the run
    read it: it is among `read`, the run's search results."""
    match = re.search(r"\{.*\}", text or "", re.DOTALL)
    try:
        data = json.loads(match.group(0)) if match else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return {}
    found = {}
    for key in wanted:
        item = data.get(key)
        raw, cited = (item.get("value"), item.get("sources")) if isinstance(item, dict) \
            else (item, None)
        value = _value(raw)
        if value is None:
            continue
        sources = [u for u in _urls(cited if isinstance(cited, list) else []) if u in read]
        found[key] = Candidate(value, NAME, sources[:MAX_SOURCES])
    return found


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

        self.configured = bool(api_key)

    def fill(self, ask: Ask) -> Answer:
        prompt = build_prompt(ask.lead, ask.fields, ask.person_level, ask.max_searches)
        if self.style == "agent":
            text, citations = self._agent(prompt, ask.fields, ask.max_tokens,
                                          ask.max_searches, ask.policy)
        else:
            text, citations = self._chat(prompt, ask.fields, ask.max_tokens, ask.policy)
        return Answer(parse_answer(text, ask.fields, citations), citations,
                      ask.policy.last_status)

    def _agent(self, prompt, fields, max_tokens, max_searches, policy
               ) -> tuple[str, list[str]]:
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
                "response_format": response_format(fields),
            },
        )
        text_parts, citations = [], []
        for item in body.get("output") or []:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "search_results":
                citations += [u for u in _urls(item.get("results")) if u not in citations]
            elif item.get("type") == "message":
                for part in item.get("content") or []:
                    if isinstance(part, dict) and part.get("type") == "output_text":
                        text_parts.append(part.get("text") or "")
        return "".join(text_parts), citations

    def _chat(self, prompt, fields, max_tokens, policy) -> tuple[str, list[str]]:
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
                "response_format": response_format(fields),
            },
        )
        try:
            text = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ProviderError(NAME, "answer has no choices[0].message.content") from exc
        return text, _urls(body.get("search_results")) or _urls(body.get("citations"))
