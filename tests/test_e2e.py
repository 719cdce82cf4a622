"""A lead goes in, a cited summary comes out: HTTP → Postgres → Redis broker → Celery worker
(subprocess) → provider simulator → result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from bench.stack import free_port
from workers.publisher import CeleryPublisher

from .helpers import eventually

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
LEAD = {"template": "person_basic",
        "lead": {"email": "jane@acme.com", "name": "Jane Doe", "company": "Acme"}}


def test_submit_to_succeeded_through_the_worker(client, auth, worker, wait_job):
    _, headers = auth
    resp = client.post("/api/v1/enrichment", json=LEAD, headers=headers)
    assert resp.status_code == 202
    body = wait_job(client, headers, resp.get_json()["job_id"])
    assert body["status"] == "succeeded", body
    assert body["result"]["citations"] and body["result"]["fields"]["linkedin"]
    assert body["usage"]["units"] == 1 and body["usage"]["social_requests"] == 1


@pytest.mark.parametrize("template,lead,queue", [
    ("company_profile", {"domain": "globex.com", "company": "Globex"}, "core"),
    ("person_social", {"linkedin_url": "https://www.linkedin.com/in/jdoe", "name": "J"}, "elite"),
])
def test_every_template_and_tier_runs(client, make_workspace, worker, wait_job,
                                      template, lead, queue):
    _, key = make_workspace(plan={"core": "starter", "elite": "scale"}[queue])
    headers = {"Authorization": f"Bearer {key}"}
    job = client.post("/api/v1/enrichment", json={"template": template, "lead": lead},
                      headers=headers).get_json()
    assert job["queue"] == queue
    assert wait_job(client, headers, job["job_id"])["status"] == "succeeded"


def test_duplicate_task_delivery_charges_once(client, auth, worker, wait_job, db, simulator):
    _, headers = auth
    job_id = client.post("/api/v1/enrichment", json=LEAD, headers=headers).get_json()["job_id"]
    for _ in range(3):  # the broker redelivers, a relay republishes, …
        CeleryPublisher().publish(job_id, "pro")
    assert wait_job(client, headers, job_id)["status"] == "succeeded"
    # Give the duplicates time to be consumed: a job published after them finishes after
    # they were taken (one queue, FIFO). Whatever the timing, a second charge would show below.
    marker = client.post("/api/v1/enrichment", json={"template": "person_social", "lead": {
        "email": "marker@acme.com"}}, headers=headers).get_json()["job_id"]
    assert wait_job(client, headers, marker)["status"] == "succeeded"
    with db.db.connection() as conn:
        rows = conn.execute("SELECT units FROM enrichment_usage WHERE job_id = %s",
                            (job_id,)).fetchall()
    assert rows == [{"units": 1}]
    assert simulator.stats.snapshot()["counts"]["perplexity.ok"] == 1


def test_relay_publishes_a_job_whose_publish_was_lost(client, auth, worker, wait_job, db,
                                                      monkeypatch):
    from enrichment.jobs import outbox

    _, headers = auth
    monkeypatch.setattr(db.publisher, "publish", lambda *a: (_ for _ in ()).throw(OSError()))
    job_id = client.post("/api/v1/enrichment", json=LEAD, headers=headers).get_json()["job_id"]
    monkeypatch.undo()
    assert client.get(f"/api/v1/enrichment/{job_id}", headers=headers).get_json()[
        "status"] == "queued"
    assert outbox.relay_outbox(db.db, db.publisher, older_than_seconds=0) == 1
    assert wait_job(client, headers, job_id)["status"] == "succeeded"



def test_over_real_http_with_gunicorn(make_workspace, worker, tmp_path):
    _, key = make_workspace()
    port = free_port()
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "2", "api.wsgi:app"],
        cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                return requests.get(f"{base}/readyz", timeout=1).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # (still booting)
                return False

        eventually(up, 30)
        resp = requests.post(f"{base}/api/v1/enrichment", json=LEAD, headers=headers, timeout=5)
        assert resp.status_code == 202
        job_url = base + resp.headers["Location"]
        body = {}

        def finished() -> bool:
            nonlocal body
            body = requests.get(job_url, headers=headers, timeout=5).json()
            return body["status"] != "queued" and body["status"] != "processing"

        eventually(finished, 30)
        assert body["status"] == "succeeded"
        bad = requests.post(f"{base}/api/v1/enrichment", data=b"{", headers=headers | {
            "Content-Type": "application/json"}, timeout=5)
        assert bad.status_code == 400
        assert bad.headers["Content-Type"] == "application/problem+json"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        log.close()


def test_workers_answer_every_inspect_not_only_the_first(worker):
    # Each `celery inspect` (and Flower) binds a reply queue of its own to Celery's reply
    # exchange: the transport must not answer later ones from a routing table read earlier.
    for _ in range(3):
        with subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.celery_app",
                               "inspect", "ping", "--timeout", "5"],
                              stdout=subprocess.PIPE, text=True) as inspect:
            out, _ = inspect.communicate(timeout=30)
        assert inspect.returncode == 0 and "pong" in out, out
