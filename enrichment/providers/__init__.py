"""External providers behind one interface: `Provider.fill`, asked by the waterfall
(`enrichment/waterfall.py`) for the fields of a job still missing.

A provider module (perplexity, social_links, hunter) declares its `OPERATIONS` — what each
call can fill and what it needs — and builds its client from `Settings`; `REGISTRY` below
names them. Adding a provider is a module and a line here, and its name in the templates'
waterfalls (`templates.toml`). The real clients speak HTTP with `requests`; tests and
`make run` point them at the bundled simulators through the *_API_BASE settings, so the real
code path always runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .http import CallPolicy, ProviderError, Spend

if TYPE_CHECKING:
    from ..config import Settings

# name → module; each module has `NAME`, `OPERATIONS` and `build(settings) -> Provider`.
REGISTRY = {
    "perplexity": "enrichment.providers.perplexity",
    "social_links": "enrichment.providers.social_links",
    "hunter": "enrichment.providers.hunter",
}


@dataclass(frozen=True)
class Operation:
    """One kind of call a provider makes. `fields`: the fields it can fill (None: any field a
    template names, as a web-research model can); `needs`: fields it needs known first (from
    an earlier step of the waterfall, or the lead) — the waterfall orders it after every step
    that may fill them."""

    name: str
    fields: frozenset[str] | None = None
    needs: tuple[str, ...] = ()
    person_only: bool = False  # sends a person's data: person-level templates only


@dataclass
class Candidate:
    """A value a provider offered for one field, with the provider's own signals
    (`enrichment/confidence.py` turns them into a confidence)."""

    value: str
    provider: str
    sources: list[str] = field(default_factory=list)  # URLs that support this value
    score: float | None = None  # the provider's own 0..1 score (Hunter's score / 100)
    verification: str | None = None  # valid|invalid|accept_all|webmail|disposable|unknown
    alternatives: int = 0  # other values it offered for the same field (ambiguity)
    record: bool = False  # the provider's own record matched to the lead (a profile found)
    # A verifier's status (the value is `valid`, `invalid`, …): the address it checked, and
    # the field that address came from (None: the lead's own) — the status then applies to
    # that field's value, and is answered only alongside it.
    checked: str | None = None
    checks: str | None = None


@dataclass
class Ask:
    """What the waterfall asks of one call: these `fields` about `lead`, knowing `known` (the
    values found so far, at or above the threshold)."""

    operation: str
    lead: dict
    fields: tuple[str, ...]
    known: dict[str, str]
    policy: CallPolicy
    person_level: bool = True  # the template's subject is a person (else a company)
    max_tokens: int = 1024
    max_searches: int = 1


@dataclass
class Answer:
    """What one call found: candidates by field, and the citations it read (the sources of
    the whole answer). `status` is `ok` (something found) or `no_result`; `quota_exhausted`
    (seconds until the provider's quota resets) tells the waterfall to skip this provider
    everywhere until then."""

    found: dict[str, Candidate] = field(default_factory=dict)
    citations: list[str] = field(default_factory=list)
    http_status: int | None = None
    quota_exhausted: float | None = None

    @property
    def status(self) -> str:
        return "ok" if self.found else "no_result"


class Provider(Protocol):
    name: str
    configured: bool  # False when no API key is set: the waterfall skips it

    def fill(self, ask: Ask) -> Answer:
        """Make one `ask.operation` call for `ask.fields`. Raises ProviderError when the call
        failed (retries inside the round's policy are the provider's own)."""


def build_providers(settings: Settings) -> dict[str, Provider]:
    return {name: importlib.import_module(module).build(settings)
            for name, module in REGISTRY.items()}


def operations() -> dict[str, dict[str, Operation]]:
    """Every registered provider's operations (start-up validation of the waterfalls)."""
    return {name: importlib.import_module(module).OPERATIONS
            for name, module in REGISTRY.items()}


__all__ = [
    "Answer",
    "Ask",
    "CallPolicy",
    "Candidate",
    "Operation",
    "Provider",
    "ProviderError",
    "Spend",
]
