"""Defects a review of the units ledger and the jobs service found, each proven by a test
that failed before its fix: a second refund against a finishing job (lock order), a partial
refund rounded through a float, notify taking other workspaces' events, a failed notify
after commit answering 503, an erasure between a batch's admission and its close."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from enrichment import webhooks
from enrichment.jobs import events, service, units
from enrichment.jobs.slots import lock_workspace

from .helpers import eventually
from .test_seams_units import MID_MONTH, at, pay_pack, stripe_event, submit


def taken_back(svc, intent):
    with svc.db.connection() as conn:
        return -conn.execute("SELECT coalesce(sum(units),0) AS n FROM credit_ledger"
                             " WHERE payment_intent = %s AND units < 0", (intent,)
                             ).fetchone()["n"]


@pytest.mark.parametrize(("units_", "amount", "refunded", "expected"), [
    (100, 1000, 290, 29),  # 100 * 0.29 is 28.999... in floating point
    (100, 1000, 570, 57),
    (500, 3500, 1015, 145),
    (300, 3000, 1000, 100),  # a third
    (7, 1000, 999, 6),  # rounded down for the customer
])
def test_a_partial_refund_takes_back_its_exact_share(db, make_workspace, units_, amount,
                                                     refunded, expected):
    svc = at(db, MID_MONTH)
    ws, _ = make_workspace(plan="core")
    intent = f"pi_{uuid.uuid4().hex}"
    pay_pack(svc, ws, units_, intent, amount=amount)
    stripe_event(svc, "charge.refunded",
                 {"payment_intent": intent, "amount": amount, "amount_refunded": refunded})
    assert taken_back(svc, intent) == expected  # nothing used or reserved


def test_notify_named_events_takes_only_those(db, make_workspace):
    ws_a, _ = make_workspace(name="A")
    ws_b, _ = make_workspace(name="B")
    with db.db.connection() as conn:
        other = events.record(conn, ws_b.id)  # B's event, committed; B's notify not yet run
    with db.db.connection() as conn:
        mine = events.record(conn, ws_a.id)
    webhooks.notify(db.db, db.publisher, [mine])
    with db.db.connection() as conn:
        left = [r["id"] for r in conn.execute("SELECT id FROM job_events")]
    assert left == [other], "notify([mine]) also took (and locked the workspace of) B's event"



def waiting_on_a_lock(db) -> bool:
    with db.db.connection() as conn:
        return conn.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE datname ="
                            " current_database() AND wait_event_type = 'Lock'"
                            ).fetchone()["n"] > 0


def test_second_refund_vs_finishing_release_deadlock(db, make_workspace):
    svc = at(db, MID_MONTH)
    ws, _ = make_workspace(plan="core")  # cap 375
    intent = f"pi_{uuid.uuid4().hex}"
    pay_pack(svc, ws, 10, intent)
    submit(svc, ws, 385)  # all reserved: cap + credits
    # first partial refund: half the pack is only reserved -> owed
    stripe_event(svc, "charge.refunded",
                 {"payment_intent": intent, "amount": 3500, "amount_refunded": 1750})
    with db.db.connection() as conn:
        r = conn.execute("SELECT owed, owed_before FROM credit_reversals WHERE payment_intent=%s",
                         (intent,)).fetchone()
        admitted = conn.execute("SELECT min(created_at) AS t FROM enrichment_jobs").fetchone()["t"]
    assert r["owed"] > 0

    errors = []
    # A worker finishing a job: takes the workspace lock (as lifecycle.finish does) ...
    fin = psycopg.connect(db.settings.database_url, autocommit=False,
                          row_factory=psycopg.rows.dict_row)
    lock_workspace(fin, ws.id)

    def second_refund():
        try:
            stripe_event(svc, "charge.refunded",
                         {"payment_intent": intent, "amount": 3500, "amount_refunded": 3500})
        except Exception as exc:
            errors.append(("stripe", type(exc).__name__))

    t = threading.Thread(target=second_refund)
    t.start()
    eventually(lambda: waiting_on_a_lock(db), timeout=10)  # the refund waits for the lock
    try:
        # ... and then gives the unit back (lifecycle.finish -> units.release)
        units.release(fin, ws.id, MID_MONTH.date().replace(day=1), admitted, MID_MONTH)
        fin.commit()
    except psycopg.errors.DeadlockDetected as exc:
        errors.append(("finish", type(exc).__name__))
        fin.rollback()
    t.join(10)
    fin.close()
    assert errors == [], errors


def test_an_erasure_between_a_batch_lead_and_the_batch_close(db, make_workspace):
    svc = at(db, MID_MONTH)
    ws, _ = make_workspace(plan="core")
    batch = service.open_batch(svc, ws.id, "person_basic", 1)
    admitted = service.submit(svc, ws, "person_basic", {"email": "jane@acme.com"}, {}, 7,
                             batch_id=batch)
    service.erase(svc, ws, "jane@acme.com")  # a concurrent erasure request
    service.close_batch(svc, ws.id, batch, [(0, admitted.job["id"], False)])
    with svc.db.connection() as conn:
        closed = conn.execute("SELECT submitted_at, completed_at FROM batches").fetchone()
    assert closed["submitted_at"] is not None and closed["completed_at"] is not None


def test_a_failed_notify_after_commit_is_not_the_callers_error(client, auth, db, monkeypatch):
    _, headers = auth

    def down(pool, publisher, ids=None, *args, **kwargs):
        raise psycopg.OperationalError("connection lost")

    monkeypatch.setattr(webhooks, "notify", down)
    resp = client.post("/api/v1/enrichment/batch", headers=headers, json={
        "template": "company_profile", "leads": [{"domain": "acme.com"}]})
    assert resp.status_code == 207  # committed: the sweeper turns the event into messages
    with db.db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM job_events").fetchone()["n"] == 1
