"""Leads: identifiers, their normalisation and hashing, and which fields are personal.

A subject is known by the SHA-256 of a normalised identifier (trimmed, lower-cased). A job is
keyed by one identifier (`subject_identifier`) but found — for export, erasure, suppression —
by every personal identifier its lead carried (`person_hashes`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

IDENTIFIER_FIELDS = ("email", "linkedin_url", "domain")
PERSON_IDENTIFIERS = ("email", "linkedin_url")
PERSON_FIELDS = ("email", "linkedin_url", "name")  # never sent where person-level is off
COMPANY_FIELDS = ("domain", "company")
LEAD_FIELDS = ("email", "name", "company", "domain", "linkedin_url")  # api/schemas.LeadSchema


def normalise(value: str) -> str:
    return value.strip().lower()


def subject_identifier(lead: Mapping[str, str | None], person_level: bool = True
                       ) -> str | None:
    """Who a job is about, normalised. A person: their e-mail, else LinkedIn URL, else their
    name at their company (domain or company name) — never the company alone, so two people
    of one company are two subjects. A company: its domain, else an e-mail or profile at it,
    else its name."""
    if person_level:
        for name in PERSON_IDENTIFIERS:
            if (value := lead.get(name)) and value.strip():
                return normalise(value)
        return _name_at(lead)
    for name in ("domain", *PERSON_IDENTIFIERS):
        if (value := lead.get(name)) and value.strip():
            return normalise(value)
    company = (lead.get("company") or "").strip()
    return f"company:{normalise(company)}" if company else None


def _name_at(lead: Mapping[str, str | None]) -> str | None:
    """A person known by name at a company: `name:jane doe@acme.com`."""
    name, where = (lead.get("name") or "").strip(), lead.get("domain") or lead.get("company")
    if name and where and where.strip():
        return f"name:{' '.join(normalise(name).split())}@{normalise(where)}"
    return None


def subject_hash(identifier: str) -> str:
    return hashlib.sha256(normalise(identifier).encode()).hexdigest()


def person_hashes(lead: Mapping[str, str | None]) -> list[str]:
    """The hashes of every personal identifier the lead carries: e-mail, LinkedIn URL, and
    name at company."""
    found = {v for f in PERSON_IDENTIFIERS if (v := lead.get(f)) and v.strip()}
    if (named := _name_at(lead)) is not None:
        found.add(named)
    return sorted(subject_hash(v) for v in found)


def company_only(lead: Mapping[str, str | None]) -> dict:
    """The lead without its personal fields (what a company-level template may send where
    person-level enrichment is off)."""
    return {k: v for k, v in lead.items() if k in COMPANY_FIELDS and v}
