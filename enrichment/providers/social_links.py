"""Social Links Search (RapidAPI): `GET /search-social-links?query=…&social_networks=…`."""

from __future__ import annotations

from urllib.parse import urlparse

from ..config import Settings
from . import Answer, Ask, Candidate, Operation
from .http import ProviderError, call_json, new_session

NAME = "social_links"
NETWORKS = ("facebook", "tiktok", "instagram", "snapchat", "twitter", "youtube", "linkedin",
            "github", "pinterest")
# A field names its network ("linkedin"), or its network's URL ("linkedin_url").
OPERATIONS = {"search": Operation(
    "search", frozenset(NETWORKS) | frozenset(f"{n}_url" for n in NETWORKS))}


def build(settings: Settings) -> SocialLinksClient:
    return SocialLinksClient(settings.social_links_api_base, settings.social_links_api_key,
                             settings.ca_bundle)


def build_query(lead: dict) -> str:
    if lead.get("name"):
        return " ".join(v for v in (lead["name"], lead.get("company")) if v)
    if lead.get("linkedin_url"):
        return lead["linkedin_url"]
    return lead.get("email") or lead.get("domain") or ""


class SocialLinksClient:
    name = NAME

    def __init__(self, base: str, api_key: str | None, ca_bundle: str | None = None):
        self.base = base.rstrip("/")
        self.session = new_session(self.base, ca_bundle)
        host = urlparse(self.base).netloc
        self.session.headers["x-rapidapi-host"] = host
        if api_key:
            self.session.headers["x-rapidapi-key"] = api_key
        self.configured = bool(api_key)

    def fill(self, ask: Ask) -> Answer:
        """The profiles found for each network asked: the first is the value (its own page
        its source); the others make it ambiguous (confidence)."""
        networks = {f: f.removesuffix("_url") for f in ask.fields}
        wanted = sorted({n for n in networks.values() if n in NETWORKS})
        body = call_json(
            self.session, NAME, "GET", f"{self.base}/search-social-links", ask.policy,
            params={"query": build_query(ask.lead), "social_networks": ",".join(wanted)},
        )
        ask.policy.spend.social_requests += 1
        if body.get("status") != "OK":
            raise ProviderError(NAME, f"status {body.get('status')!r}")
        data = body.get("data") or {}
        found = {}
        for field_name, network in networks.items():
            urls = [u for u in (data.get(network) or [])
                    if isinstance(u, str) and u.startswith(("https://", "http://"))]
            if urls:
                found[field_name] = Candidate(urls[0], NAME, [urls[0]], record=True,
                                              alternatives=len(urls) - 1)
        return Answer(found, [c.value for c in found.values()], ask.policy.last_status)
