"""A tiny PostHog capture server for tests and `make run`: the real `posthog` SDK posts its
batches here (POSTHOG_HOST). GET /_test/events lists what arrived; POST /_test/reset."""

from __future__ import annotations

import gzip
import json
import threading

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from .serving import ThreadedServer


def create_posthog_fake() -> Flask:
    app = Flask(__name__)
    received: list[dict] = []
    lock = threading.Lock()
    app.extensions["posthog_fake"] = received

    @app.post("/batch/")
    def batch():
        raw = request.get_data()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        body = json.loads(raw)
        if not body.get("api_key"):
            return jsonify({"status": 0, "error": "no api key"}), 401
        with lock:
            received.extend(body.get("batch", []))
        return jsonify({"status": 1})

    @app.get("/_test/events")
    def events():
        with lock:
            return jsonify(list(received))

    @app.post("/_test/reset")
    def reset():
        with lock:
            received.clear()
        return jsonify({"ok": True})

    return app


class PostHogFakeServer(ThreadedServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(create_posthog_fake(), host, port)

    @property
    def events(self) -> list[dict]:
        return self.app.extensions["posthog_fake"]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Fake PostHog capture server")
    parser.add_argument("--port", type=int, default=8020)
    args = parser.parse_args()
    print(f"fake PostHog on http://127.0.0.1:{args.port}", flush=True)
    make_server("127.0.0.1", args.port, create_posthog_fake(), threaded=True).serve_forever()
