"""Answer quality: the person_contact waterfall against each provider alone, on the labelled
world (`simulators/world.py`, its noise model printed first) — how many leads get a value,
how often a value is right, whether confidence predicts being right, and what a filled
field costs.

The provider fakes run in-process on free ports, unlimited and instant; the real clients and
the real waterfall (`enrichment.waterfall.enrich`) call them over HTTP. Each configuration
runs twice per lead:

- at min_confidence 0.5 (the API's default): what a job answers — fill rate, precision,
  cost, units charged. A waterfall at 0.5 asks the next provider when the first one's value
  is below 0.5, so this is not the same as gating a run at 0.0;
- at min_confidence 0.0: every value the waterfall settles on, with its confidence — the
  calibration columns (precision among values at ≥ 0.5, ≥ 0.8, ≥ 0.9).

Truth: the world's person; for email_status, what a perfect verifier says of the address the
job holds (`world.verifier_truth`: valid, invalid, accept_all, webmail).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from enrichment import db
from enrichment.config import Settings
from enrichment.providers import Spend
from enrichment.services import Services, build_services
from enrichment.templates import TEMPLATES
from enrichment.waterfall import Enriched, enrich
from simulators import world
from simulators.hunter import HunterConfig, HunterServer
from simulators.providers import SimConfig, SimulatorServer

from .stack import BENCH_DB, table

TEMPLATE = TEMPLATES["person_contact"]
REDIS = "redis://127.0.0.1:6379/12"
CONFIGS = {"hunter": ("hunter",), "perplexity": ("perplexity",),
           "social_links": ("social_links",), "waterfall": None}
BANDS = (0.5, 0.8, 0.9)
FILL_AT = 0.5
FILL_GAIN = 0.15  # the waterfall fills work_email for this much more than any one provider
PRECISION_AT = 0.8
PRECISION_TARGET = 0.95
WORKERS = 8
KEY = "bench-key"


def bench_settings(providers_url: str, hunter_url: str) -> Settings:
    return Settings(
        database_url=BENCH_DB, redis_url=REDIS, broker_url=REDIS,
        perplexity_api_base=providers_url, perplexity_api_key=KEY, perplexity_plan_rps=1000,
        social_links_api_base=providers_url, social_links_api_key=KEY,
        social_links_plan_rps=1000, hunter_api_base=hunter_url, hunter_api_key=KEY,
        hunter_finder_rps=1000, hunter_finder_rpm=100_000, hunter_verifier_rps=1000,
        hunter_verifier_rpm=100_000)


def run_all(svc: Services, leads: list[dict], providers: tuple[str, ...] | None,
            min_confidence: float) -> list[Enriched]:
    def one(lead: dict) -> Enriched:
        # A Spend of its own: call_policy() would share the base policy's among threads.
        return enrich(svc, TEMPLATE, lead, min_confidence, svc.call_policy(spend=Spend()),
                      max_searches=TEMPLATE.searches, providers=providers)

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(one, leads))


def _same(a: str, b: str) -> bool:
    return a.strip().casefold().rstrip("/") == b.strip().casefold().rstrip("/")


def truth(name: str, person: world.Person, address: str | None) -> str | None:
    """The right value of a field; email_status: the truth about `address`, the address the
    job holds."""
    if name == "email_status":
        return world.verifier_truth(address) if address else None
    return getattr(person, name)


def scored(results: list[Enriched], labelled, fallback: list[Enriched] | None = None
           ) -> dict[str, list[tuple[float, bool]]]:
    """Per field, (confidence, right) of every value returned. The address an email_status
    is about is the job's work_email, else (gated out) the 0.0 run's, else the lead's."""
    out: dict[str, list[tuple[float, bool]]] = {n: [] for n in TEMPLATE.fields}
    for i, (result, (lead, person)) in enumerate(zip(results, labelled, strict=True)):
        address = (result.fields.get("work_email")
                   or (fallback[i].fields.get("work_email") if fallback else None)
                   or lead.get("email"))
        for name, prov in result.provenance.items():
            right = truth(name, person, address)
            out[name].append((prov["confidence"],
                              right is not None and _same(result.fields[name], right)))
    return out


def precision(values: list[tuple[float, bool]], at: float) -> tuple[float | None, int]:
    kept = [ok for conf, ok in values if conf >= at]
    return (sum(kept) / len(kept) if kept else None), len(kept)


def cost_by_field(results: list[Enriched]) -> dict[str, Decimal]:
    """Each call's cost, shared equally among the fields it was asked for."""
    costs = {n: Decimal(0) for n in TEMPLATE.fields}
    for result in results:
        for call in result.trace:
            share = Decimal(call["cost_usd"]) / max(1, len(call["fields"]))
            for name in call["fields"]:
                costs[name] += share
    return costs


def fillable(providers: tuple[str, ...] | None) -> set[str]:
    return {name for name, steps in TEMPLATE.waterfall
            if providers is None or any(s.provider in providers for s in steps)}


def _cell(value: float | None, n: int | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" ({n})" if n is not None else "")


def config_rows(config: str, at_half: list[Enriched], at_zero: list[Enriched], labelled
                ) -> tuple[list[list], dict[str, float]]:
    """The table's rows for one configuration, and its fill rate per field."""
    n = len(labelled)
    half = scored(at_half, labelled, at_zero)
    zero = scored(at_zero, labelled)
    costs = cost_by_field(at_half)
    can = fillable(CONFIGS[config])
    rows, fills = [], {}
    for name in TEMPLATE.fields:
        if name not in can:
            rows.append([config, name] + ["-"] * 7)
            continue
        filled = len(half[name])
        fills[name] = filled / n
        gated = sum(1 for conf, _ in zero[name] if conf >= FILL_AT) / n
        bands = [_cell(*precision(zero[name], at)) for at in BANDS]
        per_fill = costs[name] / filled if filled else None
        rows.append([config, name, fills[name], gated, _cell(precision(half[name], 0)[0]),
                     *bands, f"{per_fill:.5f}" if per_fill is not None else "-"])
    every = [v for name in TEMPLATE.fields for v in half[name]]
    total = sum(costs.values(), Decimal(0))
    rows.append([config, "all fields", len(every) / (n * len(can)), "",
                 _cell(precision(every, 0)[0]),
                 *[_cell(*precision([v for f in zero.values() for v in f], at)) for at in BANDS],
                 f"{total / len(every):.5f}" if every else "-"])
    return rows, fills


def unpaid_mismatches(results: list[Enriched]) -> int:
    """Jobs whose charge (1 unit if match) disagrees with having a value ≥ FILL_AT."""
    return sum(1 for r in results
               if r.match != any(p["confidence"] >= FILL_AT for p in r.provenance.values()))


def targets(fills: dict[str, dict[str, float]], waterfall: tuple[list, list], labelled
            ) -> list[list]:
    best, single = max((f.get("work_email", 0.0), c) for c, f in fills.items()
                       if c != "waterfall")
    gain = fills["waterfall"]["work_email"] - best
    sure = [precision([v for f in scored(run, labelled).values() for v in f], PRECISION_AT)
            for run in waterfall]
    sure_ok = all(p is not None and p >= PRECISION_TARGET for p, _ in sure)
    wrong_units = unpaid_mismatches(waterfall[0])
    return [
        [f"waterfall work_email fill ≥ best single ({single}) + {FILL_GAIN:.2f}",
         f"{fills['waterfall']['work_email']:.3f} vs {best:.3f} (+{gain:.3f})",
         "PASS" if gain >= FILL_GAIN else "FAIL"],
        [f"precision ≥ {PRECISION_TARGET} among waterfall values at confidence "
         f"≥ {PRECISION_AT} (runs at {FILL_AT} / 0.0)",
         " / ".join(_cell(p, k) for p, k in sure), "PASS" if sure_ok else "FAIL"],
        [f"no unit charged without a value ≥ {FILL_AT} (match ⇔ a value ≥ {FILL_AT})",
         f"{wrong_units} job(s) disagree", "PASS" if wrong_units == 0 else "FAIL"],
    ]


def measure(svc: Services, labelled) -> None:
    leads = [lead for lead, _ in labelled]
    rows, fills, runs = [], {}, {}
    for config, providers in CONFIGS.items():
        runs[config] = (run_all(svc, leads, providers, FILL_AT),
                        run_all(svc, leads, providers, 0.0))
        more, fills[config] = config_rows(config, *runs[config], labelled)
        rows += more
    table(f"Quality: {TEMPLATE.name} on {len(leads)} labelled leads (fill and precision at "
          f"min_confidence {FILL_AT}; calibration from a run at 0.0)",
          ["config", "field", f"fill@{FILL_AT}", "fill (0.0 run gated)", "precision",
           *[f"prec ≥{b} (n)" for b in BANDS], "$ per filled"], rows)
    table("Targets", ["target", "measured", "result"],
          targets(fills, runs["waterfall"], labelled))


def run() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the fakes' request lines
    table("World noise model (simulators/world.py)", ["who", "outcome", "rate"],
          world.noise_model())
    db.ensure_database(BENCH_DB)
    unlimited = HunterConfig(finder_rps=0, finder_rpm=0, verifier_rps=0, verifier_rpm=0)
    with (SimulatorServer(SimConfig(latency_ms=0, perplexity_rps=0, social_rps=0)) as sim,
          HunterServer(unlimited, answers=world.WorldHunterAnswers()) as hunter):
        svc = build_services(bench_settings(sim.url, hunter.url))
        try:
            measure(svc, world.labelled())
        finally:
            svc.close()


if __name__ == "__main__":
    run()
