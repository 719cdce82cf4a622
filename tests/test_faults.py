"""Proof under faults, with real processes on this machine: a Redis server of our own (AOF,
appendfsync everysec) on a free port, the test database on the real PostgreSQL (a PostgreSQL
cluster of our own where the scenario stops the database), Celery workers and gunicorn as
subprocesses, the provider simulator. Nothing here stops or reconfigures the machine's Redis
or PostgreSQL. Run alone with `pytest -m faults`; prints a summary.

Each scenario counts, for the jobs the API accepted: completed, dead, lost (never finished)
and double-billed (more than one usage row, or more than one unit)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
import redis
import requests
from click.testing import CliRunner

from bench.stack import PostgresServer, RedisServer, Stack, pg_bindir
from enrichment import db as db_module
from enrichment import pipeline
from enrichment.config import Settings
from enrichment.services import Services, build_services
from enrichment.workspaces import create_workspace
from workers.publisher import CeleryPublisher

from .conftest import TEST_DATABASE_URL
from .helpers import eventually

pytestmark = [pytest.mark.faults, pytest.mark.e2e]
SUMMARY: list[list] = []


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def own_postgres():
    """A migrated PostgreSQL cluster of the test's own; stopped and removed however it ends."""
    server = PostgresServer("enrichment_faults")
    try:
        db_module.upgrade(server.url)
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    yield
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    header = ["scenario", "accepted", "completed", "dead", "lost", "double-billed"]
    rows = [header, *SUMMARY]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    with plugins.get_plugin("capturemanager").global_and_fixture_disabled():  # to the terminal
        reporter.write_line("")
        reporter.write_line("Faults: what happened to the jobs the API accepted")
        for n, row in enumerate(rows):
            reporter.write_line("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths,
                                                                                   strict=True)))
            if n == 0:
                reporter.write_line("  " + "  ".join("-" * w for w in widths))


def stack_for(own_redis, **env) -> Stack:
    return Stack({"DATABASE_URL": TEST_DATABASE_URL, "REDIS_URL": f"{own_redis.url}/0",
                  "CELERY_BROKER_URL": f"{own_redis.url}/1", "JOB_LEASE_SECONDS": "3",
                  "LOST_MESSAGE_SECONDS": "3", **env})


def services(stack: Stack) -> Services:
    """This process's services on the scenario's database, Redis and broker (built once)."""
    if "svc" not in stack.__dict__:
        settings = Settings.from_env(stack.env | {"OUTBOX_RELAY_AFTER_SECONDS": "0"})
        stack.svc = build_services(settings, CeleryPublisher(stack.env["CELERY_BROKER_URL"]))
        stack.callback(stack.svc.close)
    return stack.svc


def sweep(stack: Stack) -> None:
    """What the beat relay does each minute, now, against the scenario's database, Redis and
    broker."""
    pipeline.sweep(services(stack))


def submit(api: str, key: str, n: int, tag: str) -> list[str]:
    resp = requests.post(f"{api}/api/v1/enrichment/batch", timeout=10,
                         headers={"Authorization": f"Bearer {key}"},
                         json={"template": "person_social",
                               "leads": [{"email": f"{tag}{i}@faults.example"} for i in
                                         range(n)]})
    assert resp.status_code == 207, resp.text
    return [r["job"]["job_id"] for r in resp.json()["results"] if r["status"] == 202]


def outcome(stack: Stack, job_ids: list[str]) -> dict:
    """Counted in the database the scenario's processes use."""
    with services(stack).db.connection() as conn:
        rows = conn.execute(
            "SELECT j.id::text, j.status, count(u.id) AS usage_rows,"
            " coalesce(sum(u.units), 0) AS units FROM enrichment_jobs j"
            " LEFT JOIN enrichment_usage u ON u.job_id = j.id"
            " WHERE j.id::text = ANY(%s) GROUP BY j.id", (job_ids,)).fetchall()
    return {
        "accepted": len(job_ids),
        "completed": sum(r["status"] == "succeeded" for r in rows),
        "dead": sum(r["status"] in ("dead", "failed") for r in rows),
        "lost": len(job_ids) - sum(r["status"] in ("succeeded", "dead", "failed")
                                   for r in rows),
        "double-billed": sum(r["usage_rows"] > 1 or r["units"] > 1 for r in rows),
    }


def settle(stack: Stack, job_ids: list[str], timeout: float = 90) -> dict:
    def done() -> bool:
        sweep(stack)
        return outcome(stack, job_ids)["lost"] == 0

    with contextlib.suppress(AssertionError):  # what is left is reported as lost
        eventually(done, timeout, interval=1.0)
    return outcome(stack, job_ids)


def record(name: str, result: dict) -> None:
    SUMMARY.append([name, *(result[k] for k in ("accepted", "completed", "dead", "lost",
                                                "double-billed"))])
    assert result["lost"] == 0 and result["double-billed"] == 0, result


def key_for(make_workspace) -> str:
    return make_workspace(plan="scale")[1]


def test_worker_killed_mid_jobs(db, make_workspace, simulator, own_redis):
    simulator.config.latency_ms = 800
    with stack_for(own_redis) as stack:
        doomed = stack.worker(concurrency=2, name="doomed")
        api = stack.gunicorn()
        ids = submit(api, key_for(make_workspace), 12, "kill")

        def in_flight() -> bool:
            with db.db.connection() as conn:
                return conn.execute("SELECT count(*) AS n FROM enrichment_jobs"
                                    " WHERE status = 'processing'").fetchone()["n"] >= 1

        eventually(in_flight, 30)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
        simulator.config.latency_ms = 0
        stack.worker(concurrency=2, name="survivor")
        record("worker kill -9 mid-job", settle(stack, ids))


def pool_of(worker) -> list[int]:
    """A worker's pool processes (its main process's children; Linux)."""
    return [int(pid) for pid in
            Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()]


def test_worker_killed_after_fetching_before_claiming(db, make_workspace, simulator,
                                                      own_redis):
    """A node dies between taking a job's message and claiming the job: the job is still
    `queued`, with no lease to expire, and its message is held as delivered to the dead
    node. It must run all the same (lost-message re-send, LOST_MESSAGE_SECONDS=3)."""
    from enrichment.jobs import service

    with stack_for(own_redis) as stack:
        doomed = stack.worker(concurrency=1, name="doomed")
        for pid in pool_of(doomed):  # its pool process never gets to claim what it is given
            os.kill(pid, signal.SIGSTOP)
        ws, _ = make_workspace(plan="scale")
        job = service.submit(services(stack), ws, "person_social",
                             {"email": "fetched@faults.example"}, {}, 0).job
        broker = redis.Redis.from_url(stack.env["CELERY_BROKER_URL"])
        eventually(lambda: broker.hlen("unacked") == 1, 15)  # delivered to the doomed node
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
        stack.worker(concurrency=1, name="survivor")
        record("worker kill -9 after fetching, before claiming",
               settle(stack, [str(job["id"])], timeout=15))


def test_redis_killed_and_restarted(db, make_workspace, simulator, own_redis):
    simulator.config.latency_ms = 300
    with stack_for(own_redis) as stack:
        worker = stack.worker(concurrency=2)
        api = stack.gunicorn()
        ids = submit(api, key_for(make_workspace), 20, "redis")
        time.sleep(1.5)  # some running, some still queued in Redis
        own_redis.kill()
        own_redis.start()  # replays its AOF
        simulator.config.latency_ms = 0
        # Celery may exit on a broken broker connection with late acks ("Unrecoverable
        # error" in kombu's reconnect); its supervisor restarts it, as compose/systemd do.
        eventually(lambda: worker.poll() is not None or _consuming(stack), 15)
        restarted = worker.poll() is not None
        if restarted:
            stack.worker(concurrency=2, name="restarted")
        name = "redis kill -9, restart" + (" (worker restarted)" if restarted else "")
        record(name, settle(stack, ids))


def _consuming(stack: Stack) -> bool:
    from bench.stack import _ping_worker

    return _ping_worker(stack.env)


def test_redis_frozen(db, make_workspace, simulator, own_redis):
    with stack_for(own_redis) as stack:
        stack.worker(concurrency=2)
        api = stack.gunicorn()
        key = key_for(make_workspace)
        ids = submit(api, key, 5, "before")
        own_redis.signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            resp = requests.post(f"{api}/api/v1/enrichment", timeout=10,
                                 headers={"Authorization": f"Bearer {key}"},
                                 json={"template": "person_social",
                                       "lead": {"email": "frozen@faults.example"}})
            elapsed = time.monotonic() - started
        finally:
            own_redis.signal(signal.SIGCONT)
        assert elapsed < 2.0, elapsed  # answered, never hung
        assert resp.status_code in (202, 503), resp.status_code
        if resp.status_code == 503:
            assert int(resp.headers["Retry-After"]) >= 1
        else:
            ids.append(resp.json()["job_id"])
        record(f"redis SIGSTOP (submit: {resp.status_code} in {elapsed:.1f}s)",
               settle(stack, ids))


@pytest.mark.skipif(pg_bindir() is None, reason="no PostgreSQL server binaries (initdb)")
def test_postgres_stopped_and_started(simulator, own_redis, own_postgres):
    """The database stopped (-m immediate) under load and started again: a cluster of the
    test's own, never the machine's."""
    with stack_for(own_redis, DATABASE_URL=own_postgres.url) as stack:
        svc = services(stack)  # this test process's pool, on the own cluster
        with svc.db.connection() as conn:
            _, key = create_workspace(conn, svc.settings.plans, "Acme", "scale", "us")
        stack.worker(concurrency=2)
        api = stack.gunicorn()
        simulator.config.latency_ms = 1500  # jobs still running when the database goes
        ids = submit(api, key, 6, "pg")
        statuses = []
        try:
            own_postgres.stop("immediate")
            headers = {"Authorization": f"Bearer {key}"}
            for path in ("/api/v1/enrichment", "/api/v1/enrichment/usage"):
                resp = requests.request(
                    "POST" if path.endswith("enrichment") else "GET", f"{api}{path}",
                    timeout=30, headers=headers,
                    json={"template": "person_social", "lead": {"email": "down@x.example"}})
                statuses.append(resp.status_code)
                assert resp.status_code == 503 and resp.headers.get("Retry-After"), resp.text
                assert resp.headers["Content-Type"] == "application/problem+json"
            # What needs no database answers on: the key is known from the key cache.
            templates = requests.get(f"{api}/api/v1/templates", timeout=30, headers=headers)
            statuses.append(templates.status_code)
            assert templates.status_code == 200
        finally:
            own_postgres.start()
        simulator.config.latency_ms = 0
        eventually(lambda: requests.get(f"{api}/readyz", timeout=5).status_code == 200, 30)
        eventually(lambda: _pool_recovered(svc.db), 30)  # this test process's own pool too
        record(f"postgres stopped (API: {statuses})", settle(stack, ids))


def _pool_recovered(pool) -> bool:
    try:
        pool.check()  # drop the connections the restart broke
        with pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:
        return False


def test_provider_outage_then_dead_letter_replay(db, make_workspace, simulator, own_redis):
    from enrichment.cli import main

    simulator.config.outage_status = 503
    with stack_for(own_redis, PROVIDER_ROUND_SECONDS="2",
                   PROVIDER_MAX_ATTEMPTS="3") as stack:
        stack.worker(concurrency=4)
        api = stack.gunicorn()
        ids = submit(api, key_for(make_workspace), 8, "outage")
        during = settle(stack, ids)
        assert during["dead"] == len(ids), during
        simulator.config.outage_status = 0
        replay = CliRunner(env={"DATABASE_URL": TEST_DATABASE_URL}).invoke(
            main, ["dlq", "replay", "--all"], catch_exceptions=False)
        assert replay.output.count("replayed") == len(ids)
        after = settle(stack, ids)
    record(f"provider outage ({during['dead']} dead) → dlq replay --all", after)
    assert after["completed"] == len(ids)
