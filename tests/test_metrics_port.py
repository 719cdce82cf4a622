"""The worker metrics port (WORKER_METRICS_PORT): loopback unless WORKER_METRICS_HOST says
otherwise, and behind METRICS_TOKEN as the API's /metrics. The server is started as the
worker_ready handler starts it, without a Celery worker."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
import requests

from enrichment import metrics
from enrichment.config import Settings

TOKEN = "s3cret-metrics-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(monkeypatch, **settings) -> Iterator[tuple[object, int]]:
    """`workers.tasks._serve_metrics` with these settings, on a free port."""
    from workers import tasks

    port = free_port()
    config = Settings(worker_metrics_port=port, **settings)
    monkeypatch.setattr(tasks, "settings", lambda: config)
    server = tasks._serve_metrics()
    try:
        yield server, port
    finally:
        server.shutdown()
        server.server_close()


def get(port: int, **headers) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=5)


def test_the_token_is_required_when_set(monkeypatch):
    metrics.JOBS_FINISHED.labels("succeeded").inc()  # a sample from this process, in the dir
    with serving(monkeypatch, metrics_token=TOKEN) as (_, port):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}):
            refused = get(port, **headers)
            assert refused.status_code == 401, headers
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            assert "enrichment_" not in refused.text

        ok = get(port, Authorization=f"Bearer {TOKEN}")
        assert ok.status_code == 200
        assert ok.headers["Content-Type"].startswith("text/plain")
        # The multiprocess collector: what this process wrote to PROMETHEUS_MULTIPROC_DIR.
        assert "# TYPE enrichment_jobs_finished" in ok.text
        assert 'enrichment_jobs_finished_total{status="succeeded"}' in ok.text


def test_without_a_token_it_answers_anyone(monkeypatch):
    with serving(monkeypatch, metrics_token=None) as (_, port):
        ok = get(port)
        assert ok.status_code == 200
        assert "# TYPE" in ok.text


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine other than loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: routes only, nothing is sent
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_it_listens_on_loopback_by_default(monkeypatch):
    assert Settings.from_env({}).worker_metrics_host == "127.0.0.1"
    with serving(monkeypatch) as (server, port):
        assert server.socket.getsockname() == ("127.0.0.1", port)
        assert get(port).status_code == 200
        address = non_loopback_address()
        if address is None:
            pytest.skip("no non-loopback address to try")
        with pytest.raises(OSError), socket.create_connection((address, port), timeout=2):
            pass


def test_worker_metrics_host_opens_it_to_other_addresses(monkeypatch):
    assert Settings.from_env({"WORKER_METRICS_HOST": "0.0.0.0"}).worker_metrics_host == \
        "0.0.0.0"
    with serving(monkeypatch, worker_metrics_host="0.0.0.0") as (server, port):
        assert server.socket.getsockname() == ("0.0.0.0", port)
        address = non_loopback_address()
        if address is not None:
            with socket.create_connection((address, port), timeout=2):
                pass


def test_no_port_no_server(monkeypatch):
    from workers import tasks

    monkeypatch.setattr(tasks, "settings", lambda: Settings(worker_metrics_port=None))
    assert tasks._serve_metrics() is None
