"""The global provider limit on real Redis, and through real worker processes."""

from __future__ import annotations

import threading
import time

import pytest

from enrichment.provider_limits import ProviderLimiter
from enrichment.providers import ProviderError


@pytest.fixture
def limiter(db):
    waits: list[float] = []
    lim = ProviderLimiter(db.redis, {"p": 4.0}, prefix=f"pl-{time.monotonic_ns()}",
                          sleep=waits.append)
    lim.waits = waits
    return lim


def test_reservations_are_spaced_by_the_interval(limiter):
    waits = [limiter.acquire("p") for _ in range(5)]
    assert waits[0] == 0.0
    for n, wait in enumerate(waits[1:], start=1):
        assert 0.25 * n - 0.05 < wait <= 0.25 * n  # 4/s: one slot every 0.25 s
    assert limiter.waits == waits[1:]


def test_a_slot_beyond_max_wait_is_not_taken(limiter):
    for _ in range(4):
        limiter.acquire("p")
    with pytest.raises(ProviderError) as info:
        limiter.acquire("p", max_wait=0.5)
    assert info.value.retryable
    assert limiter.acquire("p", max_wait=5) < 1.01  # the refused call took nothing


def test_a_429_holds_every_caller_back(limiter):
    limiter.penalize("p", 3.0)
    assert 2.9 < limiter.acquire("p") <= 3.0


def test_unknown_providers_are_not_limited(limiter):
    assert limiter.acquire("other") == 0.0


def test_concurrent_callers_each_get_their_own_slot(db):
    lim = ProviderLimiter(db.redis, {"p": 20.0}, prefix=f"pl-{time.monotonic_ns()}",
                          sleep=lambda s: None)
    waits: list[float] = []
    lock = threading.Lock()

    def take():
        for _ in range(10):
            w = lim.acquire("p", max_wait=60)
            with lock:
                waits.append(w)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 80 reservations, all distinct slots 0.05 s apart (Redis time moves on meanwhile).
    starts = sorted(waits)
    assert len(starts) == 80 and starts[-1] >= 0.05 * 79 - 1.0


@pytest.mark.e2e
def test_two_worker_processes_never_exceed_the_provider_plan(client, make_workspace, worker,
                                                             wait_job, simulator):
    """Simulator enforces Perplexity's plan (2 req/s); our limit is 80% of it: no 429s."""
    simulator.config.perplexity_rps = 2.0
    simulator.config.social_rps = 10.0
    jobs = []
    for i in range(8):
        _, key = make_workspace(name=f"W{i}")
        headers = {"Authorization": f"Bearer {key}"}
        body = {"template": "company_profile", "lead": {"domain": f"co{i}.example.com"}}
        jobs.append((headers, client.post("/api/v1/enrichment", json=body,
                                          headers=headers).get_json()["job_id"]))
    for headers, job_id in jobs:
        assert wait_job(client, headers, job_id, timeout=60)["status"] == "succeeded"
    stats = simulator.stats.snapshot()
    assert stats["counts"].get("perplexity.429", 0) == 0
    accepted = sorted(stats["accepted"]["perplexity"])
    assert len(accepted) == 8
    span = accepted[-1] - accepted[0]
    assert span >= 7 / 1.6 - 0.3  # spaced at 1.6/s, not bunched


def test_429_storm_backs_off_then_succeeds(db, make_workspace, simulator):
    """We think the provider allows 10/s; it allows 1/s. It answers 429s with Retry-After,
    the shared limiter holds every caller back, and every job still succeeds, its retries
    counted as attempts — without a retry storm."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from enrichment import pipeline
    from enrichment.jobs import intake
    from enrichment.templates import TEMPLATES

    simulator.config.perplexity_rps = 1.0
    lim = ProviderLimiter(db.redis, {"perplexity": 10.0}, prefix=f"pl-{time.monotonic_ns()}")
    svc = replace(db, base_policy=replace(db.base_policy, throttle=lim.acquire,
                                          penalize=lim.penalize, max_attempts=8))
    job_ids = []
    for i in range(4):
        ws, _ = make_workspace(name=f"S{i}")
        with db.db.connection() as conn:
            job_ids.append(str(intake.admit(
                conn, slots=1, workspace=ws, plan=db.settings.plans["pro"],
                template=TEMPLATES["company_profile"], lead={"domain": f"s{i}.com"},
                metadata={}, now=db.clock()).job["id"]))
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda j: pipeline.run_job(svc, j), job_ids))
    assert outcomes == ["succeeded"] * 4
    counts = simulator.stats.snapshot()["counts"]
    assert counts["perplexity.ok"] == 4
    assert 1 <= counts["perplexity.429"] <= 6  # each 429 paused everyone: no storm
    with db.db.connection() as conn:
        attempts = conn.execute("SELECT sum(attempts) AS n FROM enrichment_jobs").fetchone()["n"]
    assert attempts == 4 + counts["perplexity.429"]
