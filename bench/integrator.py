"""The integrator's API under load:

1. GET /api/v1/enrichment on a workspace with 1,000,000 jobs (seeded by SQL): p50/p99 of the
   first page, a page deep in the list, and filtered pages, through gunicorn — against a bare
   Flask endpoint — with the query plans; and GET /usage over the same month;
2. webhook deliveries per second per worker slot (a fast local receiver);
3. enrichment jobs/s with no webhook endpoint, with every workspace subscribed to a receiver
   answering at once, and to one that hangs (10 s timeouts): webhooks run on their own queue
   and workers, so a hanging receiver costs no more than a fast one.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from .stack import BENCH_DB, Stack, create_workspace, fresh_database, table

JOBS = 1_000_000
PLANS = str(Path(__file__).with_name("plans.toml"))


def seed_jobs(workspace_id: str) -> dict:
    """JOBS jobs over 29 days with their usage rows, a few failed, every 10,000th in one
    batch of 100 (a batch holds at most 100 leads)."""
    with psycopg.connect(BENCH_DB, autocommit=True) as conn:
        batch = uuid.uuid4()
        conn.execute("INSERT INTO batches (id, workspace_id, template, total, submitted_at)"
                     " VALUES (%s, %s, 'company_profile', 100, now())", (batch, workspace_id))
        conn.execute(
            "INSERT INTO enrichment_jobs (id, workspace_id, template, queue, status,"
            " subject_hash, lead, idempotency_key, created_at, completed_at, batch_id, match)"
            " SELECT gen_random_uuid(), %(ws)s, 'company_profile', 'pro',"
            "  CASE WHEN n %% 200 = 0 THEN 'failed' ELSE 'succeeded' END,"
            "  md5(n::text), jsonb_build_object('domain', 'c' || n || '.example.com'),"
            "  md5('k' || n), now() - (n * interval '2.5 seconds'),"
            "  now() - (n * interval '2.5 seconds'),"
            "  CASE WHEN n %% 10000 = 0 THEN %(batch)s::uuid END, n %% 200 <> 0"
            " FROM generate_series(1, %(n)s) n", {"ws": workspace_id, "batch": batch,
                                                   "n": JOBS})
        conn.execute("INSERT INTO batch_items (batch_id, idx, job_id)"
                     " SELECT batch_id, row_number() OVER (ORDER BY created_at) - 1, id"
                     " FROM enrichment_jobs WHERE batch_id = %s", (batch,))
        conn.execute("INSERT INTO enrichment_usage (workspace_id, job_id, template, units,"
                     " tokens, match, created_at) SELECT workspace_id, id, template,"
                     " match::int, 900, match, completed_at FROM enrichment_jobs")
        conn.execute("ANALYZE")
        middle = conn.execute("SELECT id FROM enrichment_jobs ORDER BY created_at DESC,"
                              " id DESC OFFSET %s LIMIT 1", (JOBS // 2,)).fetchone()[0]
    return {"batch": str(batch), "middle": str(middle)}


def timed(port: int, path: str, key: str, n: int = 200) -> list[float]:
    latencies = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(n):
        start = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        resp.read()
        latencies.append((time.perf_counter() - start) * 1000)
        assert resp.status == 200, (path, resp.status)
    conn.close()
    return sorted(latencies)


def plans(workspace_id: str, seeded: dict) -> list[tuple[str, list[str]]]:
    queries = [
        ("first page", "", ()),
        ("deep page (cursor)", "AND (j.created_at, j.id) < (SELECT created_at, id FROM"
         " enrichment_jobs WHERE id = %s)", (seeded["middle"],)),
        ("status=failed", "AND j.status = 'failed'", ()),
    ]
    out = []
    with psycopg.connect(BENCH_DB, row_factory=dict_row) as conn:
        for label, where, args in queries:
            rows = conn.execute(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT j.id FROM"
                " enrichment_jobs j WHERE j.workspace_id = %s " + where +
                " ORDER BY j.created_at DESC, j.id DESC LIMIT 101", (workspace_id, *args))
            out.append((label, [r["QUERY PLAN"] for r in rows]))
    return out


def list_endpoint() -> None:
    fresh_database()
    with Stack({"PLANS_FILE": PLANS}) as stack:
        stack.env.update(PERPLEXITY_API_KEY="x", SOCIAL_LINKS_API_KEY="x")
        key = create_workspace("bench", plans_file=PLANS)
        with psycopg.connect(BENCH_DB) as conn:
            workspace_id = str(conn.execute("SELECT id FROM workspaces").fetchone()[0])
        t0 = time.perf_counter()
        seeded = seed_jobs(workspace_id)
        seed_s = time.perf_counter() - t0
        bare = stack.gunicorn("bench.bare_app:app", workers=2)
        api = stack.gunicorn("api.wsgi:app", workers=2)
        rows = []
        bare_port, api_port = int(bare.rsplit(":", 1)[1]), int(api.rsplit(":", 1)[1])
        baseline = timed(bare_port, "/bare", key)
        rows.append(["bare Flask endpoint", statistics.median(baseline),
                     baseline[int(0.99 * (len(baseline) - 1))]])
        for label, path in [
                ("first page (limit 100)", "/api/v1/enrichment?limit=100"),
                ("a page 500,000 jobs deep", "/api/v1/enrichment?limit=100&starting_after="
                 + seeded["middle"]),
                ("status=failed (0.5% of jobs)", "/api/v1/enrichment?limit=100&status=failed"),
                ("batch_id (100 jobs)", "/api/v1/enrichment?limit=100&batch_id="
                 + seeded["batch"]),
                ("created_before a day ago", "/api/v1/enrichment?limit=100&created_before="
                 + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400))),
                ("GET /usage (the period's usage rows)", "/api/v1/enrichment/usage")]:
            lat = timed(api_port, path, key)
            rows.append([label, statistics.median(lat), lat[int(0.99 * (len(lat) - 1))]])
        found = plans(workspace_id, seeded)
    table(f"GET /api/v1/enrichment on one workspace with {JOBS:,} jobs (seeded in {seed_s:.0f} s;"
          " gunicorn, 2 workers, 200 sequential requests each)",
          ["request", "p50 ms", "p99 ms"], rows)
    for label, lines in found:
        print(f"\n  Query plan, {label}:")
        for line in lines:
            print("   ", line)


class Receiver:
    """A local webhook receiver that answers 200 at once, or hangs `delay` seconds first."""

    def __init__(self, delay: float = 0.0):
        self.count = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["content-length"]))
                time.sleep(delay)
                receiver.count += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def webhook_throughput(n: int = 2000, slots: int = 4) -> list:
    fresh_database()
    receiver = Receiver()
    env = {"WEBHOOKS_ALLOW_PRIVATE_URLS": "true", "WEBHOOK_ENDPOINT_CONCURRENCY": "8"}
    with Stack(env) as stack:
        create_workspace("pro")
        from enrichment import webhooks
        from workers.publisher import CeleryPublisher

        with psycopg.connect(BENCH_DB, row_factory=dict_row, autocommit=True) as conn:
            ws = conn.execute("SELECT id FROM workspaces").fetchone()["id"]
            webhooks.create_endpoint(conn, ws, receiver.url, ["job.succeeded"], True)
            ids = [d for _ in range(n) for d in webhooks.enqueue(
                conn, ws, "job.succeeded", {"job_id": str(uuid.uuid4())}, datetime.now(UTC))]
        stack.worker(concurrency=slots, name="webhooks", queues="webhooks", pool="threads")
        publisher = CeleryPublisher(stack.env["CELERY_BROKER_URL"])
        t0 = time.perf_counter()
        for delivery_id in ids:
            publisher.send_webhook(str(delivery_id))
        while receiver.count < n:
            time.sleep(0.05)
        rate = n / (time.perf_counter() - t0)
    return [n, slots, rate, rate / slots]


def jobs_per_second(delay: float | None, n: int = 300) -> float:
    """Jobs/s with no webhook endpoint (None), or every workspace subscribed to a receiver
    that answers after `delay` seconds."""
    fresh_database()
    receiver = Receiver(delay=delay or 0.0)
    env = {"WEBHOOKS_ALLOW_PRIVATE_URLS": "true", "PERPLEXITY_PLAN_RPS": "100000",
           "SOCIAL_LINKS_PLAN_RPS": "100000"}
    with Stack(env) as stack:
        stack.simulator("--latency-ms", "0", "--perplexity-rps", "0", "--social-rps", "0")
        from enrichment.config import Settings
        from enrichment.services import build_services
        from workers.publisher import CeleryPublisher

        from .execution import submit, workspaces

        svc = build_services(Settings.from_env(stack.env),
                             publisher=CeleryPublisher(stack.env["CELERY_BROKER_URL"]))
        spaces = workspaces(svc, "pro", 50)
        if delay is not None:
            from enrichment import webhooks

            with svc.db.connection() as conn:
                for ws in spaces:
                    webhooks.create_endpoint(conn, ws.id, receiver.url, ["job.succeeded"], True)
        stack.worker(concurrency=4)
        stack.worker(concurrency=4, name="webhooks", queues="webhooks", pool="threads")
        t0 = time.perf_counter()
        for i in range(n):
            submit(svc, spaces[i % len(spaces)], [{"email": f"h{i}@x.example.com"}],
                   "person_social")
        from .execution import wait_done

        wait_done(n, 300)
        rate = n / (time.perf_counter() - t0)
        svc.close()
    return rate


def run() -> None:
    list_endpoint()
    table("Webhook deliveries, one worker (threads pool), a receiver answering at once",
          ["deliveries", "slots", "per second", "per second per slot"],
          [webhook_throughput()])
    table("Enrichment jobs/s with every workspace subscribed to one receiver",
          ["webhooks", "jobs/s"],
          [["none", jobs_per_second(None)], ["a receiver answering at once", jobs_per_second(0)],
           ["a receiver that hangs 30 s", jobs_per_second(30.0)]])


if __name__ == "__main__":
    run()
