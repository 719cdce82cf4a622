"""Leads: identifiers, their normalisation and hashing, and which fields are personal.

A subject is known by the SHA-256 of a normalised identifier (trimmed, lower-cased). A job is
keyed by one identifier — the first present of email, linkedin_url, domain — but found (for
export, erasure, suppression) by every personal identifier its lead carried.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

IDENTIFIER_FIELDS = ("email", "linkedin_url", "domain")
PERSON_IDENTIFIERS = ("email", "linkedin_url")
PERSON_FIELDS = ("email", "linkedin_url", "name")  # never sent where person-level is off
COMPANY_FIELDS = ("domain", "company")


def normalise(value: str) -> str:
    return value.strip().lower()


def subject_identifier(lead: Mapping[str, str | None]) -> str | None:
    """The first present of email, linkedin_url, domain, normalised."""
    for name in IDENTIFIER_FIELDS:
        value = lead.get(name)
        if value and value.strip():
            return normalise(value)
    return None


def subject_hash(identifier: str) -> str:
    return hashlib.sha256(normalise(identifier).encode()).hexdigest()


def person_hashes(lead: Mapping[str, str | None]) -> list[str]:
    """The hashes of every personal identifier the lead carries."""
    return sorted({subject_hash(v) for f in PERSON_IDENTIFIERS if (v := lead.get(f))
                   and v.strip()})


def company_only(lead: Mapping[str, str | None]) -> dict:
    """The lead without its personal fields (what a company-level template may send where
    person-level enrichment is off)."""
    return {k: v for k, v in lead.items() if k in COMPANY_FIELDS and v}
