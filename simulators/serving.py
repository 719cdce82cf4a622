"""Serve a fake on a background thread (tests, benchmarks). Port 0 picks a free one."""

from __future__ import annotations

import threading

from flask import Flask
from werkzeug.serving import make_server


class ThreadedServer:
    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0):
        self.app = app
        self.server = make_server(host, port, app, threaded=True)
        self.url = f"http://{host}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(5)
