"""How sure a value is: the one rule, deterministic, from the providers' own signals
(docs/api.md#provenance).

1. A base from the provider's evidence: its own score where it gives one (Hunter's 0-100
   score / 100); a record the provider matched to the lead (a profile a lookup service
   returned for it) 0.90; otherwise the independent sites among the value's sources — none
   0.30, one 0.60, two 0.80, three or more 0.90 (sites: host names without `www.`, reduced
   to their registrable part, so two pages of one site count once).
2. Ambiguity: a provider that offered n values for the field (three LinkedIn profiles for
   one name) gives the first one 1/n of its base.
3. A verifier's status for an e-mail address: `valid` raises it to at least 0.90;
   `accept_all` caps it at 0.60 (the domain accepts any address), `unknown` at 0.50,
   `webmail` at 0.40 (not a work address), `disposable` at 0.10, `invalid` at 0.05.
4. A value with no source is at most 0.45: below the default threshold, so a guess is never
   answered (nor charged) unless the caller asks for guesses.
5. Agreement: two providers giving the same value (compared case-insensitively) combine as
   independent evidence, 1 - (1 - a)(1 - b), and their sources are joined.
6. Nothing is certain: at most 0.99. Rounded to two decimals.
7. A verifier's status (`email_status`) is as sure as the check — the check is its source:
   0.90 for `valid`, `invalid`, `webmail` and `disposable`, 0.70 for `accept_all`, 0.30 for
   `unknown`. It is answered only with the address it checked: the lead's own, or the
   `work_email` answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from .providers import Candidate

MAX = 0.99
NO_SOURCE_CAP = 0.45
BY_SITES = (0.30, 0.60, 0.80, 0.90)  # 0, 1, 2, 3+ independent sites
RECORD = 0.90
VERIFIED_FLOOR = 0.90
STATUS_CERTAINTY = {"valid": 0.90, "invalid": 0.90, "webmail": 0.90, "disposable": 0.90,
                    "accept_all": 0.70, "unknown": 0.30}
VERIFICATION_CAP = {"accept_all": 0.60, "unknown": 0.50, "webmail": 0.40, "disposable": 0.10,
                    "invalid": 0.05}
# Second-level labels under which a registrable name has three labels (example.co.uk).
SHARED_SECOND_LEVEL = frozenset({"co", "com", "org", "net", "gov", "ac", "edu"})


def site(url: str) -> str:
    host = (urlsplit(url).hostname or "").removeprefix("www.")
    labels = host.split(".")
    keep = 3 if len(labels) >= 3 and labels[-2] in SHARED_SECOND_LEVEL \
        and len(labels[-1]) == 2 else 2
    return ".".join(labels[-keep:])


def sites(urls: list[str]) -> int:
    return len({site(u) for u in urls} - {""})


@dataclass
class Value:
    """A field's value as the waterfall holds it: the best candidate so far and how sure."""

    value: str
    provider: str
    confidence: float
    sources: list[str] = field(default_factory=list)
    verification: str | None = None
    checked: str | None = None  # a status: the address it is about (Candidate.checked)
    checks: str | None = None  # …and the field that address is the value of

    def provenance(self) -> dict:
        out: dict = {"confidence": self.confidence, "sources": self.sources,
                     "provider": self.provider}
        if self.verification is not None:
            out["verification"] = self.verification
        if self.checks is not None:
            out["of"] = self.checks  # a status: the field whose address it checked
        return out


def _finish(confidence: float, sources: list[str] | None, verification: str | None) -> float:
    """Rules 3, 4 and 6 (`sources` None: a status, whose check is its source)."""
    if verification == "valid":
        confidence = max(confidence, VERIFIED_FLOOR)
    elif verification in VERIFICATION_CAP:
        confidence = min(confidence, VERIFICATION_CAP[verification])
    if sources is not None and not sources:
        confidence = min(confidence, NO_SOURCE_CAP)
    return round(min(MAX, max(0.0, confidence)), 2)


def of(c: Candidate) -> Value:
    """Rules 1-4, 6 and 7 for one provider's candidate."""
    if c.checked is not None:  # a status: rule 7
        return Value(c.value, c.provider, _finish(STATUS_CERTAINTY.get(c.value, 0.0),
                                                  None, None),
                     list(c.sources), checked=c.checked, checks=c.checks)
    if c.score is not None:
        base = c.score
    elif c.record:
        base = RECORD
    else:
        base = BY_SITES[min(sites(c.sources), len(BY_SITES) - 1)]
    base /= 1 + c.alternatives
    return Value(c.value, c.provider, _finish(base, c.sources, c.verification),
                 list(c.sources), c.verification)


def same(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def merge(held: Value | None, new: Value) -> Value:
    """The field's value after another provider's candidate: agreement combines (rule 5),
    otherwise the surer one stays (the earlier one on a tie)."""
    if held is None:
        return new
    if not same(held.value, new.value):
        return new if new.confidence > held.confidence else held
    sources = held.sources + [u for u in new.sources if u not in held.sources]
    combined = 1 - (1 - held.confidence) * (1 - new.confidence)
    lead = held if held.confidence >= new.confidence else new
    verification = held.verification or new.verification
    # a verifier's cap holds whoever else names the address (rule 3 after rule 5)
    return replace(lead, sources=sources, verification=verification,
                   confidence=_finish(combined, sources, verification))


def verified(held: Value, status: str) -> Value:
    """An address a verifier checked: its status joins the address's value (rule 3)."""
    return replace(held, verification=status,
                   confidence=_finish(held.confidence, held.sources, status))


def answered(values: Mapping[str, Value], name: str, threshold: float) -> bool:
    """Whether the field's value is answered at `threshold`: sure enough, and — for a
    verifier's status — checked against the address that is answered (rule 7)."""
    v = values.get(name)
    if v is None or v.confidence < threshold:
        return False
    if v.checks is None:  # not a status, or a status of the lead's own address
        return True
    about = values.get(v.checks)
    return about is not None and about.confidence >= threshold and same(
        about.value, v.checked or "")


def gate(values: Mapping[str, Value], names: tuple[str, ...], threshold: float
         ) -> tuple[dict, dict, float, bool]:
    """What a job answers at `threshold`: fields (a value below it is null), provenance of
    the values kept, completeness and match over those alone."""
    fields_out: dict = dict.fromkeys(names)
    provenance = {}
    for name in names:
        v = values.get(name)
        if v is not None and answered(values, name, threshold):
            fields_out[name] = v.value
            provenance[name] = v.provenance()
    kept = len(provenance)
    return fields_out, provenance, round(kept / len(names), 3) if names else 0.0, kept > 0


def narrow(fields: dict, provenance: dict, threshold: float) -> tuple[dict, dict, float, bool]:
    """A stored answer (gated at a threshold at most `threshold`) gated again at
    `threshold`: the same result as gating the original values there."""
    kept = {n: p for n, p in provenance.items() if p["confidence"] >= threshold}
    kept = {n: p for n, p in kept.items() if p.get("of") is None or p["of"] in kept}
    out = {n: (v if n in kept else None) for n, v in fields.items()}
    return out, kept, round(len(kept) / len(out), 3) if out else 0.0, bool(kept)
