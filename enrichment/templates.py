"""Templates: what a job finds out about a lead, and which providers it asks."""

from __future__ import annotations

from dataclasses import dataclass

COMPANY = "company"
PERSON = "person"
RESEARCH = "research"  # Perplexity
SOCIAL = "social"  # Social Links


@dataclass(frozen=True)
class Template:
    name: str
    level: str  # COMPANY or PERSON
    description: str
    research_fields: tuple[str, ...] = ()
    social_fields: tuple[str, ...] = ()
    searches: int = 0  # searches the research round wants; the plan's max_searches bounds it
    # A lead must carry at least one of these (besides the subject identifier).
    requires_any: tuple[str, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        return self.research_fields + self.social_fields

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(
            p for p, f in ((RESEARCH, self.research_fields), (SOCIAL, self.social_fields)) if f
        )

    @property
    def person_level(self) -> bool:
        return self.level == PERSON


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            name="company_profile",
            level=COMPANY,
            description="Company-level profile: what the company does, where, how big.",
            research_fields=(
                "description",
                "industry",
                "headquarters",
                "employee_range",
                "founded_year",
                "website",
            ),
            searches=3,
            requires_any=("domain", "company", "email"),
        ),
        Template(
            name="person_basic",
            level=PERSON,
            description="Person-level research (role, company, location) plus social profiles.",
            research_fields=("title", "company", "location", "seniority", "summary"),
            social_fields=("linkedin", "twitter"),
            searches=3,
            requires_any=("email", "linkedin_url", "name"),
        ),
        Template(
            name="person_social",
            level=PERSON,
            description="Person-level social profile links only.",
            social_fields=("linkedin", "twitter", "facebook", "instagram", "github"),
            requires_any=("email", "linkedin_url", "name"),
        ),
    )
}

COMPANY_TEMPLATES = [t.name for t in TEMPLATES.values() if not t.person_level]
