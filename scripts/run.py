"""`make run`: migrate, then start the API, a worker, beat, Flower and (without provider keys)
the provider simulator. Prints where everything is; Ctrl-C stops every process it started."""

from __future__ import annotations

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
RUN = ROOT / ".run"
LOGS = RUN / "logs"
BIN = Path(sys.executable).parent
API_PORT = int(os.environ.get("API_PORT", "8000"))
FLOWER_PORT = int(os.environ.get("FLOWER_PORT", "5555"))
SIM_PORT = int(os.environ.get("SIMULATOR_PORT", "8010"))
POSTHOG_PORT = int(os.environ.get("POSTHOG_FAKE_PORT", "8020"))
# The API and Flower listen on this machine only unless told otherwise.
HOST = os.environ.get("BIND_HOST", "127.0.0.1")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


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
    out = subprocess.run(
        [BIN / "enrichment", "workspace", "create", "--name", "Demo", "--plan", "pro", "--json"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    saved.write_text(out)
    return json.loads(out)["api_key"]


def main() -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    simulate = not env.get("PERPLEXITY_API_KEY") and not env.get("SOCIAL_LINKS_API_KEY")
    local_posthog = not env.get("POSTHOG_API_KEY")
    ports = [API_PORT, FLOWER_PORT] + ([SIM_PORT] if simulate else []) + (
        [POSTHOG_PORT] if local_posthog else [])
    busy = [p for p in ports if port_busy(p)]
    if busy:
        print(f"port(s) {busy} already in use — is another `make run` still up?", file=sys.stderr)
        return 1

    subprocess.run([BIN / "enrichment", "db", "upgrade"], env=env, check=True)
    if env.get("STRIPE_API_KEY"):  # the Stripe catalog the workspaces subscribe to
        synced = subprocess.run([BIN / "enrichment", "billing", "sync-catalog"], env=env,
                                capture_output=True, text=True)
        if synced.returncode:
            print(f"warning: Stripe catalog not synced ({synced.stderr.strip()}); workspaces "
                  "are attached once `enrichment billing sync-catalog` succeeds",
                  file=sys.stderr)
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
    celery = [BIN / "celery", "-A", "workers.celery_app"]
    # No gunicorn access log: paths and queries can hold identifiers; the app logs routes.
    commands["api"] = [BIN / "gunicorn", "-b", f"{HOST}:{API_PORT}", "-w", "2", "api.wsgi:app"]
    commands["worker"] = [*celery, "worker", "-c", env.get("WORKER_CONCURRENCY", "8"),
                          "--loglevel", "INFO"]
    # Webhook deliveries: their own queue and workers (threads: they mostly wait on receivers).
    commands["webhooks"] = [*celery, "worker", "-Q", "webhooks", "-P", "threads", "-c", "8",
                            "-n", "webhooks@%h", "--loglevel", "INFO"]
    commands["beat"] = [*celery, "beat", "--loglevel", "INFO",
                        "--schedule", str(RUN / "celerybeat-schedule")]
    if HOST in LOOPBACK or env.get("FLOWER_BASIC_AUTH"):
        commands["flower"] = [*celery, "flower", f"--address={HOST}", f"--port={FLOWER_PORT}"]
    else:  # Flower shows task arguments and controls workers: never open without credentials
        print(f"Flower not started: BIND_HOST={HOST} is reachable from other machines; set "
              "FLOWER_BASIC_AUTH=user:password to start it there.", file=sys.stderr)

    procs: dict[str, subprocess.Popen] = {}

    def stop(*_):
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for name, cmd in commands.items():
            log = open(LOGS / f"{name}.log", "ab")  # noqa: SIM115 (owned by the child)
            procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while http("GET", f"http://127.0.0.1:{API_PORT}/readyz") != 200:
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                print(f"failed to start: {dead or 'api not ready'}; see {LOGS}", file=sys.stderr)
                return 1
            time.sleep(0.3)
        key = demo_key(env)
        sim = f"http://127.0.0.1:{SIM_PORT}" if simulate else "off (provider keys set)"
        events = (f"http://127.0.0.1:{POSTHOG_PORT}/_test/events (local capture server)"
                  if local_posthog else env.get("POSTHOG_HOST", "PostHog"))
        print(f"""
  API        http://127.0.0.1:{API_PORT}   (readiness: /readyz)
  Flower     http://127.0.0.1:{FLOWER_PORT}   (queues elite / pro / core)
  Worker     every queue of workers/celery_app.py (maintenance + the plans' tiers)
  Webhooks   the webhooks queue (its own worker: a slow receiver holds up no job)
  Beat       schedule in beat_schedule.py
  Simulator  {sim}
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
""", flush=True)
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited ({proc.returncode}); stopping. See {LOGS}/{name}.log",
                          file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
