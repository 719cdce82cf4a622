"""Errors as application/problem+json (RFC 9457), and the handlers that make every failure
one: HTTP errors keep their status, an unreachable database or Redis is a 503 with
Retry-After, and nothing a client sends can produce a 500."""

from __future__ import annotations

import json
import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from enrichment.services import UNAVAILABLE

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://lead-enrichment.dev/problems/"
UNAVAILABLE_RETRY_AFTER = 5


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(self, status: int, title: str, detail: str, slug: str | None = None,
                 headers: dict | None = None, **extra):
        super().__init__(detail)
        self.status, self.title, self.detail, self.slug = status, title, detail, slug
        self.headers = headers or {}
        self.extra = extra


def problem_body(exc: Problem) -> dict:
    return {
        "type": PROBLEM_BASE + exc.slug if exc.slug else "about:blank",
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
        **exc.extra,
    }


def problem_response(status: int, title: str, detail: str, slug: str | None = None,
                     headers: dict | None = None, **extra) -> Response:
    body = problem_body(Problem(status, title, detail, slug, **extra))
    resp = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def flatten_errors(messages, prefix: str = "") -> list[dict]:
    """marshmallow's nested error dict as a flat list of {field, message}."""
    out = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                name = prefix or "body"
            out += flatten_errors(value, name)
    elif isinstance(messages, list):
        for m in messages:
            out += flatten_errors(m, prefix) if isinstance(m, (dict, list)) else [
                {"field": prefix or "body", "message": str(m)}]
    else:
        out.append({"field": prefix or "body", "message": str(messages)})
    return out


def register(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(exc: Problem):
        return problem_response(exc.status, exc.title, exc.detail, exc.slug, exc.headers,
                                **exc.extra)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        headers = {}
        if exc.code == 405 and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        return problem_response(exc.code or 500, exc.name, exc.description or exc.name,
                                headers=headers)

    def _unavailable(exc: Exception):
        log.warning("dependency unavailable: %s: %s", type(exc).__name__, exc)
        return problem_response(
            503, "Service Unavailable",
            "A backing service is unreachable; retry after the given delay.",
            "unavailable", {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
        )

    for exc_class in UNAVAILABLE:
        app.register_error_handler(exc_class, _unavailable)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return problem_response(500, "Internal Server Error", "An unexpected error occurred.")
