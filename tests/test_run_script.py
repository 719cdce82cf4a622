"""`make run` (scripts/run.py) leaves nothing behind: Ctrl-C, SIGTERM to the launcher or to its
process group, SIGHUP (terminal closed) and a crash of the launcher itself (SIGKILL) stop every
process it started — the API's gunicorn master and workers, both Celery workers and their pool,
beat, Flower and the simulators — and free their ports within seconds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.stack import free_port
from enrichment import db as db_module

from .helpers import eventually

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
# The launcher's own database and Redis DBs: not the suite's (conftest), not a developer's.
DATABASE_URL = "postgresql:///enrichment_test_run"
REDIS_URL = "redis://127.0.0.1:6379/2"
BROKER_URL = "redis://127.0.0.1:6379/3"  # CELERY_BROKER_URL (enrichment.config)
# Everything it started is gone within this (idle workers shut down in a second or two; the
# 35 s grace is for running tasks, and there are none).
STOP_DEADLINE = 20


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from the state on (state, ppid, …), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rfind(")") + 2:].split()


def descendants(root: int) -> dict[tuple[int, str], str]:
    """(pid, start time) → command line of every process below `root`. The start time tells a
    process from a later one that got its pid."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := proc_stat(int(entry))):
            children.setdefault(int(fields[1]), []).append((int(entry), fields[19]))
    found, todo = {}, [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
            except FileNotFoundError:
                continue
            found[pid, started] = cmdline
            todo.append(pid)
    return found


def running(pid: int, started: str) -> bool:
    fields = proc_stat(pid)
    # A zombie has exited: only its parent's (or init's) wait is pending.
    return fields is not None and fields[19] == started and fields[0] != "Z"


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def database() -> str:
    # Created and migrated once: the launcher's own `db upgrade` then finds nothing to do.
    db_module.ensure_database(DATABASE_URL)
    db_module.upgrade(DATABASE_URL)
    return DATABASE_URL


@pytest.fixture
def launcher(tmp_path, database):
    """scripts/run.py started as `make run` would be, in a process group of its own, up and
    running with all its processes. Yields (launcher, its processes, their ports, its output)."""
    # Free ports, never 8000/5555: a developer's real `make run` may hold them. The issue's
    # "8000 and 5555 are free afterwards" becomes "these ports are free afterwards".
    ports = {var: free_port()
             for var in ("API_PORT", "FLOWER_PORT", "SIMULATOR_PORT", "POSTHOG_FAKE_PORT")}
    run_dir = tmp_path / "run"  # RUN_DIR: logs etc. out of the developer's .run
    # A clean environment: no provider, Stripe or PostHog keys (from a developer's shell or
    # conftest), so the launcher starts its simulators; no MAKELEVEL.
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "USER", "TMPDIR") or k.startswith("PG")}
    env.update({k: str(v) for k, v in ports.items()}, DATABASE_URL=database,
               REDIS_URL=REDIS_URL, CELERY_BROKER_URL=BROKER_URL, RUN_DIR=str(run_dir),
               WORKER_CONCURRENCY="1")
    out_path = tmp_path / "launcher.out"
    with out_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "scripts/run.py"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def output() -> str:
        return out_path.read_text(errors="replace")

    def log(name: str) -> str:
        path = run_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    tree: dict[tuple[int, str], str] = {}
    try:
        # Its banner: migrated, every process started, the API ready.
        eventually(lambda: "Ctrl-C stops everything" in output() or proc.poll() is not None,
                   timeout=120)
        assert proc.poll() is None, output()
        # And the rest up: the Celery workers with their pool, Flower listening.
        eventually(lambda: "celery@" in log("worker") and " ready." in log("worker")
                   and " ready." in log("webhooks") and port_busy(ports["FLOWER_PORT"]),
                   timeout=60)
        tree = descendants(proc.pid)
        commands = " | ".join(tree.values())
        for what in ("gunicorn", "worker -c 1", "-Q webhooks", " beat ", " flower ",
                     "simulators.providers", "simulators.posthog_fake"):
            assert what in commands, f"{what!r} not among {commands}"
        yield proc, tree, ports, output
    finally:  # a failed test leaves nothing either
        for pid, started in tree:
            if running(pid, started):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def survivors(tree: dict[tuple[int, str], str]) -> list[str]:
    return [f"{pid} {cmd}" for (pid, started), cmd in tree.items() if running(pid, started)]


@pytest.mark.parametrize("stop", [
    pytest.param(lambda pid: os.kill(pid, signal.SIGTERM), id="SIGTERM-to-launcher"),
    # What a supervisor, a CI timeout or `timeout` does.
    pytest.param(lambda pid: os.killpg(pid, signal.SIGTERM), id="SIGTERM-to-group"),
    pytest.param(lambda pid: os.killpg(pid, signal.SIGINT), id="SIGINT-Ctrl-C"),
    pytest.param(lambda pid: os.killpg(pid, signal.SIGHUP), id="SIGHUP-terminal-closed"),
    # The launcher crashes: its children learn it from the kernel (PR_SET_PDEATHSIG).
    pytest.param(lambda pid: os.kill(pid, signal.SIGKILL), id="SIGKILL-to-launcher"),
])
def test_stopping_the_launcher_stops_everything_it_started(launcher, stop):
    proc, tree, ports, output = launcher
    stop(proc.pid)
    try:
        eventually(lambda: proc.poll() is not None and not survivors(tree),
                   timeout=STOP_DEADLINE)
    except AssertionError:
        raise AssertionError(f"still running: {survivors(tree)}\n{output()}") from None
    assert [p for p in ports.values() if port_busy(p)] == []
    if proc.returncode != -signal.SIGKILL:
        assert proc.returncode == 0, output()  # a requested stop, not a failure
        assert "stopping" in output()
