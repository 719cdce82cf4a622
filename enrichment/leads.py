"""Lead identifiers: normalisation and hashing (DESIGN §3, §5)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

IDENTIFIER_FIELDS = ("email", "linkedin_url", "domain")


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
