"""Errors as application/problem+json (RFC 9457), mapped once here: every `EnrichmentError`
(the domain's and the API's own `Problem`) by its status, slug and title; marshmallow's
ValidationError as 422; an unreachable database or Redis as 503 with Retry-After; HTTP errors
keep their status; nothing a client sends can produce a 500. Every problem carries the
request's id."""

from __future__ import annotations

import json
import logging

import psycopg
from flask import Flask, Response, g, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from enrichment.errors import BACKING_SERVICE_DOWN, EnrichmentError, Invalid

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://lead-enrichment.dev/problems/"
UNAVAILABLE_RETRY_AFTER = 5


class Problem(EnrichmentError):
    """An error of the HTTP layer itself (authentication, media type, rate limits)."""

    def __init__(self, status: int, title: str, detail: str, slug: str | None = None,
                 headers: dict | None = None, **extra):
        super().__init__(detail, status=status, title=title, slug=slug, headers=headers,
                         **extra)


def problem_body(exc: EnrichmentError) -> dict:
    return {"type": PROBLEM_BASE + exc.slug if exc.slug else "about:blank",
            "title": exc.title, "status": exc.status, "detail": exc.detail, **exc.extra}


def problem_response(exc: EnrichmentError) -> Response:
    body = problem_body(exc)
    if g and g.get("request_id"):  # to quote when asking for support; also X-Request-Id
        body["request_id"] = g.request_id
    resp = Response(json.dumps(body), status=exc.status, mimetype="application/problem+json")
    resp.headers.update(exc.headers)
    return resp


def register(app: Flask) -> None:
    @app.errorhandler(EnrichmentError)
    def _domain(exc: EnrichmentError):
        if exc.status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc)
        return problem_response(exc)

    @app.errorhandler(ValidationError)
    def _invalid(exc: ValidationError):
        return problem_response(Invalid(exc.messages))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        pages = app.extensions.get("console_errors")
        if pages is not None and request.path.startswith("/console"):
            return pages(exc)  # a page under /console/ (an unknown one, a wrong method)
        headers = {}
        if exc.code == 405 and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        return problem_response(Problem(exc.code or 500, exc.name, exc.description or exc.name,
                                        headers=headers))

    def _unavailable(exc: Exception):
        log.warning("dependency unavailable: %s: %s", type(exc).__name__, exc)
        return problem_response(Problem(
            503, "Service Unavailable",
            "A backing service is unreachable; retry after the given delay.", "unavailable",
            {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)}))

    for exc_class in BACKING_SERVICE_DOWN:
        app.register_error_handler(exc_class, _unavailable)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if isinstance(exc, psycopg.Error):  # its DETAIL can quote a row: leads stay out of logs
            log.error("unhandled database error %s (%s): %s", type(exc).__name__,
                      exc.sqlstate, exc.diag.message_primary)
        else:
            log.exception("unhandled error")
        return problem_response(Problem(500, "Internal Server Error",
                                        "An unexpected error occurred."))
