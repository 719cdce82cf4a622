"""enrichment-client against the real API (gunicorn), worker and simulator: a CSV in, one row
out per row in order; killed half-way and run again, no lead is charged twice."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys

import pytest

from bench.stack import Stack

from .conftest import TEST_BROKER_URL, TEST_DATABASE_URL, TEST_REDIS_URL
from .helpers import eventually

pytestmark = pytest.mark.e2e
ROWS = 120  # one workspace runs one job at a time, within Social Links' 8/s


@pytest.fixture
def api(worker, simulator):
    with Stack({"DATABASE_URL": TEST_DATABASE_URL, "REDIS_URL": TEST_REDIS_URL,
                "CELERY_BROKER_URL": TEST_BROKER_URL}) as stack:
        yield stack.gunicorn(workers=2)


def write_csv(path, rows=ROWS):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["CRM id", "E-mail", "Full name"])
        for i in range(rows):
            out.writerow([f"crm-{i}", f"lead{i}@c{i}.example.com", f"Lead {i}"])


def client(api, key, *args, **kwargs) -> subprocess.Popen:
    template = [] if "--template" in args else ["--template", "person_social"]
    return subprocess.Popen(
        [sys.executable, "-m", "enrichment_client.cli", "enrich", *args, *template],
        env={**os.environ, "ENRICHMENT_API_URL": api, "ENRICHMENT_API_KEY": key},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def units_and_jobs(db) -> tuple[int, int, int]:
    with db.db.connection() as conn:
        row = conn.execute(
            "SELECT (SELECT coalesce(sum(units), 0) FROM enrichment_usage) AS units,"
            " (SELECT count(*) FROM enrichment_jobs) AS jobs,"
            " (SELECT count(*) FROM (SELECT job_id FROM enrichment_usage GROUP BY job_id"
            "  HAVING count(*) > 1) twice) AS twice").fetchone()
    return row["units"], row["jobs"], row["twice"]


def test_a_csv_is_enriched_in_order_and_a_rerun_after_a_kill_charges_nothing_twice(
        api, make_workspace, db, tmp_path):
    _, key = make_workspace(plan="scale")
    leads, out = tmp_path / "leads.csv", tmp_path / "out.csv"
    write_csv(leads)
    first = client(api, key, str(leads), "--out", str(out), start_new_session=True)

    def some_submitted() -> bool:
        return units_and_jobs(db)[1] >= 100

    eventually(some_submitted, 60)
    os.killpg(first.pid, signal.SIGKILL)  # half-way: some batches sent, nothing written
    first.wait()
    second = client(api, key, str(leads), "--out", str(out))
    _, stderr = second.communicate(timeout=150)
    assert second.returncode == 0, stderr
    with open(out, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["CRM id"] for r in rows] == [f"crm-{i}" for i in range(ROWS)]
    assert {r["status"] for r in rows} == {"succeeded"}
    assert all(r["job_id"] for r in rows) and any(r["citations"] for r in rows)
    units, jobs, twice = units_and_jobs(db)
    assert jobs == ROWS and twice == 0
    assert units == sum(r["match"] == "true" for r in rows)  # each lead charged at most once
    assert f"{ROWS} rows written" in stderr


def test_a_bad_csv_is_one_clear_line_and_exit_2(api, make_workspace, tmp_path):
    _, key = make_workspace()
    no_lead = tmp_path / "no_lead.csv"
    no_lead.write_text("colour,size\nred,L\n", encoding="utf-8")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("email,name\njos\xe9@acme.com,Jos\xe9\n".encode("latin-1"))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("email\njane@acme.com,extra\n", encoding="utf-8")
    for path, words in ((no_lead, "no lead column"), (latin, "is not UTF-8"),
                        (ragged, "more cells than the header"),
                        (tmp_path / "missing.csv", "No such file")):
        proc = client(api, key, str(path))
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 2 and words in stderr and len(stderr.splitlines()) == 1


def set_remaining(db, ws, client_api, key, units: int) -> None:
    """Leave `units` of the workspace's hard cap (as if the rest were reserved)."""
    import requests

    from enrichment.periods import period_start

    usage = requests.get(f"{client_api}/api/v1/enrichment/usage", timeout=10,
                         headers={"Authorization": f"Bearer {key}"}).json()
    with db.db.connection() as conn:
        conn.execute("INSERT INTO usage_counters (workspace_id, period, reserved)"
                     " VALUES (%(ws)s, %(p)s, %(r)s) ON CONFLICT (workspace_id, period)"
                     " DO UPDATE SET reserved = %(r)s",
                     {"ws": ws.id, "p": period_start(db.clock()),
                      "r": usage["hard_cap"] - units})


def test_a_run_stopped_by_the_hard_cap_resumes_the_refused_leads(api, make_workspace, db,
                                                                  tmp_path):
    ws, key = make_workspace()
    leads, out = tmp_path / "leads.csv", tmp_path / "out.csv"
    write_csv(leads, rows=5)
    set_remaining(db, ws, api, key, 2)
    first = client(api, key, str(leads), "--out", str(out))
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 1 and "stopped" in stderr, stderr
    with open(out, encoding="utf-8") as fh:
        assert [r["status"] for r in csv.DictReader(fh)].count("not_submitted") == 3
    set_remaining(db, ws, api, key, 3 + 10)  # credits bought: room for the three
    second = client(api, key, str(leads), "--out", str(out))
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr
    with open(out, encoding="utf-8") as fh:
        assert {r["status"] for r in csv.DictReader(fh)} == {"succeeded"}
    units, jobs, twice = units_and_jobs(db)
    assert jobs == 5 and twice == 0 and units <= 5


def test_columns_pass_through_by_position_and_websites_are_domains(api, make_workspace,
                                                                    tmp_path):
    _, key = make_workspace()
    leads, out = tmp_path / "leads.csv", tmp_path / "out.csv"
    leads.write_text("note,Website,note\nfirst,https://www.acme.com/about,second\n"
                     "third,not a website,fourth\n", encoding="utf-8")
    run = client(api, key, str(leads), "--out", str(out), "--template", "company_profile")
    run.communicate(timeout=120)
    with open(out, encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:3] == ["note", "Website", "note"]
    assert rows[1][:3] == ["first", "https://www.acme.com/about", "second"]
    assert rows[1][3] == "succeeded" and rows[2][3] == "rejected"
    assert "domain" in rows[2][6]  # the error cell names the field
