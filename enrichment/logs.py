"""Logging for every process (API, workers, beat, CLI): LOG_LEVEL, and LOG_FORMAT `text` for
people or `json` (one object per line, python-json-logger) for log shippers. Times are UTC.

Every line written while the API handles a request carries its `request_id` (X-Request-Id,
accepted or generated); every line a worker writes while running a job carries the `job_id`,
and the id of the request that submitted it when the API published it. Messages never carry a
lead's personal fields: code logs ids, routes and counts only.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from datetime import UTC, datetime

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"
JSON_FIELDS = "%(levelname)s %(name)s %(message)s %(request_id)s %(job_id)s"


class ContextFilter(logging.Filter):
    """Puts the current request and job ids on the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = {"request_id": request_id.get(), "job_id": job_id.get()}
        record.__dict__.update(ids, context="".join(
            f" {name}={value}" for name, value in ids.items() if value))
        return True


class UTCFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(" ", "milliseconds")


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(JSON_FIELDS, timestamp="time",
                             rename_fields={"levelname": "level", "name": "logger"},
                             reserved_attrs=[*RESERVED_ATTRS, "context"])
    return UTCFormatter(TEXT_FORMAT)


def handler(fmt: str) -> logging.Handler:
    """A stderr handler in `fmt` with the request/job context: what every process logs to."""
    out = logging.StreamHandler()
    out.setFormatter(formatter(fmt))
    out.addFilter(ContextFilter())
    return out


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Route every logger through one stderr handler in `fmt` (idempotent)."""
    root = logging.getLogger()
    root.handlers[:] = [handler(fmt)]
    root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings as log lines too (logger py.warnings)
    # urllib3's DEBUG lines hold request URLs, and provider URLs can hold identifiers.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, root.level))
