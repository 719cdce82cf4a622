"""Safe price changes (`enrichment/billing/prices.py`): the catalog sync records the prices in
force, an in-place edit of the plans file is refused at start-up, `enrichment billing
change-price` changes a price the Stripe way (a new price takes over the lookup key, the old
one archived, subscriptions moved, history kept), each day's overage is priced at the price
in force at its end, and reconciliation compares amounts. Against a fake Stripe of this
module's own (the price changes would leak into other tests through the shared one)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from bench.stack import free_port
from enrichment.billing import StripeBilling, accounts, prices
from enrichment.billing import operations as billing_ops
from enrichment.billing.reconcile import price_problems, reconcile
from enrichment.billing.usage import compute
from enrichment.cli import main
from enrichment.config import DEFAULT_PLANS_FILE, load_plans
from enrichment.periods import day_start
from simulators.stripe_fake import StripeFakeServer

from .conftest import ROOT, TEST_DATABASE_URL

MONTH = date(2026, 11, 1)  # a closed period: its days are fixed, whatever today is


def raised(plans, name: str = "core", overage: str = "0.15"):
    """The plans with one plan's overage price edited, as an operator edits the file."""
    return replace(plans, plans={**plans.plans, name: replace(
        plans[name], overage_usd=Decimal(overage))})


@pytest.fixture
def stripe(db):
    with StripeFakeServer(now=lambda: db.clock().timestamp()) as server:
        svc = replace(db, billing=StripeBilling("sk_test_prices", server.url))
        with svc.db.connection() as conn:
            prices.sync_catalog(conn, svc.billing, svc.settings.plans)
        yield svc, server


def state(server, kind: str) -> dict:
    """What the fake Stripe holds of a kind, by id."""
    held = requests.get(f"{server.url}/_test/state", timeout=5).json()[kind]
    return {x["id"]: x for x in held}


def in_force(svc) -> list:
    with svc.db.connection() as conn:
        return prices.history(conn)["core"]


def test_the_first_sync_records_the_prices_stripe_holds(stripe):
    svc, _ = stripe
    (core,) = in_force(svc)
    assert (core.base_usd, core.overage_usd, core.effective_at) == (
        svc.settings.plans["core"].base_usd, svc.settings.plans["core"].overage_usd,
        prices.ALWAYS)
    with svc.db.connection() as conn:
        assert prices.mismatches(conn, svc.settings.plans) == []
        # A second sync keeps the history as it is.
        prices.sync_catalog(conn, svc.billing, svc.settings.plans)
        assert len(prices.history(conn)["core"]) == 1


def test_an_in_place_edit_is_refused_and_change_price_makes_it_the_stripe_way(
        stripe, make_workspace):
    svc, server = stripe
    ws, _ = make_workspace(plan="core")
    with svc.db.connection() as conn:
        accounts.attach(conn, svc.billing, ws.id)
    old = {p["lookup_key"]: p for p in state(server, "prices").values() if p["lookup_key"]}
    edited = raised(svc.settings.plans)
    with svc.db.connection() as conn:
        with pytest.raises(prices.PricesChanged, match=r"overage_usd is 0\.15 in the plans file"
                           r".*change-price"):
            prices.check(conn, edited)
        at = day_start(MONTH) + timedelta(days=9, hours=12)
        done = prices.change(conn, svc.billing, edited, "core", at)
        prices.check(conn, edited)  # the edited file is now what is in force
    assert done.recorded and done.moved == 1 and done.failed == []
    held = state(server, "prices")
    new = held[done.prices["enrichment_core_overage"]]
    assert new["lookup_key"] == "enrichment_core_overage" and new["unit_amount_decimal"] == "15.00"
    former = held[old["enrichment_core_overage"]["id"]]
    assert former["lookup_key"] is None and former["active"] is False  # archived, kept
    # The base price did not change: the same price, still in use.
    assert done.prices["enrichment_core_base"] == old["enrichment_core_base"]["id"]
    (sub,) = state(server, "subscriptions").values()
    on = {i["price"]["id"] for i in sub["items"]["data"]}
    assert on == {old["enrichment_core_base"]["id"], new["id"]}
    assert [(p.overage_usd, p.effective_at) for p in in_force(svc)][-1] == (Decimal("0.15"), at)
    # A rerun changes nothing more.
    with svc.db.connection() as conn:
        again = prices.change(conn, svc.billing, edited, "core", at + timedelta(hours=1))
    assert (again.recorded, again.moved, again.prices) == (False, 0, done.prices)
    assert price_problems(edited, svc.billing) == []
    # Stripe and the running processes agree again; with the old file they would not.
    assert {"price": "enrichment_core_overage", "in_force_usd": "0.12",
            "stripe_usd": "0.15"} in price_problems(svc.settings.plans, svc.billing)


def test_each_day_is_priced_at_the_price_in_force_at_its_end(stripe, make_workspace):
    svc, _ = stripe
    ws, _ = make_workspace(plan="core")
    edited = raised(svc.settings.plans)
    included = edited["core"].included
    with svc.db.connection() as conn:
        conn.execute("UPDATE workspace_plans SET effective_at = %s WHERE workspace_id = %s",
                     (day_start(MONTH) - timedelta(days=3), ws.id))
        for day, n in ((1, included + 10), (10, 5), (11, 5)):
            conn.execute(
                "INSERT INTO enrichment_usage (workspace_id, job_id, template, units, created_at)"
                " SELECT %s, gen_random_uuid(), 'company_profile', 1, %s"
                " FROM generate_series(1, %s)",
                (ws.id, day_start(MONTH + timedelta(days=day - 1)) + timedelta(hours=9), n))
        # The change at noon on the 10th: the whole of the 10th is priced at the new price.
        prices.change(conn, svc.billing, edited, "core",
                      day_start(MONTH + timedelta(days=9)) + timedelta(hours=12))
        days = compute(conn, edited, MONTH, MONTH + timedelta(days=29))[ws.id]
    assert [(d.day.day, d.units, d.unit_price_usd) for d in days] == [
        (1, 10, Decimal("0.12")), (10, 5, Decimal("0.15")), (11, 5, Decimal("0.15"))]


def test_reconciliation_compares_amounts(db, make_workspace):
    ws, _ = make_workspace(plan="core")
    through = MONTH + timedelta(days=1)
    with db.db.connection() as conn:
        conn.execute("UPDATE workspace_plans SET effective_at = %s WHERE workspace_id = %s",
                     (day_start(MONTH) - timedelta(days=3), ws.id))
        conn.execute(
            "INSERT INTO enrichment_usage (workspace_id, job_id, template, units, created_at)"
            " SELECT %s, gen_random_uuid(), 'company_profile', 1, %s FROM generate_series(1, %s)",
            (ws.id, day_start(MONTH) + timedelta(hours=9), db.settings.plans["core"].included + 4))
    billing_ops.report_overage(db, through)  # ledger-only: frozen and recorded
    with db.db.connection() as conn:
        assert reconcile(conn, db.settings.plans, db.billing, through) == []
        # The same units, but the plans file's price edited in place (ledger-only: nothing
        # refused it): the frozen days were priced otherwise.
        (problem,) = reconcile(conn, raised(db.settings.plans), db.billing, through)
    assert problem == {"workspace_id": str(ws.id), "expected": 4, "reported": 4, "sent": 4,
                       "expected_usd": "0.60", "reported_usd": "0.48"}


def test_the_api_and_the_workers_refuse_to_start_on_an_in_place_edit(db, tmp_path: Path):
    with db.db.connection() as conn:
        conn.execute("INSERT INTO plan_prices (plan, base_usd, overage_usd, effective_at)"
                     " VALUES ('core', 49, 0.11, %s)", (day_start(MONTH),))
    env = {**os.environ, "DATABASE_URL": TEST_DATABASE_URL, "PLANS_FILE": str(DEFAULT_PLANS_FILE)}
    api = subprocess.run([sys.executable, "-c", "import api.wsgi"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert api.returncode != 0 and "refusing to start: plan core: overage_usd is" in api.stderr
    worker = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--pool", "solo",
         "-n", f"prices-{uuid.uuid4().hex[:6]}@%h", "-Q", "nothing"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60)
    assert worker.returncode != 0, worker.stdout + worker.stderr
    assert "refusing to start" in worker.stderr + worker.stdout
    assert load_plans(DEFAULT_PLANS_FILE)["core"].overage_usd != Decimal("0.11")
    # A database that cannot be asked does not stop a start (/readyz then answers 503).
    down = {**env, "DATABASE_URL": f"postgresql://127.0.0.1:{free_port()}/nothing"}
    api = subprocess.run([sys.executable, "-c", "import api.wsgi"], cwd=ROOT, env=down,
                         capture_output=True, text=True, timeout=60)
    assert api.returncode == 0 and "prices not checked at start-up" in api.stderr, api.stderr


def test_a_first_start_records_the_plans_file_and_later_edits_are_refused(db):
    with db.db.connection() as conn:
        prices.check(conn, db.settings.plans)  # nothing recorded yet: recorded now
        assert prices.history(conn)["core"][0].effective_at == prices.ALWAYS
        with pytest.raises(prices.PricesChanged):
            prices.check(conn, raised(db.settings.plans))


@pytest.mark.parametrize(("key", "value"), [("overage_usd", "0.00125"), ("base_usd", "49.005"),
                                            ("overage_usd", "-1")])
def test_a_price_the_billing_tables_cannot_hold_is_refused(tmp_path: Path, key, value):
    text = Path(DEFAULT_PLANS_FILE).read_text()
    edited = text.replace('overage_usd = "0.12"' if key == "overage_usd" else
                          'base_usd = "49.00"', f'{key} = "{value}"', 1)
    (tmp_path / "plans.toml").write_text(edited)
    with pytest.raises(ValueError, match=f"plan 'core': {key} must be"):
        load_plans(tmp_path / "plans.toml")


def test_change_price_command(db, make_workspace, tmp_path: Path):
    edited = Path(DEFAULT_PLANS_FILE).read_text().replace(
        'overage_usd = "0.12"', 'overage_usd = "0.13"', 1)
    assert edited != Path(DEFAULT_PLANS_FILE).read_text()
    (tmp_path / "plans.toml").write_text(edited)
    runner = CliRunner(env={"PLANS_FILE": str(tmp_path / "plans.toml"), "STRIPE_API_KEY": ""})
    assert runner.invoke(main, ["billing", "change-price", "nope"]).exit_code == 1
    out = runner.invoke(main, ["billing", "change-price", "core"], catch_exceptions=False)
    assert out.exit_code == 0 and '"recorded": true' in out.output, out.output
    with db.db.connection() as conn:
        assert prices.history(conn)["core"][-1].overage_usd == Decimal("0.13")


def test_the_fake_stripe_keeps_prices_immutable(stripe):
    _, server = stripe
    (price,) = [p for p in state(server, "prices").values()
                if p["lookup_key"] == "enrichment_core_overage"]
    auth = {"Authorization": "Bearer sk_test_prices"}
    changed = requests.post(f"{server.url}/v1/prices/{price['id']}",
                            data={"unit_amount_decimal": "20"}, headers=auth, timeout=5)
    assert changed.status_code == 400
    taken = requests.post(f"{server.url}/v1/prices", headers=auth, timeout=5, data={
        "product": "enrichment_core", "currency": "usd", "unit_amount": "1",
        "lookup_key": "enrichment_core_overage"})
    assert taken.status_code == 400 and taken.json()["error"]["code"] == "lookup_key_exists"
