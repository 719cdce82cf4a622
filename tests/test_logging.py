"""Logs end to end: gunicorn and a Celery worker run with LOG_FORMAT=json; a job is submitted
with an X-Request-Id and runs. Every line either process wrote is one JSON object; every line
written while handling a request carries its id; the worker's lines for the job carry the job
id and the submitting request's id; no lead field appears anywhere."""

from __future__ import annotations

import json

import pytest
import requests

from bench.stack import Stack

from .conftest import TEST_DATABASE_URL
from .helpers import eventually

pytestmark = pytest.mark.e2e

LEAD = {"email": "logan.secretname@acme-logs.example", "name": "Logan Secretname",
        "company": "Acme Logs Inc"}
FORGED = "forged\" level=ERROR"  # would forge a log line: replaced


def test_json_logs_carry_request_and_job_ids(db, make_workspace, simulator):
    _, key = make_workspace()
    headers = {"Authorization": f"Bearer {key}"}
    # Its own Redis: no other worker of the test session takes the job.
    with Stack({"DATABASE_URL": TEST_DATABASE_URL, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"},
               own_redis=True) as stack:
        stack.worker(concurrency=1)
        api = stack.gunicorn()
        resp = requests.post(f"{api}/api/v1/enrichment", timeout=10,
                             headers={**headers, "X-Request-Id": "req-logs-1"},
                             json={"template": "person_basic", "lead": LEAD})
        assert resp.status_code == 202, resp.text
        assert resp.headers["X-Request-Id"] == "req-logs-1"
        job_id = resp.json()["job_id"]
        eventually(lambda: requests.get(f"{api}/api/v1/enrichment/{job_id}", headers=headers,
                                        timeout=5).json()["status"] == "succeeded", 30)
        # A request id that could forge a log line is replaced; problems carry the id too.
        bad = requests.get(f"{api}/api/v1/enrichment/00000000-0000-0000-0000-000000000000",
                           headers={**headers, "X-Request-Id": FORGED}, timeout=5)
        assert bad.status_code == 404
        assert bad.json()["request_id"] == bad.headers["X-Request-Id"] != FORGED
        # The worker logs the job's end after the API already shows it.
        eventually(lambda: job_id in (stack.logs / "worker.log").read_text(), 10)
        texts = {p.name: p.read_text() for p in stack.logs.glob("*.log")}

    records = []
    for name, text in texts.items():
        for line in text.splitlines():
            try:
                record = json.loads(line)  # every line, of every process, is JSON
            except ValueError:
                pytest.fail(f"{name}: not JSON: {line!r}")
            assert {"time", "level", "logger", "message"} <= record.keys(), line
            records.append((name, record))
        for value in LEAD.values():  # no personal field in any log
            assert value.lower() not in text.lower(), (name, value)
    access = [r for _, r in records if r["logger"] == "api.access"]
    assert access and all(r["request_id"] for r in access)
    assert any(r["request_id"] == "req-logs-1" and "enrichment.submit" in r["message"]
               for r in access)
    of_job = [r for name, r in records if name == "worker.log" and r["job_id"] == job_id]
    assert of_job and all(r["request_id"] == "req-logs-1" for r in of_job)
