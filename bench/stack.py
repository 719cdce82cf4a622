"""A throw-away stack for benchmarks: a bench database, the provider simulator, gunicorn and a
Celery worker on free ports, all on this machine."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import requests
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = os.environ.get("BENCH_DATABASE_URL", "postgresql:///enrichment_bench")
# The Redis server whose databases 12 and 13 a stack uses (one bench run at a time per server).


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_database(url: str = BENCH_DB) -> str:
    from enrichment import db

    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
    db.ensure_database(url)
    db.upgrade(url)
    return url


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout}s")
        time.sleep(0.1)


class RedisServer:
    """A redis-server of our own on a free port, in its own directory (AOF everysec unless
    told otherwise): for a process that breaks it, or a figure that must be its own."""

    def __init__(self, directory: str | Path, *extra: str):
        self.port, self.dir, self.extra = free_port(), Path(directory), extra
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.dir), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--maxmemory-policy", "noeviction", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(port=self.port, socket_timeout=1)

        def ours() -> bool:  # up, and really this server (another process may hold a port)
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            try:
                return client.config_get("dir")["dir"] == str(self.dir)
            except redis.RedisError:
                return False

        wait_until(ours, 10, "redis-server")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)


def pg_bindir() -> Path | None:
    """Where initdb and pg_ctl are: the newest /usr/lib/postgresql/<ver>/bin, else
    `pg_config --bindir`; None without PostgreSQL server binaries."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if found:
        return found[-1].parent
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             check=True)
        if (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    return None


class PostgresServer:
    """A PostgreSQL cluster of our own: `initdb` (trust auth) into a new temporary directory,
    listening on 127.0.0.1 at a free port (and a socket in that directory), fsync off, with
    database `dbname`: for a test that stops it. initdb and postgres refuse to run as root: as
    root they run as the `postgres` user, who owns the directory. `close()` stops it and
    removes the directory."""

    # fsync off loses nothing when only the server stops (the OS keeps the writes);
    # synchronous_commit stays on: `stop -m immediate` would lose commits already answered.
    SETTINGS = ("listen_addresses=127.0.0.1", "fsync=off", "full_page_writes=off")

    def __init__(self, dbname: str = "enrichment", user: str = "postgres", tries: int = 5):
        self.bindir, self.dbname, self.user, self.port = pg_bindir(), dbname, user, 0
        if self.bindir is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb) on this machine")
        self.dir = Path(tempfile.mkdtemp(prefix="own-postgres-"))
        self.data = self.dir / "data"
        try:
            if os.geteuid() == 0:
                shutil.chown(self.dir, "postgres", "postgres")
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", user, "-E", "UTF8",
                      "--no-sync")
            for attempt in range(tries):  # another process may take the port we picked
                self.port = free_port()
                try:
                    self.start()
                    break
                except RuntimeError:
                    if attempt == tries - 1:
                        raise
            with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return self.url_for(self.dbname)

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        """Start it (`pg_ctl -w`: once it accepts connections), then check that what answers
        on 127.0.0.1:port is this cluster; RuntimeError if not."""
        opts = ["-p", str(self.port), "-k", str(self.dir)]
        for setting in self.SETTINGS:
            opts += ["-c", setting]
        done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "postgres.log"),
                         "-w", "-t", "60", "-o", shlex.join(opts), "start", check=False)
        if done.returncode == 0 and self._ours():
            return
        if done.returncode == 0:
            self.stop("immediate")
        log = (self.dir / "postgres.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"postgres did not start on port {self.port}:\n{done.stdout}"
                           f"{done.stderr}{log}")

    def _ours(self) -> bool:
        try:
            with psycopg.connect(self.url_for("postgres"), connect_timeout=5) as conn:
                (data,) = conn.execute("SHOW data_directory").fetchone()
        except psycopg.Error:
            return False
        return os.path.realpath(data) == os.path.realpath(self.data)

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m smart|fast|immediate`, waiting until it is down."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        """Stop it if it runs, remove its directory. (Were the stop to fail, the postmaster
        shuts itself down on finding its postmaster.pid gone.)"""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop",
                      check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
        return done


class Stack(contextlib.ExitStack):
    """Processes started here are stopped (process group SIGTERM, then SIGKILL) on exit.
    `own_redis`: a redis-server of the stack's own serves Redis and the broker (figures such
    as commands run or peak memory are then the stack's alone)."""

    def __init__(self, env: dict | None = None, own_redis: bool = False):
        super().__init__()
        self.logs = Path(tempfile.mkdtemp(prefix="bench-"))
        redis_base = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
        self.redis_server = None
        if own_redis:
            (self.logs / "redis").mkdir()
            self.redis_server = RedisServer(self.logs / "redis", "--appendonly", "no")
            self.callback(self.redis_server.stop)
            redis_base = self.redis_server.url
        self.env = {**os.environ, "DATABASE_URL": BENCH_DB,
                    "REDIS_URL": f"{redis_base}/12",
                    "CELERY_BROKER_URL": f"{redis_base}/13",
                    "LOG_LEVEL": "WARNING",  # no line per job in the figures
                    **(env or {})}
        import redis

        for url in {self.env["REDIS_URL"], self.env["CELERY_BROKER_URL"]}:
            redis.Redis.from_url(url).flushdb()

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

        def stop():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.close()

        self.callback(stop)
        return proc

    def simulator(self, *args: str) -> str:
        port = free_port()
        self.spawn("simulator", [sys.executable, "-m", "simulators.providers",
                                 "--port", str(port), *args])
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ok(f"{url}/_sim/config"), 20, "simulator")
        self.env.update(PERPLEXITY_API_BASE=url, SOCIAL_LINKS_API_BASE=url,
                        PERPLEXITY_API_KEY="bench", SOCIAL_LINKS_API_KEY="bench")
        return url

    def worker(self, concurrency: int = 4, name: str = "worker", queues: str | None = None,
               pool: str | None = None, include: str | None = None) -> subprocess.Popen:
        """A Celery worker: every queue of the app, or `queues` (e.g. "webhooks"); `include`:
        modules of tasks to register besides the app's (e.g. "bench.floor_tasks"). Returns
        once this worker answers a ping (not any other worker of the stack)."""
        extra = [*(["-Q", queues] if queues else []), *(["-P", pool] if pool else []),
                 *(["-I", include] if include else [])]
        node = f"{name}-{os.getpid()}@{socket.gethostname()}"  # what `%h` expands to
        proc = self.spawn(name, [sys.executable, "-m", "celery", "-A", "workers.celery_app",
                                 "--quiet", "worker", "-c", str(concurrency), *extra,
                                 "--without-mingle", "--without-gossip", "-n", node])
        wait_until(lambda: proc.poll() is not None or _ping_worker(self.env, node), 30,
                   "worker")
        if proc.poll() is not None:
            log = (self.logs / f"{name}.log").read_text()[-2000:]
            raise RuntimeError(f"worker {name} exited at start:\n{log}")
        return proc

    def gunicorn(self, app: str = "api.wsgi:app", workers: int = 2, threads: int = 1,
                 worker_class: str = "sync") -> str:
        port = free_port()
        self.spawn(f"gunicorn-{port}", [sys.executable, "-m", "gunicorn", "-b",
                                        f"127.0.0.1:{port}", "-w", str(workers),
                                        "--threads", str(threads), "-k", worker_class, app])
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ok(f"{url}/healthz"), 30, "gunicorn")
        return url


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _ping_worker(env: dict, node: str | None = None) -> bool:
    """Some worker (or the worker named `node`) answers a ping."""
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "workers.celery_app", "inspect",
                          "ping", "--timeout", "1", *(["-d", node] if node else [])],
                         cwd=ROOT, env=env, capture_output=True)
    return out.returncode == 0


def create_workspace(plan: str = "pro", region: str = "us", plans_file: str = "") -> str:
    """A workspace in the bench database; returns its API key."""
    from enrichment.config import Settings
    from enrichment.workspaces import create_workspace as create

    plans = Settings.from_env({"PLANS_FILE": plans_file}).plans
    with psycopg.connect(BENCH_DB) as conn:
        _, key = create(conn, plans, "bench", plan, region)
    return key


def table(title: str, header: list[str], rows: list[list]) -> None:
    """Print a plain aligned table."""
    cells = [header] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, r in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths, strict=True))))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    return str(value)
