"""The submit path's durable floor: what `POST /api/v1/enrichment` must do for a new job to be
kept and sent, and nothing else — the workspace lock, the job row with its unit reserved
(`lifecycle.insert`) and its outbox row (`slots.fill`) committed in one transaction, then the
Celery message published and the outbox row cleared (`outbox.publish_all`, `CeleryPublisher`).
No authentication, rate limit, validation, cache lookup or Idempotency-Key lookup; the answer
is the job's id. Served by gunicorn as bench/bare_app.py is (`bench submit_path`); its jobs
belong to the workspace BENCH_WORKSPACE_ID names."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

from flask import Flask, jsonify, request

from enrichment.billing.usage import hard_cap
from enrichment.config import Settings
from enrichment.db import connect_pool
from enrichment.jobs import intake, lifecycle, outbox
from enrichment.jobs.slots import fill, lock_workspace
from enrichment.jobs.states import DEFAULT_MIN_CONFIDENCE
from enrichment.leads import subject_hash, subject_identifier
from enrichment.periods import period_start
from workers.publisher import CeleryPublisher

settings = Settings.from_env()
pool = connect_pool(settings.database_url, max_size=settings.db_pool_max)
publisher = CeleryPublisher()
WORKSPACE_ID = uuid.UUID(os.environ["BENCH_WORKSPACE_ID"])
with pool.connection() as _conn:
    _ws = _conn.execute("SELECT plan, plan_since FROM workspaces WHERE id = %s",
                        (WORKSPACE_ID,)).fetchone()
PLAN, PLAN_SINCE = settings.plans[_ws["plan"]], _ws["plan_since"]
SLOTS = settings.slots(PLAN.name)

app = Flask(__name__)


@app.post("/durable")
def durable():
    body = request.get_json()
    lead, template = body["lead"], body["template"]
    identifier = subject_identifier(lead, person_level=False)
    now = datetime.now(UTC)
    period = period_start(now)
    with pool.connection() as conn:
        cap = hard_cap(conn, PLAN, WORKSPACE_ID, period, PLAN_SINCE)
        with conn.transaction():
            lock_workspace(conn, WORKSPACE_ID)
            row = lifecycle.insert(
                conn, workspace_id=WORKSPACE_ID, template=template, queue=PLAN.queue,
                subject=subject_hash(identifier), persons=[], lead=lead, metadata={},
                key=intake.idempotency_key(WORKSPACE_ID, identifier, template, now.date()),
                period=period, min_confidence=DEFAULT_MIN_CONFIDENCE, cap=cap)
            assert row is not None and row["reserved"], "a new lead, under the cap"
            runnable = fill(conn, WORKSPACE_ID, SLOTS)
    outbox.publish_all(pool, publisher, runnable)
    return jsonify({"job_id": row["id"], "status": "queued" if runnable else "waiting"}), 202


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
