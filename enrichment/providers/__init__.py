"""External research providers behind two small interfaces.

`ResearchProvider` (Perplexity, LLM web search) and `SocialProvider` (Social Links Search).
The real clients speak HTTP with `requests`; tests and `make run` point them at the bundled
simulator through the *_API_BASE settings, so the real code path always runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from ..templates import Template
from .http import CallPolicy, ProviderError, Spend


@dataclass
class ResearchResult:
    fields: dict[str, str | None]
    citations: list[str]
    tokens: int = 0
    searches: int = 0
    cost_usd: Decimal | None = None  # as reported by the provider, if it reports one


@dataclass
class SocialResult:
    links: dict[str, list[str]] = field(default_factory=dict)
    requests: int = 0


class ResearchProvider(Protocol):
    name: str

    def research(
        self, lead: dict, template: Template, *, max_tokens: int, max_searches: int,
        policy: CallPolicy,
    ) -> ResearchResult: ...


class SocialProvider(Protocol):
    name: str

    def lookup(self, lead: dict, networks: tuple[str, ...], *, policy: CallPolicy) -> SocialResult:
        ...


__all__ = [
    "CallPolicy",
    "ProviderError",
    "ResearchProvider",
    "ResearchResult",
    "SocialProvider",
    "SocialResult",
    "Spend",
]
