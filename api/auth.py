"""Bearer API-key authentication for /api/v1."""

from __future__ import annotations

from flask import current_app, g, request

from enrichment.workspaces import Workspace, authenticate

from .problems import Problem


def services():
    return current_app.extensions["enrichment"]


def require_workspace() -> Workspace:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Problem(401, "Unauthorized", "Send 'Authorization: Bearer <api key>'.",
                      "unauthorized", {"WWW-Authenticate": 'Bearer realm="api"'})
    with services().db.connection() as conn:
        workspace = authenticate(conn, key.strip())
    if workspace is None:
        raise Problem(401, "Unauthorized", "The API key is unknown or revoked.", "unauthorized",
                      {"WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'})
    g.workspace = workspace
    return workspace
