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


def test_lists_version_and_one_line_errors(db, tmp_path):
    created = json.loads(run("workspace", "create", "--name", "Listed", "--plan", "pro",
                             "--json").output.strip().splitlines()[-1])
    listed = [json.loads(line) for line in run("workspace", "list", "--json").stdout.splitlines()]
    assert [w["id"] for w in listed] == [created["workspace_id"]] and listed[0]["live_keys"] == 1
    keys = run("apikey", "list", created["workspace_id"], "--json").stdout.splitlines()
    assert len(keys) == 1 and created["api_key"] not in keys[0]  # the prefix, never the key
    assert run("--version").stdout.startswith("enrichment, version ")

    def fails(env: dict, *args) -> str:
        result = CliRunner(env=env).invoke(main, list(args))
        # One line from click (SystemExit 1 or 2), never an exception's traceback.
        assert result.exit_code in (1, 2), result.output
        assert isinstance(result.exception, SystemExit), result.exception
        return result.output.strip().splitlines()[-1]

    assert "PROVIDER_SAFETY_FACTOR" in fails({"PROVIDER_SAFETY_FACTOR": "abc"},
                                             "workspace", "list")
    bad_plans = tmp_path / "plans.toml"
    bad_plans.write_text("x = 1\n")
    assert "missing 'queues'" in fails({"PLANS_FILE": str(bad_plans)}, "workspace", "list")
    assert "ALERTS_FILE" in fails({"ALERTS_FILE": str(tmp_path / "none.toml")}, "alerts")
    assert "enrichment db upgrade" in fails(
        {"DATABASE_URL": "postgresql:///postgres"}, "workspace", "list")  # no schema there
    assert "before 2000" in fails({}, "billing", "report", "--date", "0001-01-02")
    assert "1 to 200" in fails({}, "workspace", "create", "--name", "", "--plan", "pro")
    assert "no workspace" in fails({}, "apikey", "list", str(uuid.uuid4()))
    assert "never allowed in the EU" in fails(
        {}, "workspace", "set-region", created["workspace_id"], "eu", "--person-level")
    assert run("db", "upgrade", "--help").exit_code == 0
