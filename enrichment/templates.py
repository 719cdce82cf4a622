"""Templates: what a job finds out about a lead, and the waterfall of providers that may fill
each field (`templates.toml`, validated when this module is imported: at start-up).

A step is `provider.operation`. The steps of a template run in one order that respects every
field's list (a field's second provider is asked after its first) and every operation's
inputs (the Verifier, which needs `work_email`, after every step that may fill it): a
topological order, ties broken by where a step first appears in the file. A template whose
lists contradict each other has no such order and is refused.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .leads import LEAD_FIELDS
from .providers import operations

COMPANY = "company"
PERSON = "person"
DEFAULT_TEMPLATES_FILE = Path(__file__).with_name("templates.toml")


@dataclass(frozen=True)
class Step:
    provider: str
    operation: str

    def __str__(self) -> str:
        return f"{self.provider}.{self.operation}"


@dataclass(frozen=True)
class Template:
    name: str
    level: str  # COMPANY or PERSON
    description: str
    waterfall: tuple[tuple[str, tuple[Step, ...]], ...]  # (field, its steps in order)
    steps: tuple[Step, ...]  # every step, in the order the waterfall runs them
    searches: int = 0  # searches the research round wants; the plan's max_searches bounds it
    # A lead must carry one of these (besides the subject identifier); "a+b": both.
    requires_any: tuple[str, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.waterfall)

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(step.provider for step in self.steps))

    @property
    def person_level(self) -> bool:
        return self.level == PERSON

    def fields_for(self, step: Step) -> tuple[str, ...]:
        """The fields this step may be asked for."""
        return tuple(name for name, steps in self.waterfall if step in steps)

    def lead_fits(self, lead: dict) -> bool:
        return any(all(lead.get(part) for part in need.split("+"))
                   for need in self.requires_any)


def _order(name: str, waterfall: dict[str, tuple[Step, ...]], needs: dict[Step, tuple[str, ...]]
           ) -> tuple[Step, ...]:
    first_seen = list(dict.fromkeys(s for steps in waterfall.values() for s in steps))
    before: dict[Step, set[Step]] = {s: set() for s in first_seen}
    for steps in waterfall.values():
        for earlier, later in itertools.pairwise(steps):
            before[later].add(earlier)
    for step in first_seen:
        for need in needs[step]:
            before[step] |= {s for s in waterfall.get(need, ()) if s != step}
    order: list[Step] = []
    while len(order) < len(first_seen):
        ready = [s for s in first_seen if s not in order and before[s] <= set(order)]
        if not ready:
            raise ValueError(f"template {name!r}: the waterfalls ask for contradictory orders")
        order.append(ready[0])
    return tuple(order)


KEYS = frozenset({"level", "description", "searches", "requires_any", "fields"})


def _template(name: str, raw: dict) -> Template:
    known = operations()
    if raw.get("level") not in (COMPANY, PERSON):
        raise ValueError(f"template {name!r}: level must be {COMPANY!r} or {PERSON!r}")
    if unknown := set(raw) - KEYS:
        raise ValueError(f"template {name!r}: unknown keys {sorted(unknown)}")
    if not isinstance(raw.get("searches", 0), int) or raw.get("searches", 0) < 0:
        raise ValueError(f"template {name!r}: searches must be a whole number >= 0")
    for need in raw.get("requires_any") or ():
        if not set(str(need).split("+")) <= set(LEAD_FIELDS):
            raise ValueError(f"template {name!r}: requires_any {need!r} names no lead field")
    waterfall: dict[str, tuple[Step, ...]] = {}
    needs: dict[Step, tuple[str, ...]] = {}
    for field_name, entries in (raw.get("fields") or {}).items():
        steps = []
        for entry in entries:
            provider, _, operation = str(entry).partition(".")
            op = known.get(provider, {}).get(operation)
            if op is None:
                raise ValueError(f"template {name!r}, field {field_name!r}: unknown step "
                                 f"{entry!r} (known: providers {sorted(known)})")
            if op.fields is not None and field_name not in op.fields:
                raise ValueError(f"template {name!r}: {entry} cannot fill {field_name!r}")
            if op.person_only and raw["level"] != PERSON:
                raise ValueError(f"template {name!r}: {entry} is for person-level templates")
            step = Step(provider, operation)
            if step in steps:
                raise ValueError(f"template {name!r}, field {field_name!r}: {entry} twice")
            steps.append(step)
            needs[step] = op.needs
        if not steps:
            raise ValueError(f"template {name!r}, field {field_name!r}: no provider")
        waterfall[field_name] = tuple(steps)
    if not waterfall:
        raise ValueError(f"template {name!r} has no fields")
    return Template(
        name=name, level=raw["level"], description=str(raw.get("description", "")),
        waterfall=tuple(waterfall.items()), steps=_order(name, waterfall, needs),
        searches=int(raw.get("searches", 0)),
        requires_any=tuple(raw.get("requires_any") or ()),
    )


def load_templates(path: str | Path = DEFAULT_TEMPLATES_FILE) -> dict[str, Template]:
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    return {name: _template(name, spec) for name, spec in raw.items()}


TEMPLATES: dict[str, Template] = load_templates()
COMPANY_TEMPLATES = [t.name for t in TEMPLATES.values() if not t.person_level]
