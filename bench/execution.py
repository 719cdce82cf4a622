"""Scheduling and execution, measured with real worker processes and the simulator:

1. jobs started per tier (1 worker x 4 slots, WORKSPACE_CONCURRENCY=1) in three workload
   shapes — many small batches, a few big ones, two huge ones — against 3:2:1, and with elite
   idle against 0:2:1;
2. pipeline throughput (instant simulator) vs a no-op Celery task on the same worker;
3. queue wait (runnable → started) and workspace wait (created → runnable) at 80% load;
4. provider utilisation vs the 80% cap and 429s, 4 worker processes, the simulator enforcing
   the real plan limit;
5. a backlog: 10,000 jobs of 30 workspaces behind a 16 req/s provider with the sweeper running
   every few seconds — broker messages per job run, duplicate deliveries, Redis peak memory;
6. the round bound: a provider answering after 40 s.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import psycopg
import redis
import requests
from psycopg.rows import dict_row

from workers.publisher import CeleryPublisher

from .stack import BENCH_DB, Stack, fresh_database, table

FAST = {"PERPLEXITY_PLAN_RPS": "100000", "SOCIAL_LINKS_PLAN_RPS": "100000",
        "WORKSPACE_CONCURRENCY": "1"}
TIERS = ("elite", "pro", "core")


def _services(stack: Stack, env: dict | None = None):
    """Services as the API builds them, on the stack's database, Redis and broker."""
    from enrichment.config import Settings
    from enrichment.services import build_services

    settings = Settings.from_env({**stack.env, **(env or {})})
    return build_services(settings, publisher=CeleryPublisher(settings.broker_url))


def submit(svc, ws, leads: list[dict], template: str) -> None:
    """What the API does for each lead: admit, then publish what became runnable."""
    from enrichment.jobs import intake, outbox
    from enrichment.templates import TEMPLATES

    plan = svc.settings.plans[ws.plan]
    for lead in leads:
        with svc.db.connection() as conn:
            admitted = intake.admit(conn, workspace=ws, plan=plan,
                                       template=TEMPLATES[template], lead=lead, metadata={},
                                       now=datetime.now(UTC), slots=svc.settings.slots(ws.plan))
        outbox.publish_all(svc.db, svc.publisher, admitted.runnable)


def workspaces(svc, plan: str, n: int) -> list:
    from enrichment.workspaces import create_workspace

    with svc.db.connection() as conn:
        return [create_workspace(conn, svc.settings.plans, f"{plan}{i}", plan)[0]
                for i in range(n)]


def job_rows() -> list[dict]:
    with psycopg.connect(BENCH_DB, row_factory=dict_row) as conn:
        return conn.execute("SELECT queue, status, created_at, runnable_at, started_at,"
                            " completed_at FROM enrichment_jobs").fetchall()


def ended() -> int:
    """Jobs of the bench database that have ended."""
    with psycopg.connect(BENCH_DB) as conn:
        return conn.execute("SELECT count(*) FROM enrichment_jobs WHERE status IN"
                            " ('succeeded', 'failed', 'dead')").fetchone()[0]


def wait_ended(n: int, timeout: float) -> int:
    """Wait until `n` jobs have ended or `timeout` passed; returns how many have."""
    deadline = time.monotonic() + timeout
    while (done := ended()) < n and time.monotonic() < deadline:
        time.sleep(0.25)
    return done


def wait_done(total: int, timeout: float) -> None:
    if (done := wait_ended(total, timeout)) < total:
        raise RuntimeError(f"only {done}/{total} jobs finished")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[int(p * (len(values) - 1))] if values else 0.0


# --- 1. tier shares ------------------------------------------------------------------------

def shares(tiers: tuple[str, ...], per_tier: int, jobs_each: int) -> list:
    """Each of `per_tier` workspaces per tier uploads a batch of `jobs_each` leads at once (the
    batches interleaved, as customers' arrive); then one worker with 4 slots drains them."""
    fresh_database()
    with Stack(FAST) as stack:
        stack.simulator("--latency-ms", "0", "--perplexity-rps", "0", "--social-rps", "0")
        svc = _services(stack)
        spaces = {t: workspaces(svc, t, per_tier) for t in tiers}
        for i in range(per_tier):
            for t in tiers:
                leads = [{"email": f"j{n}@{t}{i}.example.com"} for n in range(jobs_each)]
                submit(svc, spaces[t][i], leads, "person_social")
        svc.close()
        stack.worker(concurrency=4)
        wait_done(len(tiers) * per_tier * jobs_each, 600)
    rows = [r for r in job_rows() if r["started_at"]]
    # The window in which every tier still had work: up to the first tier's last start.
    window_end = min(max(r["started_at"] for r in rows if r["queue"] == t) for t in tiers)
    started = [r for r in rows if r["started_at"] <= window_end]
    counts = {t: sum(1 for r in started if r["queue"] == t) for t in TIERS}
    total = sum(counts.values())
    return [{t: 100 * c / total for t, c in counts.items()}, total]


# --- 2. throughput -------------------------------------------------------------------------

def noop_rate(stack: Stack, n: int) -> float:
    """No-op tasks/s through the stack's worker, from the first send to the last one done."""
    from workers.celery_app import app

    r = redis.Redis.from_url(stack.env["REDIS_URL"])
    r.delete("bench:noop")
    t0 = time.perf_counter()
    with app.connection_for_write(stack.env["CELERY_BROKER_URL"]) as conn:
        for _ in range(n):
            app.send_task("enrichment.noop", args=["bench:noop", "x"], queue="pro",
                          connection=conn)
    while r.llen("bench:noop") < n:
        time.sleep(0.005)
    return n / (time.perf_counter() - t0)


def throughput(n: int = 300) -> list:
    fresh_database()
    with Stack(FAST) as stack:
        stack.simulator("--latency-ms", "0", "--perplexity-rps", "0", "--social-rps", "0")
        stack.worker(concurrency=4)
        noops = noop_rate(stack, n)
        svc = _services(stack)
        spaces = workspaces(svc, "pro", n)  # one job each: nothing waits behind its own
        t0 = time.perf_counter()
        for i, ws in enumerate(spaces):
            submit(svc, ws, [{"email": f"t{i}@x.com"}], "person_social")
        wait_done(n, 300)
        job_rate = n / (time.perf_counter() - t0)
        svc.close()
    return [noops, job_rate, job_rate / noops]


# --- 3. queue wait -------------------------------------------------------------------------

def queue_wait(capacity: float, seconds: int = 20, n_workspaces: int = 8) -> list:
    """Open-loop arrivals at 80% of capacity from `n_workspaces` pro workspaces in turn."""
    fresh_database()
    rate = 0.8 * capacity
    with Stack(FAST) as stack:
        stack.simulator("--latency-ms", "0", "--perplexity-rps", "0", "--social-rps", "0")
        stack.worker(concurrency=4)
        svc = _services(stack)
        spaces = workspaces(svc, "pro", n_workspaces)
        n = int(rate * seconds)
        t0 = time.perf_counter()
        for i in range(n):
            time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            submit(svc, spaces[i % n_workspaces], [{"email": f"q{i}@x.com"}], "person_social")
        wait_done(n, 120)
        svc.close()
    rows = job_rows()
    queue = [(r["started_at"] - r["runnable_at"]).total_seconds() for r in rows]
    behind = [(r["runnable_at"] - r["created_at"]).total_seconds() for r in rows]
    return [rate, n, pct(queue, 0.5), pct(queue, 0.95), pct(behind, 0.5), pct(behind, 0.95)]


# --- 4. provider utilisation ---------------------------------------------------------------

def provider_utilisation(seconds: int = 60) -> list:
    fresh_database()
    with Stack({"PERPLEXITY_PLAN_RPS": "2.0"}) as stack:
        sim = stack.simulator("--latency-ms", "50", "--perplexity-rps", "2.0",
                              "--social-rps", "10")
        svc = _services(stack)
        for t in TIERS:
            for i, ws in enumerate(workspaces(svc, t, 30)):
                submit(svc, ws, [{"domain": f"{t}{i}-{n}.example.com"} for n in range(2)],
                       "company_profile")
        svc.close()
        for i in range(4):
            stack.worker(concurrency=1, name=f"w{i}")
        requests.post(f"{sim}/_sim/reset", timeout=5)
        time.sleep(seconds)
        stats = requests.get(f"{sim}/_sim/stats", timeout=5).json()
    accepted = stats["accepted"]["perplexity"]
    # Judge the steady state: from the first accepted call, over `seconds` - 2.
    start = min(accepted)
    window = [t for t in accepted if start <= t < start + seconds - 2]
    rate = len(window) / (seconds - 2)
    return [seconds - 2, len(window), rate, 1.6, 100 * rate / 1.6,
            stats["counts"].get("perplexity.429", 0)]


# --- 5. backlog ----------------------------------------------------------------------------

def backlog(jobs: int = 10_000, n_workspaces: int = 30, sweep_every: float = 5.0) -> list:
    """A long backlog behind the provider cap, the sweeper running often (relay grace 5 s,
    lost-message threshold 60 s): do messages multiply?"""
    fresh_database()
    env = {"SOCIAL_LINKS_PLAN_RPS": "20", "WORKSPACE_CONCURRENCY": "1",
           "OUTBOX_RELAY_AFTER_SECONDS": "5", "LOST_MESSAGE_SECONDS": "60"}
    with Stack(env, own_redis=True) as stack:
        stack.simulator("--latency-ms", "20", "--perplexity-rps", "0", "--social-rps", "20")
        metrics_dir = stack.logs / "metrics"
        metrics_dir.mkdir()
        stack.env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        stack.worker(concurrency=4)
        broker = redis.Redis.from_url(stack.env["CELERY_BROKER_URL"])
        pushes_before = _lpush_calls(broker)
        svc = _services(stack, env)
        plans = ("elite", "pro", "core")
        spaces = [ws for t in plans for ws in workspaces(svc, t, n_workspaces // 3)]
        stop = threading.Event()
        sweeps = []

        def sweeper() -> None:
            from enrichment import pipeline

            while not stop.wait(sweep_every):
                sweeps.append(pipeline.sweep(svc))

        thread = threading.Thread(target=sweeper, daemon=True)
        thread.start()
        t0 = time.monotonic()
        for i, ws in enumerate(spaces):  # each uploads its list at once
            n_leads = jobs // len(spaces) + (i < jobs % len(spaces))
            submit(svc, ws, [{"email": f"b{n}@{i}.example.com"} for n in range(n_leads)],
                   "person_social")
        admitted_s = time.monotonic() - t0
        wait_done(jobs, 3600)
        elapsed = time.monotonic() - t0
        stop.set()
        thread.join()
        svc.close()
        pushes = _lpush_calls(broker) - pushes_before
        peak = broker.info("memory")["used_memory_peak"]
        deliveries = _counter(metrics_dir, "enrichment_job_deliveries_total")
    rows = job_rows()
    ran = sum(r["status"] == "succeeded" for r in rows)
    lost = sum(r["status"] not in ("succeeded", "failed", "dead") for r in rows)
    resent = sum(s["resent"] for s in sweeps)
    return [len(rows), ran, lost, admitted_s, elapsed, ran / elapsed, len(sweeps), resent,
            pushes, pushes / ran, deliveries.get("skipped", 0), peak / 2**20]


def _lpush_calls(client: redis.Redis) -> int:
    """LPUSH commands the broker has run: kombu publishes every message with one."""
    return int(client.info("commandstats").get("cmdstat_lpush", {}).get("calls", 0))


def _counter(path, name: str) -> dict[str, float]:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))
    out: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                label = next(iter(sample.labels.values()), "")
                out[label] = out.get(label, 0) + sample.value
    return out


# --- 6. the round bound --------------------------------------------------------------------

def round_bound(answer_after_s: int = 40) -> list:
    fresh_database()
    with Stack({"PERPLEXITY_PLAN_RPS": "100000"}) as stack:
        sim = stack.simulator("--latency-ms", str(answer_after_s * 1000),
                              "--perplexity-rps", "0", "--social-rps", "0")
        stack.worker(concurrency=1)
        svc = _services(stack)
        (ws,) = workspaces(svc, "pro", 1)
        submit(svc, ws, [{"domain": "slow.example.com"}], "company_profile")
        svc.close()
        wait_done(1, 120)
        received = requests.get(f"{sim}/_sim/stats", timeout=5).json()["counts"].get(
            "perplexity.received", 0)
    with psycopg.connect(BENCH_DB, row_factory=dict_row) as conn:
        job = conn.execute("SELECT status, error, started_at, completed_at"
                           " FROM enrichment_jobs").fetchone()
    return [answer_after_s, (job["completed_at"] - job["started_at"]).total_seconds(),
            job["status"], received, job["error"][:60]]


def run() -> None:
    def fmt(s):
        return " / ".join(f"{s[0][t]:.1f}" for t in TIERS)

    rows = []
    for label, per_tier, jobs_each in [("20 workspaces x 10 jobs per tier", 20, 10),
                                       ("4 workspaces x 30 jobs per tier", 4, 30),
                                       ("2 workspaces x 100 jobs per tier", 2, 100)]:
        busy = shares(TIERS, per_tier, jobs_each)
        idle = shares(("pro", "core"), per_tier, jobs_each)
        rows += [[label, "all tiers", fmt(busy), "50.0 / 33.3 / 16.7", busy[1]],
                 ["", "elite idle", fmt(idle), "0.0 / 66.7 / 33.3", idle[1]]]
    table("Jobs started per tier while every busy tier had work (1 worker x 4 slots, "
          "WORKSPACE_CONCURRENCY=1)",
          ["workload", "tiers", "elite / pro / core %", "target", "jobs in window"], rows)
    noops, job_rate, ratio = throughput()
    table("Throughput on one worker (4 prefork slots), instant simulator",
          ["no-op task /s", "enrichment job /s", "job / no-op"], [[noops, job_rate, ratio]])
    table("Queue wait at 80% of measured capacity (8 pro workspaces taking turns)",
          ["arrivals /s", "jobs", "queue wait p50 s", "p95 s", "workspace wait p50 s",
           "p95 s"], [queue_wait(job_rate)])
    table("Provider utilisation: Perplexity plan 2.0 req/s (simulator enforces it), cap 80%",
          ["window s", "calls", "calls/s", "cap/s", "% of cap", "429s"],
          [provider_utilisation()])
    table("Backlog: 30 workspaces upload 10,000 leads; Social Links plan 20 req/s (cap 16); "
          "sweeper every 5 s",
          ["jobs", "succeeded", "lost", "admitted in s", "drained in s", "jobs/s", "sweeps",
           "re-sent", "messages", "messages/job", "duplicate deliveries", "Redis peak MiB"],
          [backlog()])
    table("Round bound: the provider answers after 40 s (PROVIDER_ROUND_SECONDS=30)",
          ["answer after s", "round took s", "job", "paid POSTs sent", "error"],
          [round_bound()])


if __name__ == "__main__":
    run()
