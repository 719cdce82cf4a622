"""Social Links Search (RapidAPI): `GET /search-social-links?query=…&social_networks=…`."""

from __future__ import annotations

from urllib.parse import urlparse

from . import SocialResult
from .http import CallPolicy, ProviderError, call_json, new_session

NAME = "social_links"
NETWORKS = ("facebook", "tiktok", "instagram", "snapchat", "twitter", "youtube", "linkedin",
            "github", "pinterest")


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

    def lookup(self, lead: dict, networks: tuple[str, ...], *, policy: CallPolicy) -> SocialResult:
        wanted = [n for n in networks if n in NETWORKS]
        body = call_json(
            self.session, NAME, "GET", f"{self.base}/search-social-links", policy,
            params={"query": build_query(lead), "social_networks": ",".join(wanted)},
        )
        policy.spend.social_requests += 1
        if body.get("status") != "OK":
            raise ProviderError(NAME, f"status {body.get('status')!r}")
        data = body.get("data") or {}
        links = {
            n: [u for u in (data.get(n) or []) if isinstance(u, str) and u.startswith("http")]
            for n in wanted
        }
        return SocialResult(links=links, requests=1)
