"""Bearer API-key authentication and per-workspace rate limits for /api/v1 blueprints.

Every request is authenticated, then rate limited: submissions against the plan's RPS/RPM,
everything else against 10x that, so polling never eats submission quota. A key the key cache
knows takes both in one Redis call; another is looked up in the database first. Every
success, from the cache or the database, renews the key's known-key mark for an hour, so the
failed-authentication throttle never refuses a key in use (ADR-20). The
decision's headers go on every answer, errors included. If Redis cannot be reached the
request is refused with 503 + Retry-After (fail closed: a paid API must not run unmetered).
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, request

from enrichment.metrics import API_REQUESTS
from enrichment.ratelimit import READ, SUBMIT, Decision, Policy
from enrichment.workspaces import Workspace, authenticate, key_prefix

from .problems import Problem


def services():
    return current_app.extensions["enrichment"]


UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'}


def authorize(kind: str) -> tuple[Workspace, Decision]:
    """The request's workspace and its rate-limit decision: from the key cache in one Redis
    call, or — on a miss — authenticated by the database (behind the failed-auth throttle),
    cached, then limited."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Problem(401, "Unauthorized", "Send 'Authorization: Bearer <api key>'.",
                      "unauthorized", {"WWW-Authenticate": 'Bearer realm="api"'})
    svc, prefix = services(), key_prefix(key)
    cached = svc.key_cache.authorize(prefix, key, kind) if prefix is not None else None
    if cached is not None:
        return cached
    workspace = authenticate_from_database(svc, prefix, key)
    plan = svc.settings.plans[workspace.plan]
    svc.key_cache.remember(prefix, key, workspace, plan)
    return workspace, svc.rate_limiter.hit(workspace.bucket, Policy.for_plan(plan, kind))


def authenticate_from_database(svc, prefix: str | None, key: str) -> Workspace:
    address = request.remote_addr or "-"
    wait, _known = svc.auth_guard.check(address, prefix, key)
    if wait is not None:  # refused from Redis: a bad-key flood never reaches the database
        raise Problem(429, "Too Many Requests", "Too many failed authentications; retry "
                      f"after {wait} s.", "authentication-throttled",
                      {"Retry-After": str(wait), **UNAUTHORIZED})
    workspace = None
    if prefix is not None:
        with svc.db.connection() as conn:
            workspace = authenticate(conn, key)
    if workspace is None:
        svc.auth_guard.failed(address, prefix)
        raise Problem(401, "Unauthorized", "The API key is unknown or revoked.", "unauthorized",
                      UNAUTHORIZED)
    svc.auth_guard.succeeded(prefix, key)  # every success renews the hour, known or not
    return workspace


def rate_limit(workspace: Workspace, decision: Decision, kind: str) -> None:
    svc = services()
    plan = svc.settings.plans[workspace.plan]
    g.workspace, g.rate_decision = workspace, decision
    API_REQUESTS.labels(plan.name, kind, "admitted" if decision.allowed else "rejected").inc()
    if not decision.allowed:
        # One event per workspace, policy and window, not one per refused request.
        if workspace.livemode and svc.redis.set(f"throttled:{workspace.id}:{kind}", 1, nx=True,
                         ex=max(1, int(decision.retry_after) + 1)):
            svc.events.capture("enrichment_throttled", str(workspace.id), {
                "plan": plan.name, "policy": kind, "retry_after": decision.retry_after_header})
        raise Problem(429, "Too Many Requests",
                      f"Rate limit of the {plan.name} plan reached ({kind}: {decision.limit} "
                      f"per {decision.window} s); retry after {decision.retry_after_header} s.",
                      "rate-limited")


def guard(bp: Blueprint, submissions: frozenset[str] | set[str] = frozenset()) -> None:
    """Authenticate and rate limit every request of `bp`; endpoints in `submissions` count
    against the submission limit, the rest against the read limit."""

    @bp.before_request
    def _authenticate_and_limit():
        kind = SUBMIT if request.endpoint in submissions else READ
        rate_limit(*authorize(kind), kind)

    @bp.after_request
    def _rate_headers(response):
        decision = g.get("rate_decision")
        if decision is not None:
            response.headers.update(decision.headers())
        return response


def live_only() -> None:
    """Refuse a test-mode key where an act would reach beyond test data: money (credit packs,
    invoices) and consent records (they decide live enrichment)."""
    if not g.workspace.livemode:
        raise Problem(403, "Forbidden", "This needs a live API key: test-mode keys cannot "
                      "reach billing or record consents.", "live-mode-only")
