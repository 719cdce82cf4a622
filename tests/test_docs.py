"""The docs cannot drift from the code: every setting `Settings.from_env` reads is in
docs/operations.md with its default, the error table of docs/api.md lists exactly the problem
slugs the API can answer, and its routes table every route of the OpenAPI document."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from enrichment import config
from enrichment.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

ENV_READ = re.compile(
    r"""(?:env\.get\(|_(?:float|int|choice|port|readable_toml)\(\s*env\s*,\s*|\{)\s*"([A-Z][A-Z0-9_]+)\"""")
DASH = "\N{EN DASH}"
NONE_CELLS = {"", "-", DASH}


def section(text: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    ends = [m.start() for m in re.finditer(rf"^#{{1,{len(level)}}} ", text[start:], re.M)]
    return text[start:start + ends[0]] if ends else text[start:]


def cells(line: str) -> list[str]:
    """The cells of a markdown table row (`\\|` is not a separator)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


# --- 1. Settings.from_env and docs/operations.md ------------------------------------------


def env_reads() -> dict[str, str]:
    """Every variable `Settings.from_env` reads → the Settings field it sets."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(Settings.from_env)))
    func = tree.body[0]
    local = {}  # local name → the variables read to compute it
    for node in func.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            local[node.targets[0].id] = names_in(node.value)
    call = next(n for n in ast.walk(func) if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Name) and n.func.id == "cls")
    reads = {}
    for kw in call.keywords:
        # A local (`redis_url=redis_url`): what was read to compute it.
        found = (local.get(kw.value.id, []) if isinstance(kw.value, ast.Name)
                 else names_in(kw.value))
        if any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "ca_bundle"
               for n in ast.walk(kw.value)):
            found += ENV_READ.findall(inspect.getsource(config.ca_bundle))
        for name in found:
            reads[name] = kw.arg
    return reads


def names_in(node: ast.AST) -> list[str]:
    """Variable names read in an expression: string constants in upper snake case."""
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and re.fullmatch(r"[A-Z][A-Z0-9_]+", n.value)]


def documented_settings() -> dict[str, str]:
    """Variable → its default cell, from the table "Read by `enrichment/config.py`"."""
    text = (DOCS / "operations.md").read_text()
    table = section(section(text, "## Configuration"), "### Read by `enrichment/config.py`")
    out = {}
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        row = cells(line)
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", row[0])
        defaults = [d.strip() for d in row[1].split(",")]
        for i, name in enumerate(names):
            out[name] = defaults[i] if len(defaults) == len(names) else row[1]
    return out


def field_default(name: str):
    if name == "plans":  # a factory: the bundled table
        return config.DEFAULT_PLANS_FILE
    f = next(f for f in fields(Settings) if f.name == name)
    assert f.default is not MISSING, name
    return f.default


# A default chosen elsewhere than Settings: the cell must name what the code chooses.
DERIVED = {"PERPLEXITY_MODEL": ("perplexity/sonar", "sonar")}  # providers/perplexity.py


def default_matches(variable: str, field_name: str, cell: str) -> bool:
    plain = cell.replace("`", "").strip()
    if variable in DERIVED:
        return all(f"`{v}`" in cell for v in DERIVED[variable])
    if cell.strip("`") in env_reads() and cell.strip("`") != variable:  # its fallback
        probe = "probe://fallback"
        return getattr(Settings.from_env({cell.strip("`"): probe}), field_name) == probe
    default = field_default(field_name)
    if default is None:  # unset: nothing, or the library's own ("Stripe's")
        return plain in NONE_CELLS or plain.endswith("'s")
    if isinstance(default, bool):
        return plain.lower() == str(default).lower()
    if isinstance(default, Path):
        return str(default.relative_to(ROOT)) in plain
    try:
        return float(plain) == float(default)
    except (TypeError, ValueError):
        return plain == str(default)


def test_the_parser_finds_what_from_env_reads():
    reads = env_reads()
    expected = set(ENV_READ.findall(inspect.getsource(Settings.from_env)))
    expected |= set(ENV_READ.findall(inspect.getsource(config.ca_bundle)))
    assert set(reads) == expected
    assert {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE", "LOG_LEVEL", "PLANS_FILE", "ALERTS_FILE"} <= set(reads)
    assert reads["CELERY_BROKER_URL"] == "broker_url" and reads["REDIS_URL"] == "redis_url"


def test_every_setting_is_documented_with_its_default():
    documented = documented_settings()
    missing = sorted(set(env_reads()) - set(documented))
    assert not missing, f"not in docs/operations.md's configuration table: {missing}"
    wrong = {name: (documented[name], field_default(field_name))
             for name, field_name in env_reads().items()
             if not default_matches(name, field_name, documented[name])}
    assert not wrong, f"documented default ≠ Settings default: {wrong}"


def test_the_default_comparison_catches_drift():
    assert default_matches("PERPLEXITY_PLAN_RPS", "perplexity_plan_rps", "`2`")
    assert not default_matches("PERPLEXITY_PLAN_RPS", "perplexity_plan_rps", "`3`")
    assert default_matches("METRICS_TOKEN", "metrics_token", DASH)
    assert not default_matches("TRUSTED_PROXIES", "trusted_proxies", DASH)
    assert default_matches("CELERY_BROKER_URL", "broker_url", "`REDIS_URL`")
    assert not default_matches("CELERY_BROKER_URL", "broker_url", "`DATABASE_URL`")


# --- 2. Problem slugs and docs/api.md -----------------------------------------------------

# Slugs the code has that no HTTP route answers: they are not in the API's error table.
NOT_HTTP = {"no-stripe-catalog": "`enrichment billing attach` and the billing tasks only"}


def code_slugs() -> set[str]:
    """Every problem slug written in api/ and enrichment/: Problem(status, title, detail,
    slug), Refused(status, slug, …), any `slug=` argument, a class's `slug` attribute."""
    found = set()
    for path in [*(ROOT / "api").rglob("*.py"), *(ROOT / "enrichment").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                callee = getattr(node.func, "id", getattr(node.func, "attr", None))
                args = {"Problem": 3, "Refused": 1}
                if callee in args and len(node.args) > args[callee]:
                    found.add(const(node.args[args[callee]]))
                found |= {const(k.value) for k in node.keywords if k.arg == "slug"}
            elif isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if isinstance(stmt, ast.Assign):
                        for target in stmt.targets:
                            found |= class_slug(target, stmt.value)
                    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                        found |= class_slug(stmt.target, stmt.value)
    return {s for s in found if isinstance(s, str)}


def const(node: ast.AST):
    return node.value if isinstance(node, ast.Constant) else None


def class_slug(target: ast.AST, value: ast.AST) -> set:
    if isinstance(target, ast.Name) and target.id == "slug":
        return {const(value)}
    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
        return {const(v) for t, v in zip(target.elts, value.elts, strict=True)
                if isinstance(t, ast.Name) and t.id == "slug"}
    return set()


def documented_slugs() -> set[str]:
    errors = section((DOCS / "api.md").read_text(), "## Errors")
    return set(re.findall(r"^\| \d{3} \| `([a-z0-9-]+)` \|", errors, re.M))


def test_the_slug_finder_sees_every_kind_of_declaration():
    slugs = code_slugs()
    assert {"unauthorized", "hard-cap-reached", "not-found", "validation-error",
            "no-billing-account", "bad-webhook-signature", "payment-provider-error"} <= slugs


def test_the_error_table_lists_exactly_the_slugs_the_api_answers():
    slugs, documented = code_slugs(), documented_slugs()
    assert set(NOT_HTTP) <= slugs, "NOT_HTTP names a slug the code no longer has"
    assert not documented & set(NOT_HTTP)
    assert not documented - slugs, f"documented, answered by nothing: {documented - slugs}"
    missing = slugs - set(NOT_HTTP) - documented
    assert not missing, f"answered, not in docs/api.md's error table: {missing}"


# --- 3. Routes of the OpenAPI document and docs/api.md ------------------------------------


def documented_routes() -> set[tuple[str, str]]:
    routes = section((DOCS / "api.md").read_text(), "## Routes")
    out = set()
    for line in routes.splitlines():
        if re.match(r"\| [A-Z]+ \| `", line):
            row = cells(line)
            for path in re.findall(r"`(/[^`]*)`", row[1]):
                out.add((row[0], path.split("?", 1)[0]))
    return out


@pytest.mark.usefixtures("db")
def test_every_route_of_the_openapi_document_is_in_the_routes_table(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    operations = {(method.upper(), path) for path, ops in paths.items() for method in ops
                  if method in ("get", "post", "put", "patch", "delete")}
    assert operations
    missing = sorted(operations - documented_routes())
    assert not missing, f"not in docs/api.md's routes table: {missing}"
