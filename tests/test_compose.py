"""docker-compose.yml as shipped, read from the files (no Docker engine needed): every setting
the code reads reaches the containers; .env.example documents every variable compose uses, with
the real defaults, and starts the stack as it is; every service has a health check; stops
outlast a provider round; Prometheus scrapes the API and every worker and loads the alert rules;
the entrypoint runs every role compose asks for. `docker compose config` checks the file too
where the docker CLI has compose."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from enrichment.config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
ENTRYPOINT = ROOT / "docker-entrypoint.sh"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
IMAGE = "lead-enrichment"

# Read by one role only: passed to the services that run it, not to every app container.
ROLE_VARS = {
    "WEB_CONCURRENCY": {"api"},
    "WEB_THREADS": {"api"},
    "WORKER_METRICS_PORT": {"worker", "webhooks"},
    "WEBHOOK_CONCURRENCY": {"webhooks"},
    "FLOWER_BASIC_AUTH": {"flower"},
}
# Read by the simulator role as well: it enforces the provider plans' limits.
SIMULATOR_VARS = {"PERPLEXITY_PLAN_RPS", "SOCIAL_LINKS_PLAN_RPS"}
# Read by the code but deliberately not passed by compose (the code's default applies), with
# the reason. None at present: every setting can be changed from .env.
# Like HTTPS_PROXY and NO_PROXY (read through requests), a private CA bundle needs a file
# mounted into the containers: a deployment behind such a proxy adds both in an override.
NOT_PASSED: dict[str, str] = dict.fromkeys(
    ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"),
    "the CA bundle file must be mounted too: a compose override sets it")
# Services without a health check, with the reason.
NO_HEALTHCHECK = {"migrate": "one-shot: the app services wait for it to exit 0"}
# Stopped while a job's provider round may be running (a worker, or beat/API mid-publish).
GRACEFUL = ("api", "worker", "webhooks", "beat")

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
SOURCE_READS = (
    re.compile(r"\b(?:os\.environ|env)\.get\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),
    re.compile(r"\bos\.getenv\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),
    re.compile(r"\b(?:os\.environ|env)\[\s*[\"']([A-Z][A-Z0-9_]*)[\"']\s*\]"),
    re.compile(r"\(\s*env\s*,\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),  # helpers: _int(env, "NAME", …)
)


def role(service: str) -> str | None:
    """The entrypoint role a service of our image runs."""
    spec = SERVICES[service]
    return spec["command"][0] if spec.get("image", "").startswith(IMAGE) else None


APP_SERVICES = sorted(s for s in SERVICES if role(s) not in (None, "simulator"))


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    assert isinstance(env, dict), f"{service}: environment as a mapping, please"
    return env


class Recorder(dict):
    """An empty environment that notes every name asked of it."""

    def __init__(self):
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.asked.add(key)
        return super().__contains__(key)


def settings_reads() -> set[str]:
    env = Recorder()
    Settings.from_env(env)
    return env.asked


def source_reads() -> set[str]:
    """Environment reads in the server's code (the client package and `make run` excepted)."""
    files = [ROOT / "beat_schedule.py"]
    for package in ("enrichment", "api", "workers"):
        files += (ROOT / package).rglob("*.py")
    return {name for f in files for pattern in SOURCE_READS
            for name in pattern.findall(f.read_text())}


def entrypoint_reads() -> set[str]:
    return set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", ENTRYPOINT.read_text()))


def entrypoint_defaults() -> dict[str, str]:
    return {name: default for name, _, default
            in re.findall(r"\$\{([A-Z][A-Z0-9_]*)(:-)([^}]*)\}", ENTRYPOINT.read_text())}


def compose_interpolations() -> list[tuple[str, str, str]]:
    """(name, operator, argument) of every ${…} in the file; `$$` is a literal dollar."""
    return INTERPOLATION.findall(COMPOSE_TEXT.replace("$$", ""))


def compose_defaults() -> dict[str, str]:
    return {name: arg for name, op, arg in compose_interpolations() if op in (":-", "-")}


def env_example() -> dict[str, tuple[str, bool]]:
    """NAME -> (value, commented out) for every `NAME=value` or `# NAME=value` line."""
    found = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            assert m[2] not in found, f".env.example sets {m[2]} twice"
            found[m[2]] = (m[3], bool(m[1]))
    return found


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_every_variable_the_code_reads_reaches_the_containers():
    reads = settings_reads() | source_reads() | entrypoint_reads()
    assert {"DATABASE_URL", "WORKER_METRICS_PORT", "WEB_CONCURRENCY"} <= reads  # the scan works
    assert {"api", "worker", "webhooks", "beat", "flower", "migrate"} <= set(APP_SERVICES)
    missing = []
    for name in sorted(reads - NOT_PASSED.keys()):
        services = set(ROLE_VARS.get(name, APP_SERVICES))
        if name in SIMULATOR_VARS:
            services.add("simulator")
        missing += [f"{name} → {s}" for s in sorted(services) if name not in environment(s)]
    assert not missing, "not passed to the containers (add to x-app's environment, or to " \
                        f"NOT_PASSED with the reason): {missing}"
    assert not NOT_PASSED.keys() & {n for s in SERVICES for n in environment(s)}


def test_a_variable_left_empty_is_the_code_default():
    # x-app passes `NAME: ${NAME:-}`: an unset variable arrives empty, which must mean unset.
    default = Settings.from_env({})
    passed_empty = [name for name, value in environment("api").items()
                    if value == f"${{{name}:-}}"]
    assert len(passed_empty) > 30
    for name in passed_empty:
        assert Settings.from_env({name: ""}) == default, name


def test_env_example_documents_every_variable_compose_uses():
    used = {name for name, _, _ in compose_interpolations()}
    documented = env_example()
    assert sorted(used - documented.keys()) == []
    stale = {n for n in documented if not n.startswith("COMPOSE_")} - used
    assert sorted(stale) == [], "documented in .env.example but not used by docker-compose.yml"
    bare = re.findall(r"\$([A-Za-z_]\w*)", COMPOSE_TEXT.replace("$$", ""))
    assert bare == [], "write ${NAME} so this test sees it"


def test_env_example_defaults_are_the_real_ones():
    # `# NAME=value` documents the default: what compose, the entrypoint or the code uses
    # when NAME is unset, in that order.
    compose, entry = compose_defaults(), entrypoint_defaults()
    default, reads = Settings.from_env({}), settings_reads()
    for name, (value, commented) in env_example().items():
        if not commented:
            continue
        if compose.get(name):
            assert value == compose[name], name
        elif name in entry:
            assert value == entry[name], name
        else:
            assert name in reads, f"{name}: no default to document"
            assert Settings.from_env({name: value}) == default, name


def test_env_example_starts_the_stack_with_the_simulator():
    example = {name: value for name, (value, commented) in env_example().items()
               if not commented}
    required = {name for name, op, _ in compose_interpolations() if op in (":?", "?")}
    assert "METRICS_TOKEN" in required
    for name in required | {"FLOWER_BASIC_AUTH"}:  # Flower refuses to start without it
        assert example.get(name), f".env.example must set {name} for the stack to start"
        assert "change-me" in example[name], f"{name}: an obvious placeholder, please"
    # No provider, Stripe or PostHog key: the simulator answers, billing and events stay local.
    for name in ("PERPLEXITY_API_KEY", "SOCIAL_LINKS_API_KEY", "STRIPE_API_KEY",
                 "POSTHOG_API_KEY"):
        assert example.get(name) == "", name
    assert "simulator" in example["COMPOSE_PROFILES"].split(",")
    assert SERVICES["simulator"]["profiles"] == ["simulator"]
    for service in APP_SERVICES:
        assert environment(service)["PROVIDER_SIMULATOR_URL"] == "http://simulator:8010"
    assert "--port 8010" in ENTRYPOINT.read_text()


def run_entrypoint(env: dict[str, str]) -> subprocess.CompletedProcess:
    """The entrypoint with `env` as its role: it prints the environment the process gets."""
    return subprocess.run(["sh", str(ENTRYPOINT), "env"], env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, text=True, check=True, timeout=10)


def test_entrypoint_uses_the_simulator_only_without_provider_keys(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_1.db").write_text("stale")
    out = run_entrypoint({"PROVIDER_SIMULATOR_URL": "http://simulator:8010",
                          "PROMETHEUS_MULTIPROC_DIR": str(metrics),
                          "METRICS_TOKEN": "change-me-metrics-token"})
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert env["PERPLEXITY_API_BASE"] == env["SOCIAL_LINKS_API_BASE"] == "http://simulator:8010"
    assert env["PERPLEXITY_API_KEY"] == env["SOCIAL_LINKS_API_KEY"] == "simulator"
    assert list(metrics.iterdir()) == []  # started empty
    assert "METRICS_TOKEN is the .env.example placeholder" in out.stderr

    out = run_entrypoint({"PROVIDER_SIMULATOR_URL": "http://simulator:8010",
                          "PERPLEXITY_API_KEY": "pplx-real", "METRICS_TOKEN": "s3cret"})
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert env["PERPLEXITY_API_KEY"] == "pplx-real"
    assert "PERPLEXITY_API_BASE" not in env and "SOCIAL_LINKS_API_KEY" not in env
    assert out.stderr == ""


def test_migrate_syncs_the_stripe_catalog_only_with_a_key(tmp_path):
    # A stand-in `enrichment` that logs its arguments; Stripe's part fails.
    calls = tmp_path / "calls"
    fake = tmp_path / "enrichment"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n[ "$1" != billing ]\n')
    fake.chmod(0o755)
    path = f"{tmp_path}:{os.environ['PATH']}"
    for stripe_key, expected in (("", "db upgrade\n"),
                                 ("sk_test_1", "db upgrade\nbilling sync-catalog\n")):
        calls.write_text("")
        out = subprocess.run(["sh", str(ENTRYPOINT), "migrate"], capture_output=True, text=True,
                             env={"PATH": path, "STRIPE_API_KEY": stripe_key}, timeout=10)
        assert out.returncode == 0, out.stderr  # a Stripe failure does not stop the stack
        assert calls.read_text() == expected
        assert ("Stripe catalog not synced" in out.stderr) == bool(stripe_key)


def test_entrypoint_runs_every_role_compose_uses():
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)
    text = ENTRYPOINT.read_text()
    labels = set(re.findall(r"^\s*([a-z]+)\)", text, re.MULTILINE))
    roles = {role(s) for s in SERVICES} - {None}
    assert roles == {"api", "worker", "webhooks", "beat", "flower", "migrate", "simulator"}
    assert sorted(roles - labels) == []
    assert os.access(ENTRYPOINT, os.X_OK)


def test_every_service_has_a_healthcheck():
    for name, spec in SERVICES.items():
        if name in NO_HEALTHCHECK:
            assert "healthcheck" not in spec
            continue
        check = spec.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        test = check["test"]
        if test[:3] == ["CMD", "python", "-c"]:
            compile(test[3], f"{name} healthcheck", "exec")
    # The ports and files the checks look at are the ones the services use.
    assert "127.0.0.1:8000/readyz" in str(SERVICES["api"]["healthcheck"])
    for worker in ("worker", "webhooks"):
        port = environment(worker)["WORKER_METRICS_PORT"]
        assert f"127.0.0.1:{port}/" in str(SERVICES[worker]["healthcheck"])
    assert "127.0.0.1:5555/healthcheck" in str(SERVICES["flower"]["healthcheck"])
    schedule = re.search(r"--schedule (\S+)", ENTRYPOINT.read_text())[1]
    assert f"glob.glob('{schedule}*')" in str(SERVICES["beat"]["healthcheck"])


def test_stops_outlast_a_provider_round():
    round_seconds = Settings().provider_round_seconds
    for name in GRACEFUL:
        grace = seconds(SERVICES[name].get("stop_grace_period", "10s"))
        assert grace >= max(35, round_seconds + 5), name


def test_prometheus_scrapes_the_api_and_every_worker_and_loads_the_rules():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    rule_files = [PROMETHEUS_DIR / f for f in config["rule_files"]]
    assert PROMETHEUS_DIR / "alerts.yml" in rule_files
    assert all(f.exists() for f in rule_files)

    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"api", "worker", "webhooks"} <= jobs.keys()
    api = jobs["api"]
    assert api["static_configs"] == [{"targets": ["api:8000"]}]
    assert "8000:8000" in SERVICES["api"]["ports"]
    assert api.get("metrics_path", "/metrics") == "/metrics"
    # The token file is written from METRICS_TOKEN when Prometheus starts, in memory.
    prometheus = SERVICES["prometheus"]
    token_file = api["authorization"]["credentials_file"]
    assert f"\"$$METRICS_TOKEN\" > {token_file} " in " ".join(prometheus["entrypoint"])
    assert str(Path(token_file).parent) in prometheus["tmpfs"]
    assert prometheus["environment"]["METRICS_TOKEN"].startswith("${METRICS_TOKEN:?")
    for worker in ("worker", "webhooks"):
        sd = jobs[worker]["dns_sd_configs"]
        assert sd == [{"names": [worker], "type": "A",
                       "port": int(environment(worker)["WORKER_METRICS_PORT"])}]

    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert all(p.startswith("127.0.0.1:") for p in prometheus["ports"])


def test_alert_rules_parse_and_name_real_metrics():
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    names = [rule["alert"] for rule in rules]
    assert rules and len(set(names)) == len(names)
    metrics_source = (ROOT / "enrichment" / "metrics.py").read_text()
    for rule in rules:
        assert rule["expr"].strip() and rule["annotations"]["summary"]
        for metric in re.findall(r"\benrichment_\w+", rule["expr"]):
            base = re.sub(r"_(total|sum|count|bucket)$", "", metric)
            assert f'"{base}"' in metrics_source, f"{rule['alert']}: unknown metric {metric}"


def compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        out = subprocess.run(["docker-compose", "version", "--short"], capture_output=True,
                             text=True)
        if out.returncode == 0 and out.stdout.strip().lstrip("v").startswith("2"):
            return ["docker-compose"]
    return None


def test_docker_compose_config(tmp_path):
    command = compose_command()
    if command is None:
        pytest.skip("no docker compose here")
    # Only .env.example: neither this test's environment nor a developer's .env counts.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_CONFIG")}
    base = [*command, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml")]

    def config(env_file: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, "--env-file", str(env_file), "config", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    shipped = config(ROOT / ".env.example", "--services")
    assert shipped.returncode == 0, shipped.stderr
    assert "simulator" in shipped.stdout.split()
    assert config(ROOT / ".env.example", "-q").returncode == 0
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = config(empty, "-q")
    assert refused.returncode != 0 and "METRICS_TOKEN" in refused.stderr
