"""A labelled synthetic world: people whose work e-mail, title and LinkedIn profile are known,
and what each provider fake answers about them — so that fill rate, precision and how well
confidence predicts being right can be measured (`python -m bench quality`), not guessed.

The people (`labelled()`, at most 1000 per seed; the default seed's are always known to the
fakes) are made from fixed name and company lists by seeded hashing: no global random state,
the same world on every run. Distinct names and companies; each company domain has one
address pattern (first.last@, flast@, first@, firstl@, evenly). The lead mix:

- 7 % webmail: the person's only address is personal (gmail.com …; `work_email` None); the
  lead is `{"name", "company", "email": <personal>}` or `{"name", "company", "domain":
  <webmail domain>}`, half each;
- 7 % e-mail only: `{"email": <work address>}`;
- the rest `{"name", "company", "domain"}`. 10 % of non-webmail domains are catch-all.

The noise model (`noise_model()` lists the same figures): each provider independently,
seeded by (provider, person), so an answer never depends on the order of calls. A right
value cites 1, 2 or 3 (40 / 35 / 25 %) of the independent pages (distinct sites) that state
it; a wrong value cites no page (45 %), one aggregator page (40 %), two pages of one
aggregator (10 %, not independent) or — rarely, 5 % — two independent but stale pages. So
several independent sources almost always mean a right value, one or none much less so.

- Hunter Email Finder. Normal domain: the true address 55 % (score 70-99, 1-4 sources,
  verification `valid` for 60 % of them, else null), a wrong pattern 10 % (score 30-60, 0-1
  source, verification null, `accept_all` for 20 % of them), no result 35 %. Catch-all
  domain: its pattern guess, verification `accept_all`, score 40-75; the guess is right 70 %
  (0-2 sources), wrong 30 % (no source). Webmail domain: no result.
- Hunter Email Verifier: the truth (`verifier_truth`) — `valid` for a person's work address
  on a normal domain, `invalid` for any other address there, `accept_all` on a catch-all
  domain, `webmail` on a webmail domain — except 3 % `unknown`.
- Perplexity, per field: work_email right 50 % / wrong 10 % (another pattern on the
  company's domain), title right 80 % / wrong 8 % (another title), linkedin_url right 55 % /
  wrong 8 % (a namesake's profile); null otherwise. For a webmail person "right" is null.
- Social Links (LinkedIn; other networks empty): the right profile 75 %, ambiguous 10 % (the
  right one and a namesake's, the right one first half the time), a namesake's 5 %, none 10 %.

Outside the world (any other lead) the fakes keep answering plausible generated values:
`WorldHunterAnswers` generates its own; `perplexity_answer` and `social_answer` return None
and the provider fake generates as before.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

SEED = 2026
MAX_PEOPLE = 1000
WEBMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com")
PATTERNS = ("first.last", "flast", "first", "firstl")
TLDS = (".com", ".io", ".co")

LEAD_MIX = {"webmail": 0.07, "email_only": 0.07, "catch_all": 0.10}
FINDER = {"right": 0.55, "wrong_pattern": 0.10, "verified_when_right": 0.60,
          "accept_all_when_wrong": 0.20, "catch_all_guess_right": 0.70}
VERIFIER = {"unknown": 0.03}
PERPLEXITY = {"work_email": (0.50, 0.10), "title": (0.80, 0.08), "linkedin_url": (0.55, 0.08)}
SOCIAL = {"right": 0.75, "ambiguous": 0.10, "wrong": 0.05}
RIGHT_SITES = (0.40, 0.35, 0.25)  # a right value cites 1, 2, 3 independent pages
# A wrong one: none, one aggregator page, two pages of one aggregator, two stale pages.
WRONG_SOURCES = (0.45, 0.40, 0.10, 0.05)

FIRST = ("Amara", "Bastian", "Celine", "Dario", "Elif", "Farid", "Greta", "Hugo", "Ines",
         "Jonas", "Kaia", "Lorenzo", "Mira", "Nils", "Odile", "Pavel", "Quinn", "Rosa",
         "Soren", "Talia", "Umar", "Vera", "Wim", "Xenia", "Yusuf", "Zora", "Anouk", "Bruno",
         "Clara", "Dmitri", "Esme", "Felix", "Gaia", "Henrik", "Ilse", "Joaquin", "Kenji",
         "Leona", "Matteo", "Noor")
LAST = ("Abernathy", "Brandt", "Castellano", "Dufresne", "Eriksen", "Falkner", "Guzman",
        "Halvorsen", "Ishikawa", "Jablonski", "Kowalczyk", "Lindqvist", "Marchetti",
        "Nakamura", "Okonkwo", "Petrov", "Quintero", "Rasmussen", "Salazar", "Takahashi",
        "Underwood", "Vasquez", "Whitfield", "Yilmaz", "Zielinski", "Achterberg", "Bergstrom",
        "Carvalho", "Delacroix", "Esposito")
PREFIX = ("Northwind", "Bluepeak", "Copperleaf", "Driftwood", "Emberline", "Fernhill",
          "Glasswing", "Harborview", "Ironbark", "Juniper", "Kestrel", "Lumenfold", "Mossgate",
          "Nimbus", "Oakridge", "Pinecrest", "Quarrystone", "Redfern", "Silverline",
          "Tidewater", "Umbra", "Vantage", "Willowby", "Yarrow", "Zephyr", "Amberly",
          "Brightwater", "Cobalt", "Duneway", "Everfield", "Foxglove", "Granite", "Highmark",
          "Inkwell", "Jetstream", "Kindling", "Larkspur", "Meridian", "Nettle", "Orchard")
SUFFIX = ("Analytics", "Logistics", "Labs", "Systems", "Health", "Robotics", "Capital",
          "Foods", "Energy", "Software", "Media", "Bio", "Freight", "Security", "Cloud",
          "Studio", "Materials", "Networks", "Payments", "Learning", "Mobility", "Retail",
          "Data", "Works", "Dynamics")
TITLES = ("VP of Sales", "Head of Growth", "Chief Revenue Officer", "Sales Director",
          "Account Executive", "Founder & CEO", "Marketing Manager", "CTO",
          "Head of Partnerships", "Product Manager", "Director of Operations",
          "Customer Success Lead", "Data Engineer", "Chief Financial Officer")


@dataclass(frozen=True)
class Person:
    """The truth about one lead."""

    first_name: str
    last_name: str
    company: str
    domain: str  # the company's e-mail domain, or the webmail domain of a webmail person
    work_email: str | None  # None: the person's only address is webmail
    title: str
    linkedin_url: str
    catch_all: bool  # the domain accepts every address
    webmail: bool
    site: str  # the company's web site (its domain, unless the person uses webmail)
    personal_email: str | None = None

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def key(self) -> str:
        return f"{_norm(self.name)}|{self.domain}"

    @property
    def slug(self) -> str:
        return f"{self.first_name}-{self.last_name}".lower()


def _rng(*parts: str) -> random.Random:
    seed = hashlib.sha256("|".join(parts).encode()).digest()
    return random.Random(int.from_bytes(seed[:8], "big"))


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _host(domain_or_url: str) -> str:
    text = domain_or_url.strip().lower()
    host = urlsplit(text if "//" in text else f"//{text}").hostname or ""
    return host.removeprefix("www.")


def _url_key(url: str) -> str:
    return re.sub(r"^https?://(www\.)?", "", url.strip().lower()).rstrip("/")


def address(first: str, last: str, pattern: str, domain: str) -> str:
    first, last = first.lower(), last.lower()
    local = {"first.last": f"{first}.{last}", "flast": f"{first[0]}{last}", "first": first,
             "firstl": f"{first}{last[0]}"}[pattern]
    return f"{local}@{domain}"


# --- the world --------------------------------------------------------------------------


@functools.cache
def _world(seed: int) -> tuple[tuple[dict, Person], ...]:
    order = random.Random(seed)  # a local generator: no global random state
    names = [(f, last) for f in FIRST for last in LAST]
    companies = [(p, s) for p in PREFIX for s in SUFFIX]
    order.shuffle(names)
    order.shuffle(companies)
    return tuple(_entry(seed, i, names[i], companies[i]) for i in range(MAX_PEOPLE))


def _entry(seed: int, i: int, name: tuple[str, str], company: tuple[str, str]
           ) -> tuple[dict, Person]:
    r = _rng("world", str(seed), str(i))
    first, last = name
    site = f"{''.join(company).lower()}{r.choice(TLDS)}"
    kind, catch_all = r.random(), r.random() < LEAD_MIX["catch_all"]
    hexid = f"{r.getrandbits(24):06x}"
    linkedin = (f"https://www.linkedin.com/in/{first}-{last}-{hexid}" if r.random() < 0.5
                else f"https://www.linkedin.com/in/{first}{last}").lower()
    common = {"first_name": first, "last_name": last, "company": " ".join(company),
              "title": r.choice(TITLES), "linkedin_url": linkedin, "site": site}
    if kind < LEAD_MIX["webmail"]:
        mailhost = r.choice(WEBMAIL_DOMAINS)
        personal = f"{first}.{last}{r.randint(10, 99)}@{mailhost}".lower()
        person = Person(**common, domain=mailhost, work_email=None, catch_all=False,
                        webmail=True, personal_email=personal)
        where = {"email": personal} if r.random() < 0.5 else {"domain": mailhost}
        return {"name": person.name, "company": person.company, **where}, person
    person = Person(**common, domain=site, catch_all=catch_all, webmail=False,
                    work_email=address(first, last, r.choice(PATTERNS), site))
    if kind < LEAD_MIX["webmail"] + LEAD_MIX["email_only"]:
        return {"email": person.work_email}, person
    return {"name": person.name, "company": person.company, "domain": site}, person


class _Index:
    """The people the fakes recognise: the default seed's world, and any other seed's once
    `labelled()` has made it (in this process)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seeds: set[int] = set()
        self.by_email: dict[str, Person] = {}
        self.by_name_domain: dict[tuple[str, str], Person] = {}
        self.by_query: dict[str, Person] = {}
        self.by_linkedin: dict[str, Person] = {}
        self.catch_all: dict[str, bool] = {}  # every company domain of the world

    def add(self, seed: int) -> None:
        with self.lock:
            if seed in self.seeds:
                return
            for _, p in _world(seed):
                for email in (p.work_email, p.personal_email):
                    if email:
                        self.by_email[email] = p
                self.by_name_domain[(_norm(p.name), p.domain)] = p
                self.by_query[_norm(f"{p.name} {p.company}")] = p
                self.by_linkedin[_url_key(p.linkedin_url)] = p
                self.catch_all[p.site] = p.catch_all
            self.seeds.add(seed)


_INDEX = _Index()


def _index() -> _Index:
    _INDEX.add(SEED)
    return _INDEX


def labelled(n: int = 300, seed: int = SEED) -> list[tuple[dict, Person]]:
    """The first `n` leads of the seed's world (as the API receives them for person_contact),
    each with its truth."""
    if not 0 < n <= MAX_PEOPLE:
        raise ValueError(f"n must be 1..{MAX_PEOPLE}")
    _index().add(seed)
    return list(_world(seed)[:n])


def person_for(name: str | None = None, domain: str | None = None, email: str | None = None,
               first_name: str | None = None, last_name: str | None = None) -> Person | None:
    """The world person these inputs describe: by e-mail address, or by name with domain."""
    index = _index()
    if email and (person := index.by_email.get(email.strip().lower())):
        return person
    full = name or " ".join(p for p in (first_name, last_name) if p)
    where = domain or (email.rpartition("@")[2] if email and "@" in email else "")
    if not full or not where:
        return None
    return index.by_name_domain.get((_norm(full), _host(where)))


def verifier_truth(email: str) -> str | None:
    """What a perfect verifier says of this address; None for a domain outside the world."""
    email = email.strip().lower()
    domain = email.rpartition("@")[2]
    if domain in WEBMAIL_DOMAINS:
        return "webmail"
    catch_all = _index().catch_all.get(domain)
    if catch_all is None:
        return None
    if catch_all:
        return "accept_all"
    person = _index().by_email.get(email)
    return "valid" if person is not None and person.work_email == email else "invalid"


def noise_model() -> list[tuple[str, str, float]]:
    """(who, outcome, rate): the figures the module docstring describes."""
    rows = [("leads", f"{k} share", v) for k, v in LEAD_MIX.items()]
    rows += [("hunter finder", k, v) for k, v in FINDER.items()]
    rows += [("hunter verifier", k, v) for k, v in VERIFIER.items()]
    for field_name, (right, wrong) in PERPLEXITY.items():
        rows += [("perplexity", f"{field_name} right", right),
                 ("perplexity", f"{field_name} wrong", wrong)]
    rows += [("social links", f"linkedin {k}", v) for k, v in SOCIAL.items()]
    rows += [("sources", f"right value cites {n} site(s)", v)
             for n, v in enumerate(RIGHT_SITES, 1)]
    rows += [("sources", f"wrong value cites {what}", v) for what, v in
             zip(("nothing", "one aggregator page", "two pages of one aggregator",
                  "two independent stale pages"), WRONG_SOURCES, strict=True)]
    return rows


# --- sources ----------------------------------------------------------------------------


def _pages(p: Person, field_name: str) -> list[str]:
    """Four pages on distinct sites that state the person's true `field_name`."""
    handle = f"{p.first_name}{p.last_name}".lower()
    company = re.sub(r"[^a-z0-9]+", "-", p.company.lower())
    common = [f"https://www.{p.site}/team", f"https://www.crunchbase.com/person/{p.slug}"]
    return common + {
        "work_email": [f"https://github.com/{handle}",
                       f"https://news.example-press.com/{company}-media-contact"],
        "title": [p.linkedin_url, f"https://news.example-press.com/{company}-appoints-{p.slug}"],
        "linkedin_url": [f"https://x.com/{handle}", f"https://github.com/{handle}"],
    }[field_name]


def _right_sources(p: Person, field_name: str, rng: random.Random) -> list[str]:
    k = rng.choices((1, 2, 3), RIGHT_SITES)[0]
    return rng.sample(_pages(p, field_name), k)


def _wrong_sources(p: Person, rng: random.Random) -> list[str]:
    """Mostly aggregators that copy each other; rarely two stale pages of distinct sites."""
    company = re.sub(r"[^a-z0-9]+", "-", p.company.lower())
    kind = rng.choices(range(len(WRONG_SOURCES)), WRONG_SOURCES)[0]
    aggregators = [f"https://www.zoominfo.com/p/{p.slug}",
                   f"https://rocketreach.co/{p.slug}-email"]
    if kind < 2:
        return rng.sample(aggregators, kind)
    if kind == 2:
        return [aggregators[0], f"https://www.zoominfo.com/c/{company}"]
    return [aggregators[1], f"https://news.example-press.com/2019/{company}-{p.slug}"]


def _wrong_address(p: Person, rng: random.Random) -> str:
    true_pattern = next((pat for pat in PATTERNS if p.work_email == address(
        p.first_name, p.last_name, pat, p.site)), None)
    return address(p.first_name, p.last_name,
                   rng.choice([pat for pat in PATTERNS if pat != true_pattern]), p.site)


def _namesake(p: Person) -> str:
    hexid = f"{_rng('namesake', p.key).getrandbits(24):06x}"
    return f"https://www.linkedin.com/in/{p.slug}-{hexid}"


# --- Hunter -----------------------------------------------------------------------------


def _hunter_source(url: str) -> dict:
    return {"domain": _host(url), "uri": url, "extracted_on": "2025-11-03",
            "last_seen_on": "2026-09-30", "still_on_page": True}


def _finder_data(first: str, last: str, email: str, domain: str, company: str | None,
                 score: int, sources: list[str], status: str | None) -> dict:
    return {"first_name": first, "last_name": last, "email": email, "score": score,
            "domain": domain, "accept_all": status == "accept_all", "position": None,
            "twitter": None, "linkedin_url": None, "phone_number": None, "company": company,
            "sources": [_hunter_source(u) for u in sources],
            "verification": {"date": "2026-09-14" if status else None, "status": status}}


def hunter_find(p: Person) -> dict | None:
    """The Email Finder's `data` for a world person (None: no address found)."""
    if p.webmail:
        return None
    rng = _rng("hunter_finder", p.key)

    def data(email: str, score: int, sources: list[str], status: str | None) -> dict:
        return _finder_data(p.first_name, p.last_name, email, p.domain, p.company, score,
                            sources, status)

    if p.catch_all:
        right = rng.random() < FINDER["catch_all_guess_right"]
        sources = rng.sample(_pages(p, "work_email"), rng.randint(0, 2)) if right else []
        return data(p.work_email if right else _wrong_address(p, rng), rng.randint(40, 75),
                    sources, "accept_all")
    roll = rng.random()
    if roll < FINDER["right"]:
        status = "valid" if rng.random() < FINDER["verified_when_right"] else None
        return data(p.work_email, rng.randint(70, 99),
                    rng.sample(_pages(p, "work_email"), rng.randint(1, 4)), status)
    if roll < FINDER["right"] + FINDER["wrong_pattern"]:
        status = "accept_all" if rng.random() < FINDER["accept_all_when_wrong"] else None
        return data(_wrong_address(p, rng), rng.randint(30, 60),
                    _wrong_sources(p, rng)[:1], status)
    return None


VERIFIER_SCORES = {"valid": (88, 99), "invalid": (0, 15), "accept_all": (45, 75),
                   "webmail": (70, 90), "unknown": (20, 50), "disposable": (0, 20)}
VERIFIER_RESULTS = {"valid": "deliverable", "invalid": "undeliverable", "webmail": "deliverable"}


def _verifier_data(email: str, status: str, rng: random.Random, sources: list[str]) -> dict:
    low, high = VERIFIER_SCORES[status]
    well_formed = bool(re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", email))
    return {"status": status, "result": VERIFIER_RESULTS.get(status, "risky"),
            "score": rng.randint(low, high), "email": email, "regexp": well_formed,
            "gibberish": False, "disposable": status == "disposable",
            "webmail": status == "webmail", "mx_records": well_formed,
            "smtp_server": well_formed, "smtp_check": status in ("valid", "webmail"),
            "accept_all": status == "accept_all", "block": False,
            "sources": [_hunter_source(u) for u in sources]}


def hunter_verify(email: str) -> dict:
    """The Email Verifier's `data` for any address: the truth for the world's domains (3 %
    unknown), a plausible generated answer elsewhere."""
    email = email.strip().lower()
    rng = _rng("hunter_verifier", email)
    truth = verifier_truth(email)
    if truth is None:
        roll = rng.random()
        status = ("valid" if roll < 0.75 else "accept_all" if roll < 0.85
                  else "invalid" if roll < 0.95 else "unknown")
        return _verifier_data(email, status, rng, [])
    status = "unknown" if rng.random() < VERIFIER["unknown"] else truth
    person = _index().by_email.get(email)
    sources = _pages(person, "work_email")[:2] if truth == "valid" else []
    return _verifier_data(email, status, rng, sources)


def _generated_find(first: str | None, last: str | None, full: str | None,
                    domain: str | None) -> dict | None:
    """Someone outside the world: first.last@ for 70 % of them, nothing on webmail."""
    parts = (full or "").split()
    first = first or (parts[0] if parts else "")
    last = last or (parts[-1] if len(parts) > 1 else "")
    host = _host(domain or "")
    rng = _rng("hunter_finder", first.lower(), last.lower(), host)
    if not (first and last and host) or host in WEBMAIL_DOMAINS or rng.random() >= 0.7:
        return None
    email = address(re.sub(r"[^a-z]", "", first.lower()) or "x",
                    re.sub(r"[^a-z]", "", last.lower()) or "x", "first.last", host)
    status = "valid" if rng.random() < 0.5 else None
    return _finder_data(first, last, email, host, None, rng.randint(60, 95),
                        [f"https://www.{host}/team"], status)


class WorldHunterAnswers:
    """The content of the Hunter fake's answers (`simulators.hunter`): a world person's as
    the noise model says; anyone else's plausible and generated."""

    def find(self, first_name: str | None, last_name: str | None, full_name: str | None,
             domain: str | None) -> dict | None:
        person = person_for(name=full_name, domain=domain, first_name=first_name,
                            last_name=last_name)
        if person is None:
            return _generated_find(first_name, last_name, full_name, domain)
        return hunter_find(person)

    def verify(self, email: str) -> dict:
        return hunter_verify(email)


# --- Perplexity and Social Links ----------------------------------------------------------


def _truth(p: Person, field_name: str) -> str | None:
    return {"work_email": p.work_email, "title": p.title,
            "linkedin_url": p.linkedin_url}[field_name]


def _wrong(p: Person, field_name: str, rng: random.Random) -> str:
    if field_name == "work_email":
        return _wrong_address(p, rng)
    if field_name == "title":
        return rng.choice([t for t in TITLES if t != p.title])
    return _namesake(p)


def _perplexity_field(p: Person, field_name: str) -> dict:
    if field_name not in PERPLEXITY:
        return {"value": None, "sources": []}
    rng = _rng("perplexity", field_name, p.key)
    right, wrong = PERPLEXITY[field_name]
    roll, truth = rng.random(), _truth(p, field_name)
    if roll < right and truth is not None:
        return {"value": truth, "sources": _right_sources(p, field_name, rng)}
    if right <= roll < right + wrong:
        return {"value": _wrong(p, field_name, rng), "sources": _wrong_sources(p, rng)}
    return {"value": None, "sources": []}


def perplexity_answer(lead: dict, wanted: list[str]
                      ) -> tuple[dict[str, dict], list[str]] | None:
    """A world lead's structured answer — per wanted field {"value", "sources"} (fields the
    world does not model are null) — and the answer's citations: every cited page and the
    company's own pages. None for a lead outside the world."""
    p = person_for(name=lead.get("name"), domain=lead.get("domain"), email=lead.get("email"))
    if p is None:
        return None
    fields = {f: _perplexity_field(p, f) for f in wanted}
    company = re.sub(r"[^a-z0-9]+", "-", p.company.lower())
    extra = [f"https://www.{p.site}/about", f"https://www.crunchbase.com/organization/{company}"]
    cited = [u for answer in fields.values() for u in answer["sources"]] + extra
    return fields, list(dict.fromkeys(cited))


def _linkedin_profiles(p: Person) -> list[str]:
    roll = _rng("social_links", p.key).random()
    right, ambiguous, wrong = SOCIAL["right"], SOCIAL["ambiguous"], SOCIAL["wrong"]
    if roll < right:
        return [p.linkedin_url]
    if roll < right + ambiguous:
        pair = [p.linkedin_url, _namesake(p)]
        return pair if roll < right + ambiguous / 2 else pair[::-1]
    return [_namesake(p)] if roll < right + ambiguous + wrong else []


def social_answer(query: str, networks) -> dict[str, list[str]] | None:
    """Social Links' `data` for a query naming a world person ("<name> <company>", their
    e-mail or LinkedIn URL); None for anyone else."""
    index = _index()
    p = (index.by_query.get(_norm(query)) or index.by_email.get(query.strip().lower())
         or index.by_linkedin.get(_url_key(query)))
    if p is None:
        return None
    profiles = _linkedin_profiles(p)
    return {n: (profiles if n == "linkedin" else []) for n in networks}
