"""`make run`: migrate, then start the API, a worker, beat, Flower and (without provider keys)
the provider simulators (Perplexity and Social Links; Hunter). Prints where everything is.

Ctrl-C, SIGTERM (to the launcher or to its process group) and SIGHUP stop every process it
started: SIGTERM to each child's process group, a grace period, then SIGKILL; a second Ctrl-C
kills at once. If the launcher itself dies (SIGKILL, a crash), the kernel sends each child
SIGTERM (Linux PR_SET_PDEATHSIG) and the child stops its own processes: the gunicorn master its
workers, a celery worker its pool.

Under `make run`: Ctrl-C, or a signal to make's process group, reaches make and the launcher
alike, and make waits for the launcher to finish stopping. SIGTERM to make alone: make passes
it on to the launcher. SIGKILL to make alone: the launcher asked for SIGTERM when make dies."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Logs, the demo key, beat's schedule, metrics. Tests set RUN_DIR: a developer's .run stays.
RUN = Path(os.environ.get("RUN_DIR") or ROOT / ".run").absolute()
LOGS = RUN / "logs"
BIN = Path(sys.executable).parent
API_PORT = int(os.environ.get("API_PORT", "8000"))
FLOWER_PORT = int(os.environ.get("FLOWER_PORT", "5555"))
SIM_PORT = int(os.environ.get("SIMULATOR_PORT", "8010"))
POSTHOG_PORT = int(os.environ.get("POSTHOG_FAKE_PORT", "8020"))
HUNTER_PORT = int(os.environ.get("HUNTER_FAKE_PORT", "8011"))
# The API and Flower listen on this machine only unless told otherwise.
HOST = os.environ.get("BIND_HOST", "127.0.0.1")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Seconds from SIGTERM to SIGKILL. Celery workers shut down warm: the tasks they run finish
# first (a provider round takes up to 30 s, a webhook delivery 10 s). The others stop at once
# when asked; QUICK is for one that hangs.
GRACE = {"worker": 35, "webhooks": 35}
QUICK = 5

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
LAUNCHER = os.getpid()  # also read in the children (in_child), where getpid() is their own
LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None
PR_SET_PDEATHSIG = 1
stopping = False  # the first stop signal arrived, or stop() began
force = False  # a stop signal during stop(): kill without waiting


class Stop(Exception):
    """Raised by the first stop signal, wherever the launcher is: starting up or waiting."""


def on_signal(signum: int, _frame) -> None:
    # Once stopping, a flag and never an exception: nothing may cut stop() short (a handler
    # calling sys.exit could, and left children running). Only a second Ctrl-C kills at once:
    # a SIGTERM can arrive twice (make forwards the one its process group got).
    global stopping, force
    if stopping:
        force = force or signum == signal.SIGINT
        return
    stopping = True
    raise Stop(signal.Signals(signum).name)


def die_with(parent: int) -> bool:
    """Ask the kernel for SIGTERM when our parent dies (Linux). False if the parent is no longer
    `parent`: it died before we asked, and no signal will come."""
    if LIBC is not None:
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    return os.getppid() == parent


def in_child() -> None:
    """preexec_fn of every child: runs in it between fork and exec."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # start() blocks them over fork
    # The signal comes when the thread that forked us exits: the launcher's only thread.
    if not die_with(LAUNCHER):
        os._exit(1)


def say(*args, file=sys.stdout) -> None:
    with contextlib.suppress(OSError):  # the terminal is gone (SIGHUP): stopping matters more
        print(*args, file=file, flush=True)


def run_once(cmd: list, env: dict, **kwargs) -> subprocess.CompletedProcess:
    """A command that ends by itself (migration, …). It stays in the launcher's process group,
    where Ctrl-C reaches it too; on Stop, subprocess.run kills it."""
    return subprocess.run(cmd, env=env, preexec_fn=in_child, **kwargs)


def start(procs: dict[str, subprocess.Popen], name: str, cmd: list, env: dict) -> None:
    """Start a long-running child in a session (and process group) of its own: one killpg
    reaches its worker processes too, and a Ctrl-C at the terminal reaches it only through
    stop(), once."""
    # Stop signals wait until the child is in `procs`: a Stop raised inside Popen, after the
    # fork, would leave a child stop() doesn't know. Unblocking delivers them.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        with open(LOGS / f"{name}.log", "ab") as log:  # the child has its own descriptor
            procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True,
                                           preexec_fn=in_child)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # nothing left in the group
        os.killpg(proc.pid, sig)


def stop(procs: dict[str, subprocess.Popen]) -> None:
    """SIGTERM to every child's process group; SIGKILL to those still running after their grace
    period, or at once after another stop signal."""
    global stopping
    stopping = True  # from here on a signal can only hurry the stop
    begun = time.monotonic()
    deadlines = {name: begun + GRACE.get(name, QUICK) for name in procs}
    for proc in procs.values():
        kill_group(proc, signal.SIGTERM)
    killed: set[str] = set()
    told = False
    while running := [name for name, proc in procs.items() if proc.poll() is None]:
        now = time.monotonic()
        late = [n for n in running if n not in killed and (force or now >= deadlines[n])]
        if late:
            say(f"killing {', '.join(late)}" + ("" if force else " (grace period over)"),
                file=sys.stderr)
            for name in late:
                kill_group(procs[name], signal.SIGKILL)
            killed.update(late)
        elif not told and now - begun > 2:
            say("waiting for " + ", ".join(f"{n} (up to {deadlines[n] - now:.0f} s)"
                                           for n in running) + "; Ctrl-C again kills now")
            told = True
        time.sleep(0.1)
    # Anything a child left in its group once it exited (none, when they stop properly).
    for proc in procs.values():
        kill_group(proc, signal.SIGKILL)


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def http(method: str, url: str, key: str | None = None) -> int:
    req = urllib.request.Request(url, method=method)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def demo_key(env: dict) -> str:
    """Reuse the demo workspace's key across runs; create one if it no longer works."""
    saved = RUN / "demo.json"
    api = f"http://127.0.0.1:{API_PORT}/api/v1/templates"
    if saved.exists():
        key = json.loads(saved.read_text())["api_key"]
        if http("GET", api, key) == 200:
            return key
    out = run_once(
        [BIN / "enrichment", "workspace", "create", "--name", "Demo", "--plan", "pro", "--json"],
        env, check=True, capture_output=True, text=True,
    ).stdout
    saved.write_text(out)
    return json.loads(out)["api_key"]


def main() -> int:
    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    # Under make, make is our parent; if it is killed outright (SIGKILL) nothing else tells us.
    if os.environ.get("MAKELEVEL") and not die_with(os.getppid()):
        return 1
    procs: dict[str, subprocess.Popen] = {}
    try:
        return launch(procs)
    except Stop as signame:
        say(f"\n{signame}: stopping…")
        return 0
    finally:  # also after a failure to start (migration, a child exiting, an exception)
        # (A signal in the instant before stop() sets its flag would skip it: the children
        # still get SIGTERM from the kernel as the launcher exits.)
        stop(procs)


def launch(procs: dict[str, subprocess.Popen]) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    simulate = not env.get("PERPLEXITY_API_KEY") and not env.get("SOCIAL_LINKS_API_KEY")
    local_posthog = not env.get("POSTHOG_API_KEY")
    local_hunter = not env.get("HUNTER_API_KEY")
    env.setdefault("CONSOLE_INSECURE_COOKIES", "true")  # the console over local plain http
    ports = [API_PORT, FLOWER_PORT] + ([SIM_PORT] if simulate else []) + (
        [POSTHOG_PORT] if local_posthog else []) + ([HUNTER_PORT] if local_hunter else [])
    busy = [p for p in ports if port_busy(p)]
    if busy:
        say(f"port(s) {busy} already in use — is another `make run` still up?", file=sys.stderr)
        return 1

    run_once([BIN / "enrichment", "db", "upgrade"], env, check=True)
    if env.get("STRIPE_API_KEY"):  # the Stripe catalog the workspaces subscribe to
        synced = run_once([BIN / "enrichment", "billing", "sync-catalog"], env,
                          capture_output=True, text=True)
        if synced.returncode:
            say(f"warning: Stripe catalog not synced ({synced.stderr.strip()}); workspaces "
                "are attached once `enrichment billing sync-catalog` succeeds", file=sys.stderr)
    # Every process writes its Prometheus samples here; the API's /metrics serves them all.
    metrics_dir = RUN / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

    commands: dict[str, list] = {}
    if local_posthog:
        env.update(POSTHOG_API_KEY="phc_local", POSTHOG_HOST=f"http://127.0.0.1:{POSTHOG_PORT}")
        commands["posthog"] = [sys.executable, "-m", "simulators.posthog_fake",
                               "--port", str(POSTHOG_PORT)]
    if simulate:
        base = f"http://127.0.0.1:{SIM_PORT}"
        env.update(PERPLEXITY_API_BASE=base, SOCIAL_LINKS_API_BASE=base,
                   PERPLEXITY_API_KEY="simulator", SOCIAL_LINKS_API_KEY="simulator")
        commands["simulator"] = [
            sys.executable, "-m", "simulators.providers", "--port", str(SIM_PORT),
            "--perplexity-rps", env.get("PERPLEXITY_PLAN_RPS", "2.0"),
            "--social-rps", env.get("SOCIAL_LINKS_PLAN_RPS", "10"),
        ]
    if local_hunter:
        env.update(HUNTER_API_BASE=f"http://127.0.0.1:{HUNTER_PORT}", HUNTER_API_KEY="simulator")
        commands["hunter"] = [
            sys.executable, "-m", "simulators.hunter", "--port", str(HUNTER_PORT),
            "--finder-rps", env.get("HUNTER_FINDER_RPS", "15"),
            "--finder-rpm", env.get("HUNTER_FINDER_RPM", "500")]
    celery = [BIN / "celery", "-A", "workers.celery_app"]
    # No gunicorn access log: paths and queries can hold identifiers; the app logs routes.
    commands["api"] = [BIN / "gunicorn", "-b", f"{HOST}:{API_PORT}", "-w", "2", "-k", "gthread",
                       "--threads", "4", "api.wsgi:app"]
    # Levels and formats come from LOG_LEVEL and LOG_FORMAT (celery's --loglevel is not read).
    commands["worker"] = [*celery, "worker", "-c", env.get("WORKER_CONCURRENCY", "8")]
    # Webhook deliveries: their own queue and workers (threads: they mostly wait on receivers).
    commands["webhooks"] = [*celery, "worker", "-Q", "webhooks", "-P", "threads", "-c", "8",
                            "-n", "webhooks@%h"]
    commands["beat"] = [*celery, "beat",
                        "--schedule", str(RUN / "celerybeat-schedule")]
    if HOST in LOOPBACK or env.get("FLOWER_BASIC_AUTH"):
        commands["flower"] = [*celery, "flower", f"--address={HOST}", f"--port={FLOWER_PORT}"]
    else:  # Flower shows task arguments and controls workers: never open without credentials
        say(f"Flower not started: BIND_HOST={HOST} is reachable from other machines; set "
            "FLOWER_BASIC_AUTH=user:password to start it there.", file=sys.stderr)

    for name, cmd in commands.items():
        start(procs, name, cmd, env)
    deadline = time.monotonic() + 60
    while http("GET", f"http://127.0.0.1:{API_PORT}/readyz") != 200:
        dead = [n for n, p in procs.items() if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            say(f"failed to start: {dead or 'api not ready'}; see {LOGS}", file=sys.stderr)
            return 1
        time.sleep(0.3)
    key = demo_key(env)
    sim = f"http://127.0.0.1:{SIM_PORT}" if simulate else "off (provider keys set)"
    hunter = f"http://127.0.0.1:{HUNTER_PORT} (fake)" if local_hunter else "HUNTER_API_KEY set"
    events = (f"http://127.0.0.1:{POSTHOG_PORT}/_test/events (local capture server)"
              if local_posthog else env.get("POSTHOG_HOST", "PostHog"))
    say(f"""
  API        http://127.0.0.1:{API_PORT}   (readiness: /readyz)
  Console    http://127.0.0.1:{API_PORT}/console/   (sign in with the key below)
  Flower     http://127.0.0.1:{FLOWER_PORT}   (queues elite / pro / core)
  Worker     every queue of workers/celery_app.py (maintenance + the plans' tiers)
  Webhooks   the webhooks queue (its own worker: a slow receiver holds up no job)
  Beat       schedule in beat_schedule.py
  Simulator  {sim}
  Hunter     {hunter}
  Metrics    http://127.0.0.1:{API_PORT}/metrics   (alerts: enrichment alerts)
  Events     {events}
  Logs       {LOGS}/*.log

  Try it (demo workspace on plan 'pro'):

  curl -s -X POST http://127.0.0.1:{API_PORT}/api/v1/enrichment \\
    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
    -d '{{"template": "person_basic",
         "lead": {{"email": "jane@acme.com", "name": "Jane Doe", "company": "Acme"}}}}'

  curl -s http://127.0.0.1:{API_PORT}/api/v1/enrichment/<job_id> -H 'Authorization: Bearer {key}'

  Ctrl-C stops everything.
""")
    while True:
        for name, proc in procs.items():
            if proc.poll() is not None:
                say(f"{name} exited ({proc.returncode}); stopping. See {LOGS}/{name}.log",
                    file=sys.stderr)
                return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
