"""Fixtures on the real thing: PostgreSQL (a test database, recreated per session), Redis
(dedicated DB numbers), the provider simulator over HTTP, and a Celery worker subprocess.

The clock. Every `Services` of the session — the `services` fixture, and any the code under
test builds (`api.create_app()`, the CLI, the worker and gunicorn subprocesses) — reads one
clock, `session_clock()`: real time, or, with TEST_NOW set (ISO 8601, UTC, e.g.
`TEST_NOW=2026-12-31T23:59:00Z`), real time shifted so that the session starts at TEST_NOW
(time still moves). A test that needs "now" takes it from the services (`db.clock()`), never
from `datetime.now()`, and never mixes it with PostgreSQL's now() in one assertion.
PostgreSQL and Redis keep real time: a shifted run shows where code mixes the two."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import requests
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# Before any project import: workers.celery_app reads the environment when imported.
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql:///enrichment_test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
TEST_BROKER_URL = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.update(
    DATABASE_URL=TEST_DATABASE_URL,
    REDIS_URL=TEST_REDIS_URL,
    CELERY_BROKER_URL=TEST_BROKER_URL,
    PERPLEXITY_API_KEY="test-pplx-key",
    SOCIAL_LINKS_API_KEY="test-social-key",
    HUNTER_API_KEY="test-hunter-key",
    PROVIDER_MAX_ATTEMPTS="4",
    WEBHOOKS_ALLOW_PRIVATE_URLS="true",  # receivers run on this machine; the guard's own
)                                        # tests turn it back on
for var in ("STRIPE_API_KEY", "POSTHOG_API_KEY", "PLANS_FILE"):
    os.environ.pop(var, None)
# Every process of the run (this one, the worker subprocesses) writes its metrics here.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="enrichment-metrics-")


# --- the session's clock ---------------------------------------------------------------------

def parse_test_now(value: str) -> datetime:
    """TEST_NOW: an ISO 8601 instant in UTC (`2027-01-01T00:00:00Z`, or with `+00:00`)."""
    when = datetime.fromisoformat(value.strip())
    if when.utcoffset() != timedelta(0):
        raise ValueError(f"TEST_NOW must be a UTC instant (Z or +00:00), not {value!r}")
    return when.astimezone(UTC)


SESSION_STARTED = datetime.now(UTC)
TEST_NOW = os.environ.get("TEST_NOW", "").strip() or None
# The services' clock is real time plus this (0 without TEST_NOW).
CLOCK_OFFSET = parse_test_now(TEST_NOW) - SESSION_STARTED if TEST_NOW else timedelta(0)


def session_clock() -> datetime:
    """The session's services clock: real time, shifted by TEST_NOW; it moves."""
    return datetime.now(UTC) + CLOCK_OFFSET


# The subprocesses the tests start (the Celery worker, gunicorn, the launcher, the CLI) build
# their own services: with TEST_NOW, a `sitecustomize` of this session's, first on their
# PYTHONPATH, gives every Services they build the same shifted clock.
CLOCK_SHIM = '''"""Written by tests/conftest.py for one test session (TEST_NOW={test_now}): every
Services this process builds reads the session's clock, real time + {seconds!r} s."""
import importlib.abc
import importlib.machinery
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

OFFSET = timedelta(seconds={seconds!r})


def clock():
    return datetime.now(UTC) + OFFSET


def shift(module):
    build = module.build_services

    def build_services(*args, **kwargs):
        return replace(build(*args, **kwargs), clock=clock)

    module.build_services = build_services


class ShiftServicesClock(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "enrichment.services":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_shift(module):
            exec_module(module)
            shift(module)

        spec.loader.exec_module = exec_and_shift
        return spec


sys.meta_path.insert(0, ShiftServicesClock())
'''

if TEST_NOW:
    _shim_dir = tempfile.mkdtemp(prefix="enrichment-clock-")
    Path(_shim_dir, "sitecustomize.py").write_text(CLOCK_SHIM.format(
        test_now=TEST_NOW, seconds=CLOCK_OFFSET.total_seconds()))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (_shim_dir, os.environ.get("PYTHONPATH")) if p)

from enrichment import db as db_module  # noqa: E402
from enrichment import services as services_module  # noqa: E402
from enrichment.config import Settings  # noqa: E402
from enrichment.workspaces import create_workspace  # noqa: E402
from simulators.hunter import HunterServer  # noqa: E402
from simulators.providers import SimulatorServer  # noqa: E402

from .helpers import eventually  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

_build_services = services_module.build_services


def build_services(*args, **kwargs):
    """`enrichment.services.build_services`, with the session's clock."""
    return replace(_build_services(*args, **kwargs), clock=session_clock)


# In this process too, every Services built (by create_app(), the CLI, a test) reads it.
services_module.build_services = build_services
for _module in list(sys.modules.values()):
    if getattr(_module, "build_services", None) is _build_services:
        _module.build_services = build_services


def pytest_report_header() -> str:
    if TEST_NOW:
        return (f"services clock: TEST_NOW={TEST_NOW} (real time {CLOCK_OFFSET} ahead;"
                " PostgreSQL and Redis keep real time)")
    return "services clock: real time (set TEST_NOW=<ISO 8601 UTC> to shift it)"
TABLES = ("workspaces", "api_keys", "enrichment_jobs", "job_outbox", "enrichment_results",
          "usage_reports", "stripe_events", "invoices", "billing_catalog", "consents",
          "alert_states", "alert_events",
          "usage_counters", "credit_ledger", "suppressions", "api_idempotency", "workspace_plans",
          "checkout_sessions", "plan_prices",
          "enrichment_usage", "usage_daily", "dead_letters")


def recreate_database(url: str) -> None:
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    db_module.ensure_database(url)


@pytest.fixture(scope="session")
def simulator():
    with SimulatorServer() as sim:
        os.environ["PERPLEXITY_API_BASE"] = sim.url
        os.environ["SOCIAL_LINKS_API_BASE"] = sim.url
        yield sim


@pytest.fixture(scope="session")
def hunter():
    """The Hunter fake (Email Finder, Email Verifier, account), with Hunter's limits."""
    with HunterServer() as fake:
        os.environ["HUNTER_API_BASE"] = fake.url
        yield fake


@pytest.fixture(autouse=True)
def _reset_simulator(request):
    """Each test starts with healthy, fast simulators and zeroed counters (and no provider
    suspended by an earlier test's used-up quota)."""
    yield
    for name in ("simulator", "hunter"):
        if name in request.fixturenames:
            sim = request.getfixturevalue(name)
            for key, value in vars(type(sim.config)()).items():
                setattr(sim.config, key, value)
            requests.post(f"{sim.url}/_sim/reset", timeout=5).raise_for_status()


@pytest.fixture(scope="session")
def settings(simulator, hunter) -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def migrated() -> str:
    recreate_database(TEST_DATABASE_URL)
    db_module.upgrade(TEST_DATABASE_URL)
    return TEST_DATABASE_URL


@pytest.fixture(scope="session")
def services(settings, migrated):
    from workers.publisher import CeleryPublisher

    svc = build_services(settings, publisher=CeleryPublisher())
    yield svc
    svc.close()


@pytest.fixture
def db(services):
    """Services over an emptied database and Redis DB."""
    with services.db.connection() as conn:
        conn.execute("TRUNCATE {} CASCADE".format(", ".join(TABLES)))
    services.redis.flushdb()
    return services


@pytest.fixture
def app(db):
    from api import create_app

    app = create_app(services=db)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_workspace(db):
    """Create a workspace; returns (workspace, api_key)."""

    def make(plan: str = "pro", region: str = "us", name: str = "Acme"):
        with db.db.connection() as conn:
            return create_workspace(conn, db.settings.plans, name, plan, region)

    return make


@pytest.fixture
def captured_events(db, monkeypatch):
    """The events the code under test emits, as (event, distinct_id, properties)."""
    seen = []
    monkeypatch.setattr(db.events, "capture", lambda e, ws, p: seen.append((e, ws, p)))
    return seen


@pytest.fixture
def auth(make_workspace):
    ws, key = make_workspace()
    return ws, {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def worker(simulator, hunter, migrated):
    """A real Celery worker (prefork, 2 processes) consuming every queue."""
    from bench.stack import Stack

    with Stack({"DATABASE_URL": TEST_DATABASE_URL, "REDIS_URL": TEST_REDIS_URL,
                "CELERY_BROKER_URL": TEST_BROKER_URL}) as stack:
        yield stack.worker(concurrency=2, name="test")


def wait_for_job(client, headers, job_id: str, timeout: float = 30.0) -> dict:
    """Poll the job until it is finished."""
    body: dict = {}

    def done() -> bool:
        nonlocal body
        body = client.get(f"/api/v1/enrichment/{job_id}", headers=headers).get_json()
        return body["status"] in ("succeeded", "failed", "dead")

    eventually(done, timeout)
    return body


@pytest.fixture
def wait_job():
    return wait_for_job


def pytest_collection_modifyitems(items):
    # Keep the expensive end-to-end tests last, so fast failures show first.
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


