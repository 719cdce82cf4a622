"""Hunter.io fake (API v2): Email Finder, Email Verifier and Account — as strict as the real
service, so a client that passes against it does not learn Hunter's rules in production.

- A key is required (X-API-KEY header or `api_key` parameter): else 401.
- Parameters are validated: the finder needs a domain (or company) and first and last name
  (or full_name), the verifier a well-formed e-mail: else 400 `wrong_params`.
- Rate limits per key and per endpoint, two sliding windows each (finder 15/s and 500/min,
  verifier 10/s and 300/min): else 403 `too_many_requests`. A refused request does not count.
- A monthly quota of credits (an address found costs 1, a verification 0.5): once used up,
  429 `usage_limit` until `reset_date`. `/v2/account` is free and always answers.
- 202 "verification in progress" for the first `verify_pending` verifications of an address.

What is found comes from an `answers` object: `find(first_name, last_name, full_name,
domain) -> dict | None` (the finder's `data`; None: no address) and `verify(email) -> dict`
(the verifier's `data`; None: the check failed at the mail server, 222). `SimpleAnswers` is a
deterministic default.

Magic leads (test mode: `simulators/providers.py` describes them) are answered by
`MagicAnswers` in front of whatever `answers` the fake is given, keyed by the finder's
`domain` and the verifier's `email`: `match.test` an address scored 99,
verified `valid`, with three sources, and `valid` on verification; `nomatch.test` no address
(and a 222 verification); `lowconfidence.test` score 30, no source, no verification, and
`unknown`. `ratelimited.test` gets 403 (Hunter's rate-limit status) with Retry-After: 1 on
two of every three requests about it, `error.test` 500, `slow.test` answers after 20 s.

    python -m simulators.hunter --port 8011 --finder-rps 15 --finder-rpm 500

Control endpoints (test use): GET/POST /_sim/config, GET /_sim/stats, POST /_sim/reset.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import math
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from .providers import Magic, magic_address, magic_content, magic_domain
from .serving import ThreadedServer

FINDER = "finder"
VERIFIER = "verifier"
ACCOUNT = "account"
COST = {FINDER: 1.0, VERIFIER: 0.5}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
ERRORS = {
    400: ("wrong_params", "The parameters are invalid."),
    401: ("authentication_failed", "No user found for the API key supplied."),
    403: ("too_many_requests", "You have reached the rate limit for this endpoint. Please"
          " slow down your requests."),
    404: ("not_found", "The requested resource was not found."),
    429: ("usage_limit", "You have reached your usage limit. Upgrade your plan if necessary."),
    451: ("unavailable_for_legal_reasons", "The person asked not to be processed."),
    202: ("verification_in_progress", "The verification is still in progress. Retry later."),
    222: ("verification_failed", "The verification failed because of an unexpected response"
          " from the remote SMTP server."),
}
PAGES = ("team", "about", "contact", "blog/welcome", "press", "careers")
WEBMAIL = frozenset({"gmail.com", "outlook.com", "hotmail.com", "yahoo.com", "icloud.com",
                     "proton.me", "gmx.de", "gmx.com"})


class Answers(Protocol):
    def find(self, first_name: str | None, last_name: str | None, full_name: str | None,
             domain: str) -> dict | None: ...

    def verify(self, email: str) -> dict | None: ...


@dataclass
class HunterConfig:
    api_keys: tuple[str, ...] = ()  # the keys accepted; empty: any non-empty key
    finder_rps: float = 15.0  # 0: unlimited
    finder_rpm: float = 500.0
    verifier_rps: float = 10.0
    verifier_rpm: float = 300.0
    credits: float = 1_000_000.0  # the month's quota
    reset_date: str = ""  # YYYY-MM-DD the quota resets; empty: the 1st of next month
    verify_pending: int = 0  # the first N verifications of each address answer 202
    latency_ms: float = 0.0
    outage_status: int = 0  # when set, every finder and verifier request gets this status


def _rng(*parts: str | None) -> random.Random:
    seed = hashlib.sha256("|".join(p or "" for p in parts).encode()).digest()
    return random.Random(int.from_bytes(seed[:8], "big"))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def _split(first: str | None, last: str | None, full: str | None) -> tuple[str, str]:
    if first and last:
        return first, last
    words = (full or "").split()
    return (words[0], words[-1]) if words else ("", "")


def _day(rng: random.Random, before: int) -> str:
    return (date(2026, 1, 1) - timedelta(days=rng.randint(0, before))).isoformat()


def _sources(rng: random.Random, domain: str) -> list[dict]:
    return [{"domain": domain, "uri": f"https://{domain}/{page}",
             "extracted_on": _day(rng, 700), "last_seen_on": _day(rng, 60),
             "still_on_page": rng.random() < 0.9}
            for page in rng.sample(PAGES, k=rng.randint(1, 3))]


class SimpleAnswers:
    """Deterministic answers from a hash of the inputs: `first.last@domain`, score 60-99,
    1-3 sources on the domain's own pages, verified `valid` most of the time (not verified
    otherwise). A name containing `nomatch` has no address."""

    def find(self, first_name, last_name, full_name, domain):
        first, last = _split(first_name, last_name, full_name)
        if "nomatch" in f"{first} {last} {full_name or ''}".lower():
            return None
        rng = _rng("find", first.lower(), last.lower(), domain)
        verified = rng.random() < 0.8
        return {
            "first_name": first, "last_name": last,
            "email": f"{_slug(first)}.{_slug(last)}@{domain}",
            "score": rng.randint(60, 99), "domain": domain, "accept_all": False,
            "position": None, "twitter": None, "linkedin_url": None, "phone_number": None,
            "company": domain.split(".")[0].title(), "sources": _sources(rng, domain),
            "verification": {"date": _day(rng, 30) if verified else None,
                             "status": "valid" if verified else None},
        }

    def verify(self, email):
        rng = _rng("verify", email.lower())
        domain = email.rsplit("@", 1)[1].lower()
        webmail = domain in WEBMAIL
        status = ("invalid" if "nomatch" in email.lower() else "webmail" if webmail
                  else "valid" if rng.random() < 0.85 else "accept_all")
        result = {"valid": "deliverable", "webmail": "deliverable",
                  "invalid": "undeliverable"}.get(status, "risky")
        return {
            "status": status, "result": result, "score": rng.randint(60, 99) if status != "invalid"
            else rng.randint(0, 20), "email": email, "regexp": True, "gibberish": False,
            "disposable": False, "webmail": webmail, "mx_records": True, "smtp_server": True,
            "smtp_check": status != "invalid", "accept_all": status == "accept_all",
            "block": False, "sources": [] if webmail else _sources(rng, domain),
        }


class MagicAnswers:
    """Magic leads' answers (see the module docstring); anyone else's from `fallback`."""

    def __init__(self, fallback: Answers):
        self.fallback = fallback

    def find(self, first_name, last_name, full_name, domain):
        kind = magic_content(magic_domain(domain))
        if kind is None:
            return self.fallback.find(first_name, last_name, full_name, domain)
        if kind == "nomatch":
            return None
        first, last = _split(first_name, last_name, full_name)
        sure = kind == "match"
        return {
            "first_name": first, "last_name": last,
            "email": magic_address(first, last, domain), "score": 99 if sure else 30,
            "domain": domain, "accept_all": False, "position": None, "twitter": None,
            "linkedin_url": None, "phone_number": None,
            "company": domain.split(".")[0].title(),
            "sources": _magic_sources(domain, first, last) if sure else [],
            "verification": {"date": "2026-09-14" if sure else None,
                             "status": "valid" if sure else None},
        }

    def verify(self, email):
        domain = magic_domain(email)
        kind = magic_content(domain)
        if kind is None:
            return self.fallback.verify(email)
        if kind == "nomatch" or domain is None:
            return None
        sure = kind == "match"
        local = email.rsplit("@", 1)[0].lower()
        return {
            "status": "valid" if sure else "unknown",
            "result": "deliverable" if sure else "risky", "score": 99 if sure else 30,
            "email": email, "regexp": True, "gibberish": False, "disposable": False,
            "webmail": False, "mx_records": True, "smtp_server": True, "smtp_check": sure,
            "accept_all": False, "block": False,
            "sources": _magic_sources(domain, *local.split(".", 1)) if sure else [],
        }


def _magic_sources(domain: str, first: str, last: str = "") -> list[dict]:
    """Three pages that show a magic match's address, on distinct sites."""
    handle = _slug(f"{first}{last}") or "contact"
    return [{"domain": _host(uri), "uri": uri, "extracted_on": "2025-11-03",
             "last_seen_on": "2026-09-30", "still_on_page": True}
            for uri in (f"https://www.{domain}/team", f"https://github.com/{handle}",
                        f"https://www.crunchbase.com/person/{handle}")]


def _host(uri: str) -> str:
    return uri.split("/")[2].removeprefix("www.")


class Windows:
    """Per key and endpoint, the accepted requests of the last minute: at most `rps` in any
    1-second window and `rpm` in any 60-second one (sliding, as Hunter enforces them)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.hits: dict[tuple[str, str], collections.deque[float]] = {}

    def admit(self, key: str, endpoint: str, rps: float, rpm: float) -> bool:
        now = time.monotonic()
        with self.lock:
            hits = self.hits.setdefault((key, endpoint), collections.deque())
            while hits and now - hits[0] >= 60.0:
                hits.popleft()
            last_second = sum(1 for _ in _within(hits, now, 1.0))
            if (rps > 0 and last_second >= max(1, math.floor(rps))) or (
                    rpm > 0 and len(hits) >= max(1, math.floor(rpm))):
                return False
            hits.append(now)
            return True

    def reset(self):
        with self.lock:
            self.hits.clear()


def _within(hits: collections.deque[float], now: float, seconds: float):
    for t in reversed(hits):
        if now - t >= seconds:
            return
        yield t


class Account:
    """The month's credits used, and how often each address was asked to be verified."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.used = 0.0
            self.polls: collections.Counter[str] = collections.Counter()

    def can_spend(self, cost: float, credits: float) -> bool:
        with self.lock:
            return self.used + cost <= credits

    def spend(self, cost: float):
        with self.lock:
            self.used += cost

    def poll(self, email: str) -> int:
        """How many times this address was asked before."""
        with self.lock:
            self.polls[email] += 1
            return self.polls[email] - 1


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.counts: collections.Counter[str] = collections.Counter()
            # Requests admitted by the rate windows (wall clock, comparable across processes)
            self.accepted: dict[str, list[float]] = {FINDER: [], VERIFIER: []}
            # The query strings received: tests check that no key travels in a URL.
            self.received: dict[str, collections.deque[str]] = {
                e: collections.deque(maxlen=50) for e in (FINDER, VERIFIER, ACCOUNT)}
            self.last_key: str | None = None

    def add(self, endpoint: str, outcome: str):
        with self.lock:
            self.counts[f"{endpoint}.{outcome}"] += 1

    def arrived(self, endpoint: str, key: str | None, query: str):
        with self.lock:
            self.counts[f"{endpoint}.received"] += 1
            self.received[endpoint].append(query)
            self.last_key = key

    def admitted(self, endpoint: str):
        with self.lock:
            self.accepted[endpoint].append(time.time())

    def snapshot(self) -> dict:
        with self.lock:
            return {"counts": dict(self.counts), "last_key": self.last_key,
                    "accepted": {k: list(v) for k, v in self.accepted.items()},
                    "received": {k: list(v) for k, v in self.received.items()}}


def first_of_next_month(now: datetime) -> str:
    return (date(now.year + now.month // 12, now.month % 12 + 1, 1)).isoformat()


def _error(status: int, details: str | None = None, headers: dict | None = None):
    error_id, default = ERRORS.get(status, ("server_error", "Something went wrong."))
    return jsonify({"errors": [{"id": error_id, "code": status,
                                "details": details or default}]}), status, headers or {}


def create_hunter(config: HunterConfig | None = None, answers: Answers | None = None,
                  clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Flask:
    app = Flask(__name__)
    cfg = config or HunterConfig()
    source: Answers = MagicAnswers(answers or SimpleAnswers())
    windows, account, stats, magic = Windows(), Account(), Stats(), Magic()
    app.extensions["hunter"] = (cfg, stats, account)
    app.extensions["magic"] = magic

    def api_key() -> str | None:
        return request.headers.get("X-API-KEY") or request.args.get("api_key") or None

    def reset_date() -> str:
        return cfg.reset_date or first_of_next_month(clock())

    def about() -> tuple[str | None, str]:
        """The magic domain of the lead a request is about (None: not magic), and the
        request's parameters, which identify that lead."""
        args = sorted((k, v) for k, v in request.args.items(multi=True) if k != "api_key")
        return magic_domain(request.args.get("email") or request.args.get("domain")), repr(args)

    def gate(endpoint: str):
        """Latency, outage, key, a magic lead's refusals, rate windows and quota, in that
        order: an error response, or None when the request may be answered."""
        key = api_key()
        query = request.query_string.decode()
        stats.arrived(endpoint, key, query)
        if cfg.latency_ms:
            time.sleep(cfg.latency_ms / 1000)
        if cfg.outage_status:
            stats.add(endpoint, str(cfg.outage_status))
            return _error(cfg.outage_status)
        if not key or (cfg.api_keys and key not in cfg.api_keys):
            stats.add(endpoint, "401")
            return _error(401)
        domain, lead_key = about()
        refusal = magic.refusal(domain, endpoint, lead_key, request.environ, 403)
        if refusal is not None:
            status, headers = refusal
            stats.add(endpoint, str(status))
            return _error(status, headers=headers)
        rps, rpm = ((cfg.finder_rps, cfg.finder_rpm) if endpoint == FINDER
                    else (cfg.verifier_rps, cfg.verifier_rpm))
        if not windows.admit(key, endpoint, rps, rpm):
            stats.add(endpoint, "403")
            return _error(403)
        stats.admitted(endpoint)
        # What the request may cost must be left: a finder needs a whole credit, found or not
        if not account.can_spend(COST[endpoint], cfg.credits):
            stats.add(endpoint, "429")
            return _error(429)
        return None

    def wrong(endpoint: str, details: str):
        stats.add(endpoint, "400")
        return _error(400, details)

    @app.get("/v2/email-finder")
    def email_finder():
        if (err := gate(FINDER)) is not None:
            return err
        args = {k: (request.args.get(k) or "").strip() or None
                for k in ("domain", "company", "first_name", "last_name", "full_name")}
        if not (args["domain"] or args["company"]):
            return wrong(FINDER, "You are missing the domain parameter")
        if not ((args["first_name"] and args["last_name"]) or args["full_name"]):
            return wrong(FINDER, "You are missing the first_name and last_name, or the"
                         " full_name parameter")
        domain = (args["domain"] or f"{_slug(args['company'] or '')}.com").lower()
        data = source.find(args["first_name"], args["last_name"], args["full_name"], domain)
        if data and data.get("email"):
            account.spend(COST[FINDER])
        else:
            first, last = _split(args["first_name"], args["last_name"], args["full_name"])
            data = {"first_name": first, "last_name": last, "email": None, "score": None,
                    "domain": domain, "accept_all": None, "position": None, "twitter": None,
                    "linkedin_url": None, "phone_number": None, "company": None,
                    "sources": [], "verification": {"date": None, "status": None}}
        stats.add(FINDER, "ok")
        return jsonify({"data": data, "meta": {"params": {**args, "max_duration": None}}})

    @app.get("/v2/email-verifier")
    def email_verifier():
        if (err := gate(VERIFIER)) is not None:
            return err
        email = (request.args.get("email") or "").strip()
        if not email:
            return wrong(VERIFIER, "You are missing the email parameter")
        if not EMAIL.match(email):
            return wrong(VERIFIER, "The email parameter is not a valid email address")
        if account.poll(email.lower()) < cfg.verify_pending:
            stats.add(VERIFIER, "202")
            return _error(202)
        data = source.verify(email)
        if data is None:
            stats.add(VERIFIER, "222")
            return _error(222)
        account.spend(COST[VERIFIER])
        stats.add(VERIFIER, "ok")
        return jsonify({"data": data, "meta": {"params": {"email": email}}})

    @app.get("/v2/account")
    def account_info():
        key = api_key()
        stats.arrived(ACCOUNT, key, request.query_string.decode())
        if not key or (cfg.api_keys and key not in cfg.api_keys):
            stats.add(ACCOUNT, "401")
            return _error(401)
        stats.add(ACCOUNT, "ok")
        used = account.used
        return jsonify({"data": {
            "first_name": "Sim", "last_name": "Ulator", "email": "owner@example.com",
            "plan_name": "Simulated", "plan_level": 1, "reset_date": reset_date(),
            "team_id": 1,
            "requests": {
                "searches": {"used": 0, "available": 0},
                "verifications": {"used": 0, "available": 0},
                "credits": {"used": used, "available": max(0.0, cfg.credits - used)},
            },
        }})

    @app.route("/_sim/config", methods=["GET", "POST"])
    def sim_config():
        if request.method == "POST":
            for key, value in (request.get_json(force=True) or {}).items():
                if hasattr(cfg, key):
                    setattr(cfg, key, type(getattr(cfg, key))(value))
        return jsonify(asdict(cfg))

    @app.get("/_sim/stats")
    def sim_stats():
        return jsonify({**stats.snapshot(), "credits_used": account.used})

    @app.post("/_sim/reset")
    def sim_reset():
        stats.reset()
        windows.reset()
        account.reset()
        magic.reset()
        return jsonify({"ok": True})

    return app


class HunterServer(ThreadedServer):
    """The fake on a background thread (for tests and benchmarks)."""

    def __init__(self, config: HunterConfig | None = None, answers: Answers | None = None,
                 host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        super().__init__(create_hunter(config, answers, clock), host, port)

    @property
    def config(self) -> HunterConfig:
        return self.app.extensions["hunter"][0]

    @property
    def stats(self) -> Stats:
        return self.app.extensions["hunter"][1]

    @property
    def account(self) -> Account:
        return self.app.extensions["hunter"][2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--api-key", action="append", default=[],
                        help="a key to accept (repeatable); none: any non-empty key")
    parser.add_argument("--finder-rps", type=float, default=15.0)
    parser.add_argument("--finder-rpm", type=float, default=500.0)
    parser.add_argument("--verifier-rps", type=float, default=10.0)
    parser.add_argument("--verifier-rpm", type=float, default=300.0)
    parser.add_argument("--credits", type=float, default=1_000_000.0)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    args = parser.parse_args(argv)
    cfg = HunterConfig(api_keys=tuple(args.api_key), finder_rps=args.finder_rps,
                       finder_rpm=args.finder_rpm, verifier_rps=args.verifier_rps,
                       verifier_rpm=args.verifier_rpm, credits=args.credits,
                       latency_ms=args.latency_ms)
    server = make_server(args.host, args.port, create_hunter(cfg), threaded=True)
    print(f"hunter fake on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
