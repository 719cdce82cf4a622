"""Lists at provider speed (issue 24 item 2):

1. a CSV of 10,000 company leads sent through `enrichment-client` — the real client, a
   subprocess as a user runs it — against gunicorn, Celery workers and the provider simulator,
   with Perplexity's cap raised to 100 req/s: the limiter sends 80 % of it, so the floor is
   10,000 / 80 = 125 s. company_profile asks Perplexity only, one request per lead. Judged:
   wall / floor, leads lost, leads charged twice, the output's order (row by row), and the
   provider requests in the busiest second against the cap;
2. batch admission: leads admitted per second through POST /api/v1/enrichment/batch (100 a
   batch) against single submits per second through POST /api/v1/enrichment — the same
   gunicorn, the same client processes, no workers.

BENCH_LISTS_LEADS and BENCH_LISTS_CAP make table 1 smaller for development (the floor is
leads / (0.8 cap)).
"""

from __future__ import annotations

import csv
import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import requests

from .stack import BENCH_DB, ROOT, Stack, create_workspace, fresh_database, table

PLANS = Path(__file__).with_name("plans.toml")
LEADS = int(os.environ.get("BENCH_LISTS_LEADS", "10000"))
CAP = float(os.environ.get("BENCH_LISTS_CAP", "100"))  # the simulator's Perplexity req/s
SAFETY = 0.8  # Settings.provider_safety_factor: the limiter's share of the cap
LATENCY_MS = 300  # the simulator's default answer time
# Celery worker nodes x thread slots; the `lists` plan allows 48 at once. Threads: a job
# mostly waits on the provider, and 48 prefork children would exhaust the machine's 100
# PostgreSQL connections beside gunicorn (a threads worker shares its pool of DB_POOL_MAX).
# Four processes of 12 rather than two of 24: less contention on each one's GIL (measured in
# bench/PROFILES.md).
WORKERS, SLOTS, POOL = 4, 12, "threads"
TEMPLATE = "company_profile"  # perplexity.research only: one provider request per lead
GUNICORN = {"workers": 4, "threads": 4, "worker_class": "gthread"}  # as the image runs it

CLIENT_PROCESSES = 4
SECONDS = 8.0
BATCH = 100


# --- 1. a list through the client ----------------------------------------------------------

def write_list(path: Path, n: int) -> list[list[str]]:
    rows = [[str(i), f"Lead {i} Inc", f"lead-{i}.example.com"] for i in range(n)]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "company", "domain"])
        out.writerows(rows)
    return rows


def run_client(stack: Stack, url: str, key: str, src: Path, out: Path) -> float:
    """`enrichment-client enrich` as a user runs it (this tree's client package); its wall
    time in seconds."""
    env = {**os.environ, "ENRICHMENT_API_URL": url, "ENRICHMENT_API_KEY": key,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "client"), str(ROOT),
                                          os.environ.get("PYTHONPATH", "")])}
    with open(stack.logs / "client.log", "wb") as log:
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "enrichment_client.cli", "enrich",
                               str(src), "--template", TEMPLATE, "--out", str(out)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, timeout=3600)
        wall = time.monotonic() - t0
    if done.returncode != 0:
        tail = (stack.logs / "client.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"enrichment-client exited {done.returncode}:\n{tail}")
    return wall


def busiest_second(times: list[float]) -> int:
    """The most requests in any 1-second window (how the simulator counts its cap)."""
    times, most, first = sorted(times), 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def check_output(rows: list[list[str]], out: Path) -> tuple[int, bool, int]:
    """(leads lost: input rows without an ended job in the output, whether the output is in
    input order — each row's own cells and its job's lead —, leads that did not succeed)."""
    with open(out, newline="", encoding="utf-8") as fh:
        header, *written = list(csv.reader(fh))
    status, job_id = header.index("status"), header.index("job_id")
    with psycopg.connect(BENCH_DB) as conn:
        domains = dict(conn.execute("SELECT id::text, lead->>'domain' FROM enrichment_jobs"))
    ended = [r for r in written if r[status] in ("succeeded", "failed", "dead")]
    lost = len(rows) - len(ended)
    in_order = len(written) == len(rows) and all(
        w[:3] == r and domains.get(w[job_id]) == r[2]
        for r, w in zip(rows, written, strict=True))
    return lost, in_order, sum(1 for r in written if r[status] != "succeeded")


def charges() -> tuple[int, int, int]:
    """(leads charged more than one unit over all their jobs, units charged, matched jobs)."""
    with psycopg.connect(BENCH_DB) as conn:
        twice = conn.execute(
            "SELECT count(*) FROM (SELECT j.subject_hash FROM enrichment_usage u"
            " JOIN enrichment_jobs j ON j.id = u.job_id GROUP BY j.subject_hash"
            " HAVING sum(u.units) > 1) t").fetchone()[0]
        units = conn.execute("SELECT coalesce(sum(units), 0) FROM enrichment_usage"
                             ).fetchone()[0]
        matched = conn.execute("SELECT count(*) FROM enrichment_jobs WHERE match"
                               ).fetchone()[0]
    return twice, units, matched


def list_run(leads: int = LEADS, cap: float = CAP) -> list:
    fresh_database()
    env = {"PLANS_FILE": str(PLANS), "PERPLEXITY_PLAN_RPS": str(cap)}
    with Stack(env) as stack:
        sim = stack.simulator("--latency-ms", str(LATENCY_MS), "--perplexity-rps", str(cap),
                              "--social-rps", "0")
        for i in range(WORKERS):
            stack.worker(concurrency=SLOTS, name=f"w{i}", pool=POOL)
        url = stack.gunicorn(**GUNICORN)
        key = create_workspace("lists", plans_file=str(PLANS))
        src, out = stack.logs / "leads.csv", stack.logs / "leads.enriched.csv"
        rows = write_list(src, leads)
        requests.post(f"{sim}/_sim/reset", timeout=5)
        wall = run_client(stack, url, key, src, out)
        stats = requests.get(f"{sim}/_sim/stats", timeout=30).json()
    floor = leads / (SAFETY * cap)
    lost, in_order, not_succeeded = check_output(rows, out)
    twice, units, matched = charges()
    counts = stats["counts"]
    return [leads, floor, wall, wall / floor, lost, not_succeeded, twice,
            f"{units} / {matched}", "yes" if in_order else "no",
            f"{busiest_second(stats['accepted']['perplexity'])} / {cap:.0f}",
            counts.get("perplexity.received", 0), counts.get("perplexity.429", 0)]


# --- 2. batch admission --------------------------------------------------------------------

def _client(args) -> list[float]:
    """Closed loop for `seconds`: POST `path` with `leads` fresh leads a request (a batch, or
    one lead as a single submit); the latency of each call."""
    port, path, key, seconds, seed, leads = args
    latencies = []
    n = 0
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        batch = [{"domain": f"lead-{seed}-{n + i}.example.com"} for i in range(leads)]
        n += leads
        body = json.dumps({"template": TEMPLATE, "leads": batch} if path.endswith("/batch")
                          else {"template": TEMPLATE, "lead": batch[0]})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start = time.perf_counter()
        conn.request("POST", path, body, {"Content-Type": "application/json",
                                          "Authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        answer = resp.read()
        latencies.append(time.perf_counter() - start)
        conn.close()
        assert resp.status in (202, 207), (resp.status, answer[:300])
        if resp.status == 207:
            statuses = {r["status"] for r in json.loads(answer)["results"]}
            assert statuses == {202}, statuses
    return latencies


def load(url: str, path: str, keys: list[str], leads: int) -> list:
    """[calls/s, leads/s, p50 ms, p99 ms] over one closed-loop client process per key."""
    port = int(url.rsplit(":", 1)[1])
    run_id = time.monotonic_ns()  # fresh leads each run: no same-day replays
    with multiprocessing.Pool(len(keys)) as pool:
        parts = pool.map(_client, [(port, path, key, SECONDS, f"{run_id}-{i}", leads)
                                   for i, key in enumerate(keys)])
    latencies = sorted(x for part in parts for x in part)
    calls = len(latencies) / SECONDS
    return [calls, calls * leads, latencies[len(latencies) // 2] * 1000,
            latencies[int(0.99 * (len(latencies) - 1))] * 1000]


def admission() -> list[list]:
    fresh_database()
    with Stack({"PLANS_FILE": str(PLANS)}) as stack:
        stack.env.update(PERPLEXITY_API_KEY="x", SOCIAL_LINKS_API_KEY="x")
        url = stack.gunicorn(**GUNICORN)
        # A workspace per client (as CLIENT_PROCESSES customers sending lists): batches of
        # one workspace take turns on its lock, which would measure the turns.
        keys = [create_workspace("bench", plans_file=str(PLANS))
                for _ in range(CLIENT_PROCESSES)]
        load(url, "/api/v1/enrichment", keys, 1)  # warm-up
        load(url, "/api/v1/enrichment/batch", keys, BATCH)
        single = load(url, "/api/v1/enrichment", keys, 1)
        batch = load(url, "/api/v1/enrichment/batch", keys, BATCH)
    return [["POST /api/v1/enrichment (one lead)", *single],
            [f"POST /api/v1/enrichment/batch ({BATCH} leads)", *batch],
            ["batch leads/s ÷ single leads/s", "", batch[1] / single[1], "", ""]]


def run() -> None:
    floor = LEADS / (SAFETY * CAP)
    table(f"A {LEADS:,}-lead CSV through enrichment-client ({TEMPLATE}: one Perplexity request "
          f"a lead; simulator cap {CAP:.0f} req/s, {LATENCY_MS} ms; limiter {SAFETY * CAP:.0f} "
          f"req/s; {WORKERS} workers x {SLOTS} {POOL}; floor {floor:.0f} s)",
          ["leads", "floor s", "wall s", "wall/floor", "leads lost", "not succeeded",
           "charged twice", "units / matched jobs", "output in input order",
           "busiest second / cap", "provider requests", "429s"], [list_run()])
    table(f"Batch admission under gunicorn ({GUNICORN['workers']} x {GUNICORN['threads']} "
          f"gthread, {CLIENT_PROCESSES} client processes with a workspace each, {SECONDS:.0f} s "
          "each, new connection per call, no workers; plan `bench`: every job runnable, so "
          "each is published)",
          ["endpoint", "calls/s", "leads/s", "p50 ms", "p99 ms"], admission())


if __name__ == "__main__":
    run()
