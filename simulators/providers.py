"""Provider simulator: Perplexity (agent and chat styles) and Social Links Search.

Deterministic, plausible answers (the same lead gives the same content), with configurable
latency, error rate, forced outage and a per-provider requests-per-second limit that answers
429 with Retry-After when exceeded — like the real plans.

Perplexity validates `response_format` as the real API does (a JSON schema with a name, else
400 invalid_request_error); with one, the answer is structured — per property of the schema
`{"value": str|null, "sources": [url]}` — and every cited URL is among the run's search
results (a model cites only what it read). A lead of the labelled world (`world.py`: the
prompt's `- name:`/`- domain:`/`- company:`/`- email:` lines, or a Social Links query naming
the person) is answered from its noise model, so a benchmark can score the answers; any
other lead gets generated values as before.

Magic leads (test mode, `simulators/sandbox.py`): a lead whose e-mail or domain is one of
MAGIC_DOMAINS — or whose company is named after one ("Match Test") — behaves the same on
every template, in this fake and the Hunter fake alike, so a test-mode integrator can see
each outcome on purpose: `match.test` every field found and sure (≥ 0.9 under
`enrichment/confidence.py`), `nomatch.test` nothing, `lowconfidence.test` every value unsure
(< 0.5), `ratelimited.test` two rate-limit refusals (Retry-After: 1) then a match — every
third request about the lead per endpoint succeeds —, `error.test` 500 always, `slow.test`
a match after 20 s. Perplexity reads the prompt's `- email:`/`- domain:`/`- company:` lines,
Social Links any e-mail, domain or "<Label> Test" company in its query.

    python -m simulators.providers --port 8010 --perplexity-rps 2 --social-rps 10

Control endpoints (test use): GET/POST /_sim/config, GET /_sim/stats, POST /_sim/reset.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import random
import re
import threading
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from . import world
from .serving import ThreadedServer

PERPLEXITY = "perplexity"
SOCIAL = "social_links"

TITLES = ["VP of Sales", "Head of Growth", "Chief Revenue Officer", "Sales Director",
          "Account Executive", "Founder & CEO", "Marketing Manager"]
SENIORITY = ["executive", "director", "manager", "senior", "entry"]
CITIES = ["Austin, TX", "Berlin, Germany", "London, UK", "San Francisco, CA", "Toronto, Canada"]
INDUSTRIES = ["Software", "Logistics", "Fintech", "Healthcare", "Manufacturing", "Retail"]
SIZES = ["11-50", "51-200", "201-500", "501-1000", "1001-5000"]
SOURCES = ["https://www.crunchbase.com/organization/{slug}", "https://www.bloomberg.com/profile/company/{slug}",
           "https://news.example-press.com/{slug}-announces", "https://www.{slug}.com/about",
           "https://www.linkedin.com/company/{slug}"]
SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

MAGIC_DOMAINS = ("match.test", "nomatch.test", "lowconfidence.test", "ratelimited.test",
                 "error.test", "slow.test")
# A company named after a magic domain ("Match Test", "No Match Test"), for a query that
# carries the company's name but not its domain. Leftmost match wins: "no match test".
MAGIC_COMPANY = re.compile(r"\b(no ?match|match|low ?confidence|rate ?limited|error|slow)"
                           r"[ -]test\b", re.IGNORECASE)
MAGIC_SLOW_SECONDS = 20.0
MAGIC_SLOW_STEP = 0.5  # sleeps this long at most between checks for a caller that gave up
MAGIC_REFUSALS = 2  # ratelimited.test: refusals before each answer
CANCEL_KEY = "sandbox.cancel"  # WSGI environ: a threading.Event set when the caller gave up


@dataclass
class SimConfig:
    latency_ms: float = 0.0
    error_rate: float = 0.0  # share of requests answered 503
    outage_status: int = 0  # when set, every provider request gets this status
    outage_retry_after: str = ""  # the Retry-After header sent with it, if any
    agent_failed_rate: float = 0.0  # share of agent runs answered 200 with status "failed"
    null_rate: float = 0.1  # share of fields the "model" could not find
    found_nothing: bool = False  # no field, no source, no profile: a lead with no match
    perplexity_rps: float = 0.0  # 0 = unlimited
    social_rps: float = 0.0


class SlidingWindow:
    """At most `rps` requests in any 1-second window (how the providers enforce plans)."""

    def __init__(self):
        self.hits: collections.deque[float] = collections.deque()
        self.lock = threading.Lock()

    def admit(self, rps: float) -> float | None:
        """None if admitted, else seconds until a slot frees."""
        if rps <= 0:
            return None
        cap = max(1, math.floor(rps))
        now = time.monotonic()
        with self.lock:
            while self.hits and now - self.hits[0] >= 1.0:
                self.hits.popleft()
            if len(self.hits) >= cap:
                return 1.0 - (now - self.hits[0])
            self.hits.append(now)
            return None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self._clear()

    def _clear(self):
        self.counts: collections.Counter[str] = collections.Counter()
        # What the last requests carried (JSON body or query string): tests check that no
        # personal data reached a provider where the rules forbid it.
        self.received: dict[str, collections.deque[str]] = {
            PERPLEXITY: collections.deque(maxlen=50), SOCIAL: collections.deque(maxlen=50)}
        self.accepted: dict[str, list[float]] = {PERPLEXITY: [], SOCIAL: []}
        self.last_key: dict[str, str | None] = {PERPLEXITY: None, SOCIAL: None}

    def reset(self):
        with self.lock:
            self._clear()

    def add(self, provider: str, outcome: str, key: str | None):
        with self.lock:
            self.counts[f"{provider}.{outcome}"] += 1
            self.last_key[provider] = key
            if outcome == "ok":
                self.accepted[provider].append(time.time())

    def snapshot(self) -> dict:
        with self.lock:
            return {"counts": dict(self.counts), "last_key": dict(self.last_key),
                    "accepted": {k: list(v) for k, v in self.accepted.items()},
                    "received": {k: list(v) for k, v in self.received.items()}}


def magic_domain(value: str | None) -> str | None:
    """The magic domain an e-mail address, domain or URL is at (exactly: `www.` aside), else
    None."""
    text = (value or "").strip().lower().rpartition("@")[2]
    host = (urlsplit(text if "//" in text else f"//{text}").hostname or "")
    host = host.removeprefix("www.")
    return host if host in MAGIC_DOMAINS else None


def lead_magic(lead: dict) -> str | None:
    """A lead's magic domain: its e-mail's, else its domain's, else its company's name."""
    for value in (lead.get("email"), lead.get("domain")):
        if domain := magic_domain(value):
            return domain
    return _company_magic(lead.get("company") or "")


def text_magic(text: str) -> str | None:
    """The magic domain a free-text query names: a word that is a magic address, domain or
    URL, else a company named after one."""
    for word in text.split():
        if domain := magic_domain(word.strip("()<>,;\"'")):
            return domain
    return _company_magic(text)


def _company_magic(text: str) -> str | None:
    match = MAGIC_COMPANY.search(text)
    if match is None:
        return None
    return re.sub(r"\W", "", match.group(1).lower()) + ".test"


def magic_content(domain: str | None) -> str | None:
    """What a magic lead's answer holds once it is answered: `match`, `nomatch` or
    `lowconfidence` (rate-limited and slow leads end as matches); None: not magic."""
    if domain is None or domain == "error.test":
        return None
    label = domain.removesuffix(".test")
    return label if label in ("nomatch", "lowconfidence") else "match"


def magic_address(first: str | None, last: str | None, domain: str) -> str:
    """The work address a magic lead's person has (every fake finds the same one)."""
    first, last = (re.sub(r"[^a-z]", "", (w or "").lower()) for w in (first, last))
    local = ".".join(w for w in (first, last) if w) or "contact"
    return f"{local}@{domain}"


class Magic:
    """The refusals a fake gives a magic lead before (or instead of) answering: 500 for
    `error.test`; for `ratelimited.test` `refused_status` with Retry-After: 1 on the first
    MAGIC_REFUSALS of every MAGIC_REFUSALS + 1 requests about the lead at an endpoint
    (counted here, thread-safe); for `slow.test` a 20-s wait first, in short steps that end
    early when the in-process caller gave up (`CANCEL_KEY` in the WSGI environ)."""

    def __init__(self, slow_seconds: float = MAGIC_SLOW_SECONDS):
        self.lock = threading.Lock()
        self.asked: collections.Counter[tuple[str, str]] = collections.Counter()
        self.slow_seconds = slow_seconds

    def refusal(self, domain: str | None, endpoint: str, lead_key: str, environ: dict,
                refused_status: int = 429) -> tuple[int, dict[str, str]] | None:
        """(status, headers) to refuse with, or None to answer."""
        if domain == "error.test":
            return 500, {}
        if domain == "ratelimited.test":
            with self.lock:
                seen = self.asked[(endpoint, lead_key)]
                self.asked[(endpoint, lead_key)] += 1
            if seen % (MAGIC_REFUSALS + 1) < MAGIC_REFUSALS:
                return refused_status, {"Retry-After": "1"}
        if domain == "slow.test" and not self._wait(environ.get(CANCEL_KEY)):
            return 504, {}  # nobody is waiting for it any more
        return None

    def _wait(self, cancel: threading.Event | None) -> bool:
        """Sleep slow_seconds in short steps; False when the caller gave up first."""
        end = time.monotonic() + self.slow_seconds
        while (left := end - time.monotonic()) > 0:
            step = min(MAGIC_SLOW_STEP, left)
            if cancel is not None:
                if cancel.wait(step):
                    return False
            else:
                time.sleep(step)
        return True

    def reset(self):
        with self.lock:
            self.asked.clear()


def _rng(*parts: str) -> random.Random:
    seed = hashlib.sha256("|".join(parts).encode()).digest()
    return random.Random(int.from_bytes(seed[:8], "big"))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "acme"


def _company(prompt: str) -> str:
    company = re.search(r"- company: (.+)", prompt)
    domain = re.search(r"- (?:domain|email): (?:.*@)?([^.\s]+)\.", prompt)
    if company:
        return company.group(1).strip()
    return domain.group(1).title() if domain else "Acme"


def _prompt_keys(prompt: str) -> list[str]:
    keys = re.search(r"keys:\s*([a-z_, ]+)\.", prompt)
    return [k.strip() for k in keys.group(1).split(",")] if keys else []


def _prompt_lead(prompt: str) -> dict:
    """The lead the prompt describes: its `- key: value` lines."""
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"^- (\w+): (.+)$", prompt, re.MULTILINE)}


def _answer(prompt: str, wanted: list[str], rng: random.Random, null_rate: float) -> dict:
    name = _company(prompt)
    person = _slug(_prompt_lead(prompt).get("name") or "") or "contact"
    values = {
        "work_email": f"{person.replace('-', '.')}@{_slug(name).replace('-', '')}.com",
        "linkedin_url": f"https://www.linkedin.com/in/{person}",
        "title": rng.choice(TITLES), "company": name, "location": rng.choice(CITIES),
        "seniority": rng.choice(SENIORITY),
        "summary": f"Works at {name} on revenue and go-to-market teams.",
        "description": f"{name} builds software for {rng.choice(INDUSTRIES).lower()} teams.",
        "industry": rng.choice(INDUSTRIES), "headquarters": rng.choice(CITIES),
        "employee_range": rng.choice(SIZES), "founded_year": str(rng.randint(1990, 2022)),
        "website": f"https://www.{_slug(name)}.com",
    }
    return {k: (None if rng.random() < null_rate else values.get(k, f"{k} of {name}"))
            for k in wanted}


def _with_sources(values: dict, urls: list[str], rng: random.Random) -> dict:
    """A generated structured answer: each value backed by 1-2 of the run's results."""
    return {k: {"value": v, "sources": rng.sample(urls, k=min(len(urls), rng.randint(1, 2)))
                if v is not None else []} for k, v in values.items()}


def _response_format(body: dict) -> tuple[list[str] | None, str | None]:
    """(the fields a structured answer must hold — None for a flat one —, an error)."""
    spec = body.get("response_format")
    if spec is None:
        return None, None
    if not isinstance(spec, dict) or spec.get("type") != "json_schema":
        return None, "response_format.type must be 'json_schema'"
    schema = spec.get("json_schema")
    if not isinstance(schema, dict):
        return None, "response_format.json_schema must be an object"
    name = schema.get("name")
    if not isinstance(name, str) or not SCHEMA_NAME.fullmatch(name):
        return None, "response_format.json_schema.name must be 1-64 of [A-Za-z0-9_-]"
    if not isinstance(schema.get("schema"), dict):
        return None, "response_format.json_schema.schema must be an object"
    properties = schema["schema"].get("properties")
    return (list(properties) if isinstance(properties, dict) else []), None


def _generated(prompt: str, structured: list[str] | None, rng: random.Random,
               cfg: SimConfig, urls: list[str]) -> str:
    """A lead outside the world: generated values, flat or with 1-2 of the results each."""
    wanted = _prompt_keys(prompt) if structured is None else structured
    values = _answer(prompt, wanted, rng, 1.0 if cfg.found_nothing else cfg.null_rate)
    if structured is None:
        return json.dumps(values)
    return json.dumps(_with_sources(values, list(dict.fromkeys(urls)), rng))


def _invalid(message: str):
    return jsonify({"error": {"message": message, "type": "invalid_request_error",
                              "code": 400}}), 400


def _world_answer(prompt: str, structured: list[str] | None, cfg: SimConfig):
    """(text, cited URLs) for a lead of the world, else None."""
    if cfg.found_nothing:
        return None
    wanted = _prompt_keys(prompt) if structured is None else structured
    answer = world.perplexity_answer(_prompt_lead(prompt), wanted)
    if answer is None:
        return None
    fields, urls = answer
    flat = {k: v["value"] for k, v in fields.items()}
    return json.dumps(fields if structured is not None else flat), urls


def _sources(rng: random.Random, slug: str, n: int) -> list[dict]:
    picks = rng.sample(SOURCES, k=min(n, len(SOURCES)))
    return _results([p.format(slug=slug) for p in picks])


def _results(urls: list[str]) -> list[dict]:
    return [{"title": u.split("/")[2], "url": u, "date": "2026-10-01"} for u in urls]


def _magic_pages(slug: str, field_name: str) -> list[str]:
    """Three pages on distinct sites stating a magic match's field (0.90 under the rule)."""
    return [f"https://www.crunchbase.com/organization/{slug}",
            f"https://www.bloomberg.com/profile/company/{slug}",
            f"https://news.example-press.com/{slug}-{field_name.replace('_', '-')}"]


def _magic_values(prompt: str, wanted: list[str], domain: str) -> dict:
    """Every wanted field of a magic lead, the same whichever fields are asked with it."""
    lead = _prompt_lead(prompt)
    values = _answer(prompt, wanted, _rng("magic", json.dumps(lead, sort_keys=True)), 0.0)
    words = (lead.get("name") or "").split()
    own = {"work_email": magic_address(words[0] if words else None,
                                       words[-1] if len(words) > 1 else None, domain),
           "website": f"https://www.{domain}"}
    return {k: own.get(k, v) for k, v in values.items()}


def _magic_research(prompt: str, structured: list[str] | None, domain: str, kind: str
                    ) -> tuple[str, list[str]]:
    """(text, search-result URLs) of a magic lead's research: `match` — each value citing
    three distinct sites, all among the results; `lowconfidence` — values citing nothing;
    `nomatch` — every field null, no results."""
    wanted = _prompt_keys(prompt) if structured is None else structured
    slug = _slug(_company(prompt))
    if kind == "nomatch":
        fields = {k: {"value": None, "sources": []} for k in wanted}
    else:
        cite = kind == "match"
        fields = {k: {"value": v, "sources": _magic_pages(slug, k) if cite else []}
                  for k, v in _magic_values(prompt, wanted, domain).items()}
    urls = [u for f in fields.values() for u in f["sources"]]
    if kind == "lowconfidence":
        urls = [f"https://www.zoominfo.com/c/{slug}"]  # read, but stating nothing asked
    flat = {k: f["value"] for k, f in fields.items()}
    return json.dumps(fields if structured is not None else flat), list(dict.fromkeys(urls))


SOCIAL_HOSTS = {"linkedin": "www.linkedin.com/in", "twitter": "x.com",
                "facebook": "www.facebook.com", "instagram": "www.instagram.com",
                "github": "github.com", "youtube": "www.youtube.com/@",
                "tiktok": "www.tiktok.com/@", "pinterest": "www.pinterest.com",
                "snapchat": "www.snapchat.com/add"}


def _magic_profiles(query: str, networks: list[str], kind: str) -> dict[str, list[str]]:
    """A magic lead's profiles: one per network asked (`match`), three (`lowconfidence`),
    none (`nomatch`)."""
    count = {"match": 1, "lowconfidence": 3}.get(kind, 0)
    words = [w for w in query.split() if not magic_domain(w) and "@" not in w]
    handle = _slug(MAGIC_COMPANY.sub("", " ".join(words))).replace("-", "")[:20] or "someone"
    return {n: [f"https://{SOCIAL_HOSTS.get(n, n + '.com')}/{handle}{'' if i == 0 else i + 1}"
                for i in range(count)] for n in networks}


def _agent_prompt(body: dict) -> str:
    return str(body.get("input", ""))


def _chat_prompt(body: dict) -> str:
    return " ".join(str(m.get("content", "")) for m in body.get("messages", [])
                    if isinstance(m, dict))


def create_simulator(config: SimConfig | None = None) -> Flask:
    app = Flask(__name__)
    cfg = config or SimConfig()
    limits = {PERPLEXITY: SlidingWindow(), SOCIAL: SlidingWindow()}
    stats = Stats()
    magic = Magic()
    app.extensions["sim"] = (cfg, stats)
    app.extensions["magic"] = magic

    def gate(provider: str, rps: float, domain: str | None = None, lead_key: str = ""):
        """Latency, outage, a magic lead's refusals (`domain`: its magic domain; `lead_key`:
        what identifies it), rate limit, random errors. Returns an error response or None."""
        key = request.headers.get("Authorization") or request.headers.get("x-rapidapi-key")
        stats.add(provider, "received", key)  # counted on arrival: a caller may give up
        with stats.lock:
            stats.received[provider].append(request.get_data(as_text=True)
                                            or request.query_string.decode())
        if cfg.latency_ms:
            time.sleep(cfg.latency_ms / 1000)
        if cfg.outage_status:
            stats.add(provider, str(cfg.outage_status), key)
            headers = {"Retry-After": cfg.outage_retry_after} if cfg.outage_retry_after else {}
            return (jsonify({"error": {"message": "simulated outage"}}), cfg.outage_status,
                    headers)
        refusal = magic.refusal(domain, request.path, lead_key, request.environ)
        if refusal is not None:
            status, headers = refusal
            stats.add(provider, str(status), key)
            return jsonify({"error": {"message": f"simulated ({domain})"}}), status, headers
        wait = limits[provider].admit(rps)
        if wait is not None:
            stats.add(provider, "429", key)
            return (jsonify({"error": {"message": "rate limit exceeded", "type": "rate_limit"}}),
                    429, {"Retry-After": str(max(1, math.ceil(wait)))})
        if cfg.error_rate and random.random() < cfg.error_rate:
            stats.add(provider, "503", key)
            return jsonify({"error": {"message": "simulated upstream error"}}), 503
        stats.add(provider, "ok", key)
        return None

    def research_gate(prompt: str):
        lead = _prompt_lead(prompt)
        return gate(PERPLEXITY, cfg.perplexity_rps, lead_magic(lead),
                    json.dumps(lead, sort_keys=True))

    @app.post("/v1/agent")
    def agent():
        body = request.get_json(force=True, silent=True) or {}
        prompt = _agent_prompt(body)
        if (err := research_gate(prompt)) is not None:
            return err
        structured, error = _response_format(body)
        if error:
            return _invalid(error)
        rng = _rng("agent", prompt)
        if cfg.agent_failed_rate and random.random() < cfg.agent_failed_rate:
            # Like the real API: the run failed, but what it used up is reported (and billed).
            usage = _usage(prompt, "", body.get("max_output_tokens"), 1)
            return jsonify({"object": "response", "status": "failed", "output": [],
                            "error": {"message": "model run failed", "code": "run_failed"},
                            "usage": {"input_tokens": usage[0], "output_tokens": usage[1],
                                      "total_tokens": usage[0] + usage[1],
                                      "cost": {"currency": "USD", "total_cost": usage[2]}}})
        steps = max(1, int(body.get("max_steps") or 1))
        slug = _slug(_company(prompt))
        searches = min(steps, 1 + rng.randint(0, 2))
        domain = lead_magic(_prompt_lead(prompt))
        if (kind := magic_content(domain)) is not None:
            text, urls = _magic_research(prompt, structured, domain, kind)
            found = [urls[i::searches] for i in range(searches)]
        elif (known := _world_answer(prompt, structured, cfg)) is not None:
            text, urls = known
            found = [urls[i::searches] for i in range(searches)]  # spread over the steps
        else:
            found = [[] if cfg.found_nothing else [r["url"] for r in _sources(rng, slug, 2)]
                     for _ in range(searches)]
            text = _generated(prompt, structured, rng, cfg, [u for f in found for u in f])
        output = [{"type": "search_results", "results": _results(f)} for f in found]
        output.append({"type": "message", "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]})
        usage = _usage(prompt, text, body.get("max_output_tokens"), searches)
        return jsonify({"id": f"resp_{slug[:12]}", "object": "response", "status": "completed",
                        "model": body.get("model"), "output": output,
                        "usage": {"input_tokens": usage[0], "output_tokens": usage[1],
                                  "total_tokens": usage[0] + usage[1],
                                  "cost": {"currency": "USD", "total_cost": usage[2]}}})

    @app.post("/chat/completions")
    def chat():
        body = request.get_json(force=True, silent=True) or {}
        prompt = _chat_prompt(body)
        if (err := research_gate(prompt)) is not None:
            return err
        structured, error = _response_format(body)
        if error:
            return _invalid(error)
        rng = _rng("chat", prompt)
        searches = 1 + rng.randint(0, 2)
        domain = lead_magic(_prompt_lead(prompt))
        if (kind := magic_content(domain)) is not None:
            text, urls = _magic_research(prompt, structured, domain, kind)
        elif (known := _world_answer(prompt, structured, cfg)) is not None:
            text, urls = known
        else:
            urls = ([] if cfg.found_nothing
                    else [r["url"] for r in _sources(rng, _slug(_company(prompt)), 3)])
            text = _generated(prompt, structured, rng, cfg, urls)
        if structured is None:
            text = "```json\n" + text + "\n```"
        usage = _usage(prompt, text, body.get("max_tokens"), searches)
        return jsonify({
            "id": "chat-sim", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "citations": urls, "search_results": _results(urls),
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                      "total_tokens": usage[0] + usage[1], "num_search_queries": searches,
                      "cost": {"total_cost": usage[2]}},
        })

    @app.get("/search-social-links")
    def social():
        query = request.args.get("query", "")
        domain = text_magic(query)
        if (err := gate(SOCIAL, cfg.social_rps, domain, query)) is not None:
            return err
        networks = [n for n in request.args.get("social_networks", "").split(",") if n]
        if (kind := magic_content(domain)) is not None:
            return jsonify({"status": "OK", "request_id": f"sim-{_slug(query)[:20]}",
                            "data": _magic_profiles(query, networks, kind)})
        known = None if cfg.found_nothing else world.social_answer(query, networks)
        if known is not None:
            return jsonify({"status": "OK", "request_id": f"sim-{_slug(query)[:20]}",
                            "data": known})
        rng = _rng("social", query)
        handle = _slug(query.split("@")[0]).replace("-", "")[:20] or "someone"
        data = {n: ([f"https://{SOCIAL_HOSTS.get(n, n + '.com')}/{handle}"]
                    if rng.random() < 0.8 and not cfg.found_nothing else []) for n in networks}
        return jsonify({"status": "OK", "request_id": f"sim-{handle}", "data": data})

    @app.route("/_sim/config", methods=["GET", "POST"])
    def sim_config():
        if request.method == "POST":
            for key, value in (request.get_json(force=True) or {}).items():
                if hasattr(cfg, key):
                    setattr(cfg, key, type(getattr(cfg, key))(value))
        return jsonify(asdict(cfg))

    @app.get("/_sim/stats")
    def sim_stats():
        return jsonify(stats.snapshot())

    @app.post("/_sim/reset")
    def sim_reset():
        stats.reset()
        magic.reset()
        return jsonify({"ok": True})

    return app


def _usage(prompt: str, text: str, max_tokens, searches: int) -> tuple[int, int, float]:
    input_tokens = max(1, len(prompt) // 4)
    output_tokens = max(1, len(text) // 4)
    if max_tokens:
        output_tokens = min(output_tokens, int(max_tokens))
    cost = round(input_tokens * 1e-6 + output_tokens * 1e-6 + searches * 0.005, 6)
    return input_tokens, output_tokens, cost


class SimulatorServer(ThreadedServer):
    """The simulator on a background thread (for tests and benchmarks)."""

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        super().__init__(create_simulator(config), host, port)

    @property
    def config(self) -> SimConfig:
        return self.app.extensions["sim"][0]

    @property
    def stats(self) -> Stats:
        return self.app.extensions["sim"][1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--perplexity-rps", type=float, default=2.0)
    parser.add_argument("--social-rps", type=float, default=10.0)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    cfg = SimConfig(latency_ms=args.latency_ms, error_rate=args.error_rate,
                    perplexity_rps=args.perplexity_rps, social_rps=args.social_rps)
    server = make_server(args.host, args.port, create_simulator(cfg), threaded=True)
    print(f"provider simulator on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
