"""The `enrichment` command on the test database."""

from __future__ import annotations

import json
import uuid

from click.testing import CliRunner

from enrichment.cli import main


def run(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_workspace_create_json_then_keys_work_and_revoke(client, db):
    result = run("workspace", "create", "--name", "Acme", "--plan", "pro", "--json")
    assert result.exit_code == 0, result.output
    created = json.loads(result.output.strip().splitlines()[-1])
    assert set(created) == {"workspace_id", "api_key"}
    headers = {"Authorization": f"Bearer {created['api_key']}"}
    assert client.get("/api/v1/templates", headers=headers).status_code == 200
    with db.db.connection() as conn:  # only the hash is stored
        row = conn.execute("SELECT prefix, key_hash FROM api_keys").fetchone()
    assert created["api_key"].encode() not in bytes(row["key_hash"])
    assert len(bytes(row["key_hash"])) == 32

    second = run("apikey", "create", created["workspace_id"], "--json")
    key2 = json.loads(second.output.strip().splitlines()[-1])["api_key"]
    assert run("apikey", "revoke", created["api_key"]).exit_code == 0
    assert client.get("/api/v1/templates", headers=headers).status_code == 401
    assert client.get("/api/v1/templates",
                      headers={"Authorization": f"Bearer {key2}"}).status_code == 200
    assert run("apikey", "revoke", created["api_key"]).exit_code == 1  # already revoked


def test_set_plan_and_errors(db):
    created = json.loads(run("workspace", "create", "--name", "A", "--plan", "core",
                             "--json").output.strip().splitlines()[-1])
    assert run("workspace", "set-plan", created["workspace_id"], "elite").exit_code == 0
    with db.db.connection() as conn:
        assert conn.execute("SELECT plan FROM workspaces").fetchone()["plan"] == "elite"
    assert run("workspace", "set-plan", created["workspace_id"], "gold").exit_code == 1
    assert run("workspace", "set-plan", str(uuid.uuid4()), "pro").exit_code == 1
    assert run("workspace", "create", "--name", "B", "--plan", "gold").exit_code == 2
    assert run("apikey", "create", str(uuid.uuid4())).exit_code == 1
