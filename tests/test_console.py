"""The console without a browser (the browser tests are in test_console_browser.py): its
security (sessions, CSRF, revocation, headers, modes) and its pages' answers to bad input."""

from __future__ import annotations

import re

import pytest

from enrichment import uploads
from enrichment.workspaces import create_api_key, key_prefix, revoke_api_key


def token(page: bytes) -> str:
    return re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()


@pytest.fixture
def signed_in(client, make_workspace):
    """A browser-like client signed in with a live key: (client, workspace, key)."""
    ws, key = make_workspace()

    def sign_in(key=key):
        page = client.get("/console/sign-in").data
        return client.post("/console/sign-in", data={"api_key": key, "csrf_token": token(page)})

    assert sign_in().status_code == 302
    return client, ws, key, sign_in


def test_sign_in_makes_a_server_side_session_in_a_strict_cookie(client, make_workspace):
    _ws, key = make_workspace()
    page = client.get("/console/sign-in")
    resp = client.post("/console/sign-in", data={"api_key": key, "csrf_token": token(page.data)})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/console/overview")
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    assert key not in cookie
    overview = client.get("/console/overview")
    assert overview.status_code == 200 and b"Used" in overview.data


def test_a_post_without_the_csrf_token_is_refused_before_anything(signed_in):
    client, _ws, _key, _ = signed_in
    assert client.post("/console/sign-out").status_code == 403
    assert client.post("/console/keys", data={"test": "1"}).status_code == 403
    assert client.get("/console/overview").status_code == 200  # still signed in


def test_a_bad_key_is_an_alert_never_a_500(client):
    page = client.get("/console/sign-in").data
    resp = client.post("/console/sign-in", data={"api_key": "lek_nope", "csrf_token": token(page)})
    assert resp.status_code == 401 and b'role="alert"' in resp.data


def test_sign_out_and_revocation_end_the_session(signed_in, db):
    client, _ws, key, sign_in = signed_in
    page = client.get("/console/overview").data
    client.post("/console/sign-out", data={"csrf_token": token(page)})
    assert client.get("/console/overview").status_code == 302
    sign_in()
    with db.db.connection() as conn:
        revoke_api_key(conn, db.key_cache, key_prefix(key))
    resp = client.get("/console/jobs")
    assert resp.status_code == 302 and "/console/sign-in" in resp.headers["Location"]


def test_pages_carry_the_security_headers(signed_in):
    client = signed_in[0]
    for path in ("/console/sign-in", "/console/overview", "/console/enrich", "/console/jobs",
                 "/console/webhooks", "/console/keys", "/console/billing"):
        resp = client.get(path)
        assert resp.status_code == 200, path
        csp = resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(("content", "message"), [
    (b"", b"Choose a CSV file"),
    (b"\xff\xfe\x00garbage", b"not UTF-8"),
    (b"email\n", b"no rows"),
    (b"colour,size\nred,1\n", b"No column names a lead field"),
    (b"email\n" + b"a@b.com\n" * (uploads.MAX_ROWS + 1), b"at most 10,000"),
])
def test_a_bad_upload_is_a_readable_message(signed_in, content, message):
    import io

    client = signed_in[0]
    page = client.get("/console/enrich").data
    data = {"csrf_token": token(page), "template": "person_basic"}
    if content:
        data["csv_file"] = (io.BytesIO(content), "leads.csv")
    resp = client.post("/console/enrich", data=data, content_type="multipart/form-data")
    assert resp.status_code == 400 and message in resp.data and b'role="alert"' in resp.data


def test_a_test_session_makes_test_keys_only_and_cannot_revoke_live_ones(client, db,
                                                                        make_workspace):
    ws, live = make_workspace()
    with db.db.connection() as conn:
        test = create_api_key(conn, ws.id, livemode=False)
    page = client.get("/console/sign-in").data
    client.post("/console/sign-in", data={"api_key": test, "csrf_token": token(page)})
    page = client.get("/console/keys").data
    made = client.post("/console/keys", data={"csrf_token": token(page)}).data
    assert re.search(rb"lek_test_[0-9a-f]{12}_", made) and not re.search(rb"lek_[0-9a-f]{12}_",
                                                                        made)
    resp = client.post(f"/console/keys/{key_prefix(live)}/revoke",
                       data={"csrf_token": token(page)})
    assert resp.status_code == 404
    billing = client.get("/console/billing").data
    assert b"needs a live key" in billing


def test_another_workspaces_key_and_upload_are_out_of_reach(signed_in, db, make_workspace):
    client, _ws, _key, _ = signed_in
    other, other_key = make_workspace(name="Other")
    page = client.get("/console/keys").data
    resp = client.post(f"/console/keys/{key_prefix(other_key)}/revoke",
                       data={"csrf_token": token(page)})
    assert resp.status_code == 404
    foreign = uploads.create(db, other, "person_basic", b"email\na@b.com\n")
    assert client.get(f"/console/enrich/{foreign.id}").status_code == 404
    assert client.get(f"/console/enrich/{foreign.id}/results.csv").status_code == 404


def test_an_upload_is_admitted_in_batches_and_comes_back_in_its_order(client, db,
                                                                     make_workspace):
    import csv
    import io

    from enrichment import pipeline
    from workers.tasks import _valid_lead

    ws, _ = make_workspace()
    with db.db.connection() as conn:  # test mode: simulated providers, no provider limits
        key = create_api_key(conn, ws.id, livemode=False)
    page = client.get("/console/sign-in").data
    client.post("/console/sign-in", data={"api_key": key, "csrf_token": token(page)})
    rows = ["email,name,company,note"] + [f"u{i}@match.test,User {i},Acme,n{i}"
                                          for i in range(150)]
    rows += ["not-an-email,Bad,Acme,=HYPERLINK(\"x\")", ",,,only a note"]
    page = client.get("/console/enrich").data
    resp = client.post("/console/enrich", content_type="multipart/form-data", data={
        "csrf_token": token(page), "template": "person_basic",
        "csv_file": (io.BytesIO("\n".join(rows).encode()), "leads.csv")})
    assert resp.status_code == 302
    upload_id = resp.headers["Location"].rsplit("/", 1)[1]
    mapping = client.get(f"/console/enrich/{upload_id}").data
    assert b"Start" in mapping and b"lead field <strong>email" in mapping
    client.post(f"/console/enrich/{upload_id}/start", data={"csrf_token": token(mapping)})
    assert uploads.admit(db, upload_id, _valid_lead) == 152  # two batches: 100 + 52
    while True:
        with db.db.connection() as conn:
            queued = [r["id"] for r in conn.execute(
                "SELECT id FROM enrichment_jobs WHERE status = 'queued'")]
        if not queued:
            break
        for job_id in queued:
            pipeline.run_job(db, str(job_id))
    progress = client.get(f"/console/enrich/{upload_id}/progress.json").get_json()
    assert progress == {**progress, "done": 152, "total": 152, "finished": True}
    assert progress["counts"]["rejected"] == 2
    page = client.get(f"/console/enrich/{upload_id}").data
    assert b"152 of 152 done" in page and b"Download results" in page
    out = list(csv.reader(io.StringIO(client.get(
        f"/console/enrich/{upload_id}/results.csv").data.decode())))
    assert out[0][:5] == ["email", "name", "company", "note", "status"]
    assert out[0][5:] == ["title", "location", "seniority", "summary", "linkedin", "twitter"]
    assert [r[3] for r in out[1:151]] == [f"n{i}" for i in range(150)]  # the input's order
    assert {r[4] for r in out[1:151]} == {"succeeded"}
    assert out[151][3] == '=HYPERLINK("x")' and out[151][4] == "rejected"  # as read
    assert out[152][4] == "rejected"


@pytest.mark.parametrize(("content", "message"), [
    (b"email" + b",x" * 200 + b"\na@b.com\n", b"at most 100"),
    (b"email,name\na@b.com,Ann,EXTRA\n", b"more cells than the header"),
    (b"email\n" + b"a" * 3000 + b"\n", b"longer than 2,000"),
])
def test_a_file_too_wide_is_refused_before_it_is_kept(signed_in, content, message):
    import io

    client = signed_in[0]
    page = client.get("/console/enrich").data
    resp = client.post("/console/enrich", content_type="multipart/form-data", data={
        "csrf_token": token(page), "template": "person_basic",
        "csv_file": (io.BytesIO(content), "leads.csv")})
    assert resp.status_code == 400 and message in resp.data


def test_routing_errors_under_the_console_are_pages_with_its_headers(signed_in):
    client = signed_in[0]
    for method, path, status in (("GET", "/console/jobs/not-a-uuid", 404),
                                 ("GET", "/console/sign-out", 405),
                                 ("GET", "/console/nope", 404)):
        resp = client.open(path, method=method)
        assert resp.status_code == status and resp.mimetype == "text/html", path
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert client.get("/api/v1/nope").mimetype == "application/problem+json"  # the API: JSON
    assert "Set-Cookie" not in client.get("/healthz").headers  # the API has no session


def test_only_the_newest_uploads_are_kept(signed_in, db):
    _, ws, _, _ = signed_in
    made = [uploads.create(db, ws, "person_basic", b"email\na@b.com\n")
            for _ in range(uploads.KEPT_UPLOADS + 3)]
    assert [u.id for u in uploads.recent(db, ws)] == [u.id for u in made[::-1]][
        :uploads.KEPT_UPLOADS]
    assert uploads.load(db, made[0].id) is None and not db.redis.exists(
        f"console:upload:{made[0].id}:rows")
