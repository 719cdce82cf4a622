"""Run a command (default `make test`) while a second client holds a connection to the
machine's PostgreSQL and a Redis MONITOR on the machine's Redis, and report whether either was
ever disconnected.

    .venv/bin/python scripts/check_machine_untouched.py [--pg URL] [--redis HOST:PORT] [-- CMD…]

Every second: `SELECT 1` on the PostgreSQL connection, and a check that the MONITOR stream is
still open (a thread drains it, counting lines; a probe client sends an ECHO each second so
the stream always has something to carry). Also compared before/after: the server's start
time and settings (pg_postmaster_start_time, pg_settings; Redis run_id, CONFIG GET *).
Exit status: 2 if either was disconnected or restarted, else the command's own."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time

import psycopg
import redis


class Monitor(threading.Thread):
    """A raw MONITOR connection, drained as fast as it comes; `error` is set once it ends."""

    def __init__(self, host: str, port: int):
        super().__init__(daemon=True)
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.sendall(b"MONITOR\r\n")
        first = self.sock.recv(5)
        if not first.startswith(b"+OK"):
            raise RuntimeError(f"MONITOR refused: {first!r}")
        self.sock.settimeout(None)
        self.lines = 0
        self.last_read = time.monotonic()
        self.error: str | None = None

    def run(self) -> None:
        try:
            while chunk := self.sock.recv(1 << 16):
                self.lines += chunk.count(b"\n")
                self.last_read = time.monotonic()
            self.error = "closed by the server"
        except OSError as exc:
            self.error = repr(exc)


def pg_snapshot(conn: psycopg.Connection) -> tuple:
    start = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    settings = dict(conn.execute("SELECT name, setting FROM pg_settings").fetchall())
    return start, settings


def redis_snapshot(client: redis.Redis) -> tuple:
    return client.info("server")["run_id"], client.config_get("*")


def changed(before: dict, after: dict) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", default="postgresql:///postgres")
    parser.add_argument("--redis", default="127.0.0.1:6379")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    command = command or ["make", "test"]
    host, port = args.redis.rsplit(":", 1)

    pg = psycopg.connect(args.pg, autocommit=True)
    pg_pid = pg.info.backend_pid
    pg_before = pg_snapshot(pg)
    probe = redis.Redis(host=host, port=int(port), socket_timeout=5)
    redis_before = redis_snapshot(probe)
    monitor = Monitor(host, int(port))
    monitor.start()

    events: list[str] = []
    started = time.monotonic()
    proc = subprocess.Popen(command)
    print(f"[check] running {' '.join(command)} (pid {proc.pid}); PostgreSQL backend {pg_pid},"
          f" Redis MONITOR open", flush=True)
    pg_down = monitor_down = False
    max_gap = 0.0
    while True:
        try:
            code = proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            code = None
        at = f"{time.monotonic() - started:7.1f}s"
        if not pg_down:
            try:
                pg.execute("SELECT 1")
            except psycopg.Error as exc:
                pg_down = True
                events.append(f"{at} PostgreSQL connection lost: {exc}")
        with_probe = ""
        try:
            probe.echo("check_machine_untouched")
        except redis.RedisError as exc:  # another client; noted, not the MONITOR itself
            with_probe = f" (probe client failed too: {exc})"
        if not monitor_down:
            max_gap = max(max_gap, time.monotonic() - monitor.last_read)
            if monitor.error or not monitor.is_alive():
                monitor_down = True
                events.append(f"{at} Redis MONITOR stream ended: {monitor.error}{with_probe}")
        if code is not None:
            break

    if not pg_down:
        pg_after = pg_snapshot(pg)
        if pg_after[0] != pg_before[0]:
            events.append(f"PostgreSQL restarted: started {pg_before[0]}, now {pg_after[0]}")
        if diff := changed(pg_before[1], pg_after[1]):
            events.append(f"PostgreSQL settings changed: {', '.join(diff)}")
    try:
        redis_after = redis_snapshot(probe)
        if redis_after[0] != redis_before[0]:
            events.append("Redis restarted (run_id changed)")
        if diff := changed(redis_before[1], redis_after[1]):
            events.append(f"Redis settings changed: {', '.join(diff)}")
    except redis.RedisError as exc:
        events.append(f"Redis not reachable at the end: {exc}")

    print(f"\n[check] command: {' '.join(command)}  exit code: {code}"
          f"  ({time.monotonic() - started:.0f}s)")
    print(f"[check] PostgreSQL connection (backend {pg_pid}): "
          f"{'DISCONNECTED' if pg_down else 'never disconnected'}")
    print(f"[check] Redis MONITOR: {'DISCONNECTED' if monitor_down else 'never disconnected'}"
          f" ({monitor.lines} lines read, longest silence {max_gap:.1f}s)")
    for event in events:
        print(f"[check]   {event}")
    return 2 if pg_down or monitor_down or events else code


if __name__ == "__main__":
    sys.exit(main())
