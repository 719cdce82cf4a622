"""One error taxonomy for the API, the CLI and the workers.

`EnrichmentError` is a failure with a meaning for the caller: an HTTP status, a problem `slug`
and `title` (RFC 9457), a `detail` safe to show. The API maps every one through a single error
handler (api/problems.py); the CLI, used by operators, prints `str(exc)` on one line, which
may say more than `detail` (e.g. Stripe's own message), as logs do.

`BACKING_SERVICE_DOWN` is the other family: a database or Redis that cannot be reached right
now. The API answers 503 with Retry-After; tasks retry.
"""

from __future__ import annotations

import psycopg
import redis
from psycopg_pool import PoolTimeout

BACKING_SERVICE_DOWN = (psycopg.OperationalError, PoolTimeout, redis.ConnectionError,
                        redis.TimeoutError, redis.exceptions.OutOfMemoryError)


class EnrichmentError(Exception):
    status = 400
    title = "Bad Request"
    slug: str | None = None

    def __init__(self, message: str, *, detail: str | None = None, status: int | None = None,
                 title: str | None = None, slug: str | None = None,
                 headers: dict[str, str] | None = None, **extra):
        super().__init__(message)
        self.detail = message if detail is None else detail
        self.status = self.status if status is None else status
        self.title = self.title if title is None else title
        self.slug = self.slug if slug is None else slug
        self.headers = dict(headers or {})
        self.extra = extra  # more problem members, e.g. `errors` or `limit`


class NotFound(EnrichmentError):
    status, title, slug = 404, "Not Found", "not-found"


class Invalid(EnrichmentError):
    """Fields that fail validation: `errors` lists {field, message}."""

    status, title, slug = 422, "Unprocessable Content", "validation-error"

    def __init__(self, errors: dict, detail: str = "The request has invalid fields."):
        flat = flatten_errors(errors)
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in flat),
                         detail=detail, errors=flat)


def flatten_errors(messages, prefix: str = "") -> list[dict]:
    """A nested {field: [message]} dict (marshmallow's shape) as a flat list of
    {field, message}; dotted names for nested fields."""
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
