"""Usage in constant time: GET /api/v1/enrichment/usage on workspaces with 10 and with
1,000,000 usage rows this month — within the plan's included units, and in overage (the
billing walk) — through gunicorn, beside the bare authenticated read GET /api/v1/workspace
(the same authentication and rate limit, no database read) measured in the same run. The
rows are inserted by SQL through the rollup's triggers, as jobs would write them; the last
row prints what the endpoint used to run, the sum over the month's usage rows."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

import psycopg

from .integrator import PLANS, timed
from .stack import BENCH_DB, Stack, create_workspace, fresh_database, table

SIZES = (10, 1_000_000)
REQUESTS = 300


def seed(workspace_id: str, n: int) -> None:
    """n usage rows spread over this month's days so far, one in ten unmatched."""
    now = datetime.now(UTC)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    with psycopg.connect(BENCH_DB, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO enrichment_usage (workspace_id, job_id, template, units, tokens,"
            " searches, cost_estimate_usd, match, created_at)"
            " SELECT %(ws)s, gen_random_uuid(), 'company_profile', (n %% 10 <> 0)::int, 900, 1,"
            " 0.0061, n %% 10 <> 0, %(month)s + (%(now)s - %(month)s) * n / (%(n)s + 1)"
            " FROM generate_series(1, %(n)s) n",
            {"ws": workspace_id, "n": n, "month": month, "now": now})
        conn.execute("ANALYZE")


def raw_sum_ms(workspace_id: str, n: int = 20) -> list[float]:
    """The month's usage rows summed, as the endpoint did before the rollup (SQL only)."""
    month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    latencies = []
    with psycopg.connect(BENCH_DB) as conn:
        for _ in range(n):
            start = time.perf_counter()
            conn.execute("SELECT sum(units), sum(tokens), count(*) FILTER (WHERE match)"
                         " FROM enrichment_usage WHERE workspace_id = %s AND created_at >= %s"
                         " AND livemode", (workspace_id, month)).fetchone()
            latencies.append((time.perf_counter() - start) * 1000)
    return sorted(latencies)


def p50_p99(latencies: list[float]) -> list[float]:
    return [statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]]


def run() -> None:
    rows, target = [], []
    for size in SIZES:
        fresh_database()
        with Stack({"PLANS_FILE": PLANS}) as stack:
            # Two workspaces of `size` rows: one within its plan's included units, one (plan
            # `overage`, 1,000 included) over them, whose usage needs the day-by-day walk.
            keys = {plan: create_workspace(plan, plans_file=PLANS)
                    for plan in ("bench", "overage")}
            with psycopg.connect(BENCH_DB) as conn:
                ids = dict(conn.execute("SELECT plan, id::text FROM workspaces").fetchall())
            for plan in keys:
                seed(ids[plan], size)
            port = int(stack.gunicorn("api.wsgi:app", workers=2).rsplit(":", 1)[1])
            timed(port, "/api/v1/workspace", keys["bench"], 50)  # warm-up
            bare = timed(port, "/api/v1/workspace", keys["bench"], REQUESTS)
            within = timed(port, "/api/v1/enrichment/usage", keys["bench"], REQUESTS)
            over = timed(port, "/api/v1/enrichment/usage", keys["overage"], REQUESTS)
            raw = raw_sum_ms(ids["bench"]) if size == SIZES[-1] else None
        b = p50_p99(bare)
        rows.append([f"{size:,}", "GET /api/v1/workspace (bare authenticated read)", *b, "1.00"])
        for label, latencies in (("within the included units", within),
                                 ("in overage (the day-by-day walk)", over)):
            u = p50_p99(latencies)
            rows.append([f"{size:,}", f"GET /api/v1/enrichment/usage, {label}", *u,
                         f"{u[0] / b[0]:.2f}"])
            target.append(u[0] / b[0])
        if raw:
            rows.append([f"{size:,}", "(before: the month's usage rows summed, SQL only)",
                         *p50_p99(raw), "-"])
    table(f"Usage in constant time (gunicorn, 2 workers, {REQUESTS} sequential requests each;"
          f" target: usage p50 at most 3 x the bare read at {SIZES[-1]:,} rows — here "
          f"{max(target[-2:]):.2f} x at worst)",
          ["usage rows", "request", "p50 ms", "p99 ms", "p50 ÷ bare"], rows)


if __name__ == "__main__":
    run()
