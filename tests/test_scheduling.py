"""The stride queue order: shares under saturation, work conservation, no banked credit."""

from __future__ import annotations

import collections
import random

from workers.scheduling import weighted_cycle

WEIGHTS = {"elite": 3, "pro": 2, "core": 1}


def simulate(cycle, backlog: dict[str, int], pops: int) -> collections.Counter:
    """Pop like BRPOP: the first non-empty queue in the cycle's order, then rotate."""
    got: collections.Counter = collections.Counter()
    for _ in range(pops):
        for queue in cycle.consume(len(cycle.items)):
            if backlog.get(queue, 0) > 0:
                backlog[queue] -= 1
                got[queue] += 1
                cycle.rotate(queue)
                break
    return got


def test_saturated_shares_are_3_2_1():
    cycle = weighted_cycle(WEIGHTS)(["elite", "pro", "core"])
    got = simulate(cycle, {"elite": 10**6, "pro": 10**6, "core": 10**6}, 6000)
    assert got == {"elite": 3000, "pro": 2000, "core": 1000}


def test_every_window_of_six_holds_the_shares():
    cycle = weighted_cycle(WEIGHTS)(["elite", "pro", "core"])
    order = []
    for _ in range(60):
        queue = cycle.consume(3)[0]
        order.append(queue)
        cycle.rotate(queue)
    for i in range(0, 60, 6):
        assert collections.Counter(order[i:i + 6]) == {"elite": 3, "pro": 2, "core": 1}


def test_an_idle_tier_lends_its_share():
    cycle = weighted_cycle(WEIGHTS)(["elite", "pro", "core"])
    got = simulate(cycle, {"elite": 0, "pro": 10**6, "core": 10**6}, 3000)
    assert got == {"pro": 2000, "core": 1000}


def test_an_idle_tier_does_not_bank_credit():
    cycle = weighted_cycle(WEIGHTS)(["elite", "pro", "core"])
    backlog = {"elite": 0, "pro": 10**6, "core": 10**6}
    simulate(cycle, backlog, 3000)  # elite idle for a long time
    backlog["elite"] = 10**6
    first = simulate(cycle, backlog, 6)
    assert first["elite"] <= 4  # banked credit would give it all six
    got = simulate(cycle, backlog, 54) + first
    for queue, share in {"elite": 30, "pro": 20, "core": 10}.items():
        assert abs(got[queue] - share) <= 1, got


def test_core_never_starves_and_unknown_queues_get_top_weight():
    cycle = weighted_cycle(WEIGHTS)(["maintenance", "elite", "pro", "core"])
    got = simulate(cycle, dict.fromkeys(cycle.items, 10**6), 900)
    assert got == {"maintenance": 300, "elite": 300, "pro": 200, "core": 100}


def test_random_arrivals_keep_work_conserving():
    rng = random.Random(7)
    cycle = weighted_cycle(WEIGHTS)(["elite", "pro", "core"])
    backlog = {"elite": 0, "pro": 0, "core": 0}
    for _ in range(2000):
        queue = rng.choice(list(backlog))
        backlog[queue] += 1
        before = sum(backlog.values())
        simulate(cycle, backlog, 1)
        assert sum(backlog.values()) == before - 1  # something non-empty was always served


def test_update_keeps_state_and_admits_new_queues_at_the_floor():
    cycle = weighted_cycle(WEIGHTS)(["elite", "pro"])
    for _ in range(5):
        cycle.rotate(cycle.consume(2)[0])
    cycle.update(["elite", "pro", "core"])
    assert set(cycle.passes) == {"elite", "pro", "core"}
    assert cycle.passes["core"] == min(cycle.passes.values())


def test_a_real_worker_takes_tiers_3_2_1(migrated, tmp_path):
    """Queues filled first, then one worker (1 slot) drains them: the order it took messages
    in, per window of six, is 3 elite : 2 pro : 1 core."""
    import os
    import signal
    import subprocess
    import sys

    import redis

    from workers.celery_app import app

    from .conftest import ROOT, TEST_REDIS_URL
    from .helpers import eventually

    broker = TEST_REDIS_URL.rsplit("/", 1)[0] + "/11"
    record = "test:order"
    r = redis.Redis.from_url(TEST_REDIS_URL)
    redis.Redis.from_url(broker).flushdb()
    r.delete(record)
    with app.connection_for_write(broker) as conn:
        for _ in range(30):
            for queue in ("core", "pro", "elite"):
                app.send_task("enrichment.noop", args=[record, queue], queue=queue,
                              connection=conn)
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
         "-c", "1", "-P", "solo", "--without-mingle", "--without-gossip",
         "-n", f"order-{os.getpid()}@%h"],
        cwd=ROOT, env={**os.environ, "CELERY_BROKER_URL": broker}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        eventually(lambda: r.llen(record) >= 60 or proc.poll() is not None, 60)
        order = [x.decode() for x in r.lrange(record, 0, 59)]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        log.close()
    assert len(order) == 60, (tmp_path / "worker.log").read_text()
    for i in range(0, 60, 6):
        assert collections.Counter(order[i:i + 6]) == {"elite": 3, "pro": 2, "core": 1}, order
