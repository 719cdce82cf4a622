"""The console (`/console/`) in a real browser: what a person does with it, found by what they
see (labels, button and link names), against the app on a real port and, where leads are
enriched, the real Celery worker.

Why in a browser and not with the test client: the session lives in a cookie the browser keeps
by its attributes (HttpOnly, SameSite), the progress page updates itself with JavaScript that
must run under the page's Content-Security-Policy, and the results arrive as a download. Only
a browser shows all three working together.

Run: `.venv/bin/pytest tests/test_console_browser.py` (needs `chromium` and `chromedriver`:
`make install` as root, or apt-get install chromium chromium-driver; skipped without them,
failed without them when CI is set). A failed test leaves tests/artifacts/<test>.png and .html.
Screenshots for the docs: `CONSOLE_SCREENSHOTS=1 .venv/bin/pytest tests/test_console_browser.py
-k screenshots` writes docs/console/*.png (CONSOLE_SCREENSHOTS_DIR=<dir>: there instead)."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from pathlib import Path

import pytest
import requests

from enrichment.templates import TEMPLATES
from enrichment.workspaces import create_api_key, revoke_api_key

from .browser import (
    Browser,
    LiveServer,
    chrome,
    console_services,
    download_dir,
    record_outcomes,
    require_browser,
    save_failure,
)
from .helpers import eventually

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
# where the screenshots test writes (CONSOLE_SCREENSHOTS_DIR: elsewhere, to look first)
SCREENSHOTS = Path(os.environ.get("CONSOLE_SCREENSHOTS_DIR") or ROOT / "docs" / "console")
NAVIGATION = ("Overview", "Enrich", "Jobs", "Webhooks", "API keys", "Billing")
TEST_KEY_RE = re.compile(r"lek_test_[0-9a-f]+_[A-Za-z0-9_-]+")
# The lead set of the upload: a magic domain per row, one with nothing to find, and cells a
# spreadsheet would run as formulas.
UPLOAD_ROWS = 20


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture
def live(db, monkeypatch):
    """The whole app (API and console) on a free port, over this test's emptied database, with
    the console's cookies allowed over plain HTTP."""
    require_browser()  # skip (or, in CI, fail) before building anything
    from api import create_app

    monkeypatch.setenv("CONSOLE_INSECURE_COOKIES", "true")
    with LiveServer(create_app(services=console_services(db))) as server:
        yield server


@pytest.fixture
def browser(request, live):
    """A fresh headless chromium per test (no cookie or storage carried between tests); on a
    failure its screenshot and page source go to tests/artifacts/."""
    record_outcomes(request.config)
    downloads = download_dir()
    driver = chrome(downloads)
    b = Browser(driver, live.url, downloads)
    yield b
    try:
        if any(getattr(getattr(request.node, f"rep_{phase}", None), "failed", False)
               for phase in ("setup", "call")):
            saved = save_failure(b, request.node.name)
            print(f"console browser artifacts: {', '.join(map(str, saved))}")
    finally:
        driver.quit()
        shutil.rmtree(downloads, ignore_errors=True)


@pytest.fixture
def keys(db, make_workspace):
    """A workspace with a live key and a test-mode key (test mode: the bundled simulators
    answer, nothing is billed): (workspace, live key, test key)."""
    ws, live_key = make_workspace(name="Browser Co")
    with db.db.connection() as conn:
        key = create_api_key(conn, ws.id, livemode=False)
    return ws, live_key, key


@pytest.fixture
def test_key(keys):
    """(workspace, test key): the console in test mode, where most tests work."""
    return keys[0], keys[2]


@pytest.fixture
def signed_in(browser, test_key):
    sign_in(browser, test_key[1])
    return browser


# --- helpers ---------------------------------------------------------------------------------

def key_prefix(key: str) -> str:
    """`lek_<prefix>_<secret>` or `lek_test_<prefix>_<secret>` → prefix (the secret may hold
    underscores; the prefix is hex)."""
    parts = key.split("_")
    return parts[2] if parts[1] == "test" else parts[1]


def sign_in(browser: Browser, key: str) -> None:
    browser.go("/console/sign-in")
    browser.fill("API key", key)
    browser.submit("Sign in")
    browser.wait(lambda: browser.find_all("//button[normalize-space()='Sign out']"), 10,
                 lambda: f"signed in (a 'Sign out' button); alerts: {browser.alerts()}")


def on_sign_in_page(browser: Browser) -> bool:
    return browser.path.startswith("/console/sign-in") and bool(
        browser.find_all("//button[normalize-space()='Sign in']"))


def session_cookies(browser: Browser) -> dict[str, str]:
    return browser.cookies()


def csp_directives(header: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            found.setdefault(words[0].lower(), words[1:])
    return found


def upload_csv(rows: int = UPLOAD_ROWS) -> tuple[str, list[list[str]]]:
    """A person_basic lead list: name, email (magic domains), and customer columns a
    spreadsheet would take as formulas. The last row's domain finds nothing."""
    header = ["name", "email", "note", "phone"]
    table = [header]
    for i in range(1, rows + 1):
        domain = "nomatch.test" if i == rows else "match.test"
        note = '=HYPERLINK("x")' if i == 1 else ("-5" if i == 2 else f"row {i}")
        phone = "+1 555 0100" if i == 3 else ("@home" if i == 4 else "")
        table.append([f"Person {i}", f"u{i}@{domain}", note, phone])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(table)
    return out.getvalue(), table


def neutralised(cell: str) -> str:
    return f"'{cell}" if cell[:1] in ("=", "+", "-", "@") else cell


def wait_progress_done(browser: Browser, total: int, timeout: float = 90) -> None:
    """Wait for the progress page to say it is done, by its own JavaScript (no reload); if it
    never does, say whether a reload would have shown it (live update broken vs slow work)."""
    want = f"{total} of {total} done"
    try:
        browser.wait(lambda: want in browser.text, timeout, f"the page to say {want!r}")
    except AssertionError as exc:
        seen = re.findall(r"\d+ of \d+ done", browser.text)
        browser.driver.refresh()
        after = re.findall(r"\d+ of \d+ done", browser.text)
        raise AssertionError(f"{exc}; the page said {seen}, after a reload {after}") from None


def submit_job(live: LiveServer, key: str, lead: dict, template: str = "person_basic") -> str:
    resp = requests.post(f"{live.url}/api/v1/enrichment", timeout=10,
                         headers={"Authorization": f"Bearer {key}"},
                         json={"template": template, "lead": lead})
    assert resp.status_code == 202, resp.text
    return resp.json()["job_id"]


def finished_job(live: LiveServer, key: str, job_id: str, timeout: float = 60) -> dict:
    body: dict = {}

    def done() -> bool:
        nonlocal body
        body = requests.get(f"{live.url}/api/v1/enrichment/{job_id}", timeout=10,
                            headers={"Authorization": f"Bearer {key}"}).json()
        return body["status"] in ("succeeded", "failed", "dead")

    eventually(done, timeout, interval=0.2)
    return body


def field_row(browser: Browser, field: str):
    """The table row of `field` on a job's page: the <tr> whose first cell names it."""
    for row in browser.find_all("//tr"):
        cells = row.find_elements("xpath", "./th | ./td")
        if cells and cells[0].text.strip().lower() == field.lower():
            return row
    raise AssertionError(f"no table row for the field {field!r} on {browser.path}")


# --- signing in and out ----------------------------------------------------------------------

def test_the_browser_infrastructure_serves_and_downloads(browser, live):
    """The harness itself: the live server answers the browser, and the browser runs scripts."""
    browser.go("/healthz")
    assert browser.driver.execute_script("return 1 + 1") == 2
    assert requests.get(f"{live.url}/healthz", timeout=5).status_code in (200, 503)


def test_signing_in_with_a_test_key_opens_the_console(signed_in, live):
    browser = signed_in
    for name in NAVIGATION:
        assert browser.has_link(name), f"no navigation link {name!r}"
    assert browser.button("Sign out").tag_name in ("button", "input")
    cookies = browser.driver.get_cookies()
    assert cookies, "signed in without a cookie"
    for cookie in cookies:  # the session's cookie: out of scripts' reach, not sent cross-site
        assert cookie.get("httpOnly") is True, cookie
        assert cookie.get("sameSite") == "Lax", cookie
    browser.click(browser.link("Overview"))
    assert browser.path.startswith("/console/overview")
    assert "Used" in browser.text  # (the chart: once there are jobs, see the jobs test)


def test_the_cookie_is_secure_unless_told_otherwise(db, test_key, monkeypatch):
    """Without CONSOLE_INSECURE_COOKIES the session cookie carries `Secure` (over plain HTTP a
    browser would then not send it back: that is the point)."""
    from api import create_app

    monkeypatch.delenv("CONSOLE_INSECURE_COOKIES", raising=False)
    services = console_services(db, insecure_cookies=False)
    with LiveServer(create_app(services=services)) as server:
        form = requests.get(f"{server.url}/console/sign-in", timeout=10)
        assert form.status_code == 200, form.status_code
        # requests keeps a Secure cookie from going back over http, as a browser would: send
        # the form's cookies by hand (the CSRF token is checked against that session)
        jar = "; ".join(f"{c.name}={c.value}" for c in form.cookies)
        resp = requests.post(f"{server.url}/console/sign-in", timeout=10,
                             allow_redirects=False, headers={"Cookie": jar},
                             data=sign_in_form(form.text, test_key[1]))
        assert resp.status_code in (302, 303), (resp.status_code, resp.text[:500])
        cookies = [v for r in (form, resp)
                   for k, v in r.raw.headers.items() if k.lower() == "set-cookie"]
        assert cookies, "signed in without a cookie"
        for cookie in cookies:
            attributes = [a.strip().lower() for a in cookie.split(";")[1:]]
            assert "secure" in attributes, cookie
            assert "httponly" in attributes, cookie
            assert "samesite=lax" in attributes, cookie


def sign_in_form(html: str, key: str) -> dict[str, str]:
    """The sign-in form's fields as a browser would send them: every named input with its
    value, the csrf_token, and `key` in the API key input (whatever the form names it)."""
    fields: dict[str, str] = {}
    key_field = None
    for tag in re.findall(r"<input[^>]*>", html):
        name = re.search(r"name=[\"']([^\"']+)[\"']", tag)
        if not name:
            continue
        value = re.search(r"value=[\"']([^\"']*)[\"']", tag)
        fields[name.group(1)] = value.group(1) if value else ""
        kind = re.search(r"type=[\"']([^\"']+)[\"']", tag)
        if (kind is None or kind.group(1).lower() in ("text", "password")) and key_field is None:
            key_field = name.group(1)
    assert "csrf_token" in fields, "no hidden csrf_token field in the sign-in form"
    assert key_field, "no text or password input in the sign-in form"
    return {**fields, key_field: key}


def test_a_bad_key_shows_an_alert_not_an_error(browser, live):
    for bad in ("lek_test_0000_nope", "not a key at all", "lek_" + "x" * 300):
        browser.go("/console/sign-in")
        browser.fill("API key", bad)
        browser.submit("Sign in")
        alerts = browser.wait(browser.alerts, 10, f"a role=alert error for {bad[:20]!r}")
        assert any(a.strip() for a in alerts), alerts
        assert on_sign_in_page(browser) or browser.find_all("//label[normalize-space()='API key']")
        assert "Internal Server Error" not in browser.source
    with requests.Session() as http:  # the server refuses it, neither crashing nor letting in
        form = http.get(f"{live.url}/console/sign-in", timeout=10)
        resp = http.post(f"{live.url}/console/sign-in", timeout=10, allow_redirects=False,
                         data=sign_in_form(form.text, "lek_test_0000_nope"))
        assert resp.status_code < 500, resp.status_code
        after = http.get(f"{live.url}/console/overview", timeout=10, allow_redirects=False)
        assert after.status_code in (302, 303, 401), after.status_code


def test_a_post_without_its_csrf_token_is_refused(signed_in, live):
    browser = signed_in
    cookies = session_cookies(browser)
    resp = requests.post(f"{live.url}/console/sign-out", cookies=cookies, timeout=10,
                         allow_redirects=False)
    assert resp.status_code == 403, (resp.status_code, resp.text[:300])
    resp = requests.post(f"{live.url}/console/sign-out", cookies=cookies, timeout=10,
                         allow_redirects=False, data={"csrf_token": "forged"})
    assert resp.status_code == 403, (resp.status_code, resp.text[:300])
    browser.go("/console/overview")  # the refused sign-out did not end the session
    assert browser.path.startswith("/console/overview"), browser.path
    assert not on_sign_in_page(browser)


def test_signing_out_ends_the_session(signed_in, live):
    browser = signed_in
    cookies = session_cookies(browser)
    browser.submit("Sign out")
    browser.wait(lambda: on_sign_in_page(browser), 10, "the sign-in page after signing out")
    browser.go("/console/overview")
    assert on_sign_in_page(browser), browser.path
    # The old cookie, replayed, opens nothing: the session is gone on the server too.
    resp = requests.get(f"{live.url}/console/overview", cookies=cookies, timeout=10,
                        allow_redirects=False)
    assert resp.status_code in (302, 303, 401), resp.status_code
    if resp.status_code != 401:
        assert "/console/sign-in" in resp.headers["Location"]


def test_revoking_the_sessions_key_ends_the_session(signed_in, db, test_key):
    browser = signed_in
    with db.db.connection() as conn:
        assert revoke_api_key(conn, db.key_cache, key_prefix(test_key[1]))
    browser.go("/console/jobs")
    assert on_sign_in_page(browser), browser.path


def test_security_headers_on_console_pages(signed_in, live):
    cookies = session_cookies(signed_in)
    for path, jar in (("/console/sign-in", {}), ("/console/overview", cookies),
                      ("/console/keys", cookies)):
        resp = requests.get(f"{live.url}{path}", cookies=jar, timeout=10, allow_redirects=False)
        assert resp.status_code == 200, (path, resp.status_code)
        assert resp.headers.get("X-Content-Type-Options") == "nosniff", path
        csp = resp.headers.get("Content-Security-Policy")
        assert csp, f"no Content-Security-Policy on {path}"
        directives = csp_directives(csp)
        scripts = directives.get("script-src", directives.get("default-src"))
        assert scripts is not None, f"{path}: no script-src nor default-src in {csp!r}"
        assert "'unsafe-inline'" not in scripts, f"{path}: {csp!r}"
        assert "*" not in scripts, f"{path}: {csp!r}"
        assert directives.get("frame-ancestors") == ["'none'"], f"{path}: {csp!r}"


def test_an_api_key_is_shown_once_and_then_only_its_prefix(browser, live, keys):
    """From a live session (a test-mode session makes test keys only, without asking)."""
    _ws, live_key, _test_key = keys
    sign_in(browser, live_key)
    browser.click(browser.link("API keys"))
    assert browser.path.startswith("/console/keys")
    checkbox = browser.field("Test")
    if not checkbox.is_selected():
        checkbox.click()
    browser.submit("Create key")
    shown = browser.wait(lambda: TEST_KEY_RE.findall(browser.text), 10, "the new key, shown")
    new = shown[0]
    prefix = key_prefix(new)
    workspace = requests.get(f"{live.url}/api/v1/workspace", timeout=10,
                             headers={"Authorization": f"Bearer {new}"})
    assert workspace.status_code == 200 and workspace.json()["livemode"] is False
    browser.go("/console/keys")  # once: the page again lists prefixes, never a whole key
    assert not TEST_KEY_RE.findall(browser.source), "a whole key on the page again"
    for key in keys[1:]:
        assert key not in browser.source
        assert key_prefix(key) in browser.text
    assert prefix in browser.text
    # Revoking the new key (not the session's) leaves the session; the key stops working.
    row = browser.find(f"//tr[contains(normalize-space(), '{prefix}')]"
                       f" | //li[contains(normalize-space(), '{prefix}')]")
    browser.click(row.find_element("xpath", ".//button[normalize-space()='Revoke']"
                                            " | .//input[@type='submit' and @value='Revoke']"))
    browser.wait(lambda: requests.get(
        f"{live.url}/api/v1/workspace", timeout=10,
        headers={"Authorization": f"Bearer {new}"}).status_code == 401, 10,
        "the revoked key to be refused")
    browser.go("/console/keys")
    assert not on_sign_in_page(browser)


def test_a_test_mode_session_creates_test_keys_only(signed_in, live):
    browser = signed_in
    browser.go("/console/keys")
    boxes = browser.find_all("//label[normalize-space()='Test']//input[@type='checkbox']")
    if boxes and not boxes[0].is_selected():
        boxes[0].click()
    browser.submit("Create key")
    shown = browser.wait(lambda: re.findall(r"lek_[A-Za-z0-9_-]{20,}", browser.text), 10,
                         "the new key, shown")
    assert all(k.startswith("lek_test_") for k in shown), shown


def test_revoking_the_sessions_key_on_the_keys_page_signs_out(signed_in, test_key):
    browser = signed_in
    browser.go("/console/keys")
    prefix = key_prefix(test_key[1])
    row = browser.find(f"//tr[contains(normalize-space(), '{prefix}')]"
                       f" | //li[contains(normalize-space(), '{prefix}')]")
    browser.click(row.find_element("xpath", ".//button[normalize-space()='Revoke']"
                                            " | .//input[@type='submit' and @value='Revoke']"))
    browser.go("/console/overview")
    assert on_sign_in_page(browser), browser.path


# --- enrichment: the real worker -------------------------------------------------------------

def enrich(browser: Browser, source: Path, template: str, rows: int) -> list[list[str]]:
    """Upload `source` on the Enrich page with `template`, check the mapping, Start, follow
    the progress page until every row is done (by its own script), and download the results:
    the CSV's rows, header first."""
    browser.click(browser.link("Enrich"))
    assert browser.path.startswith("/console/enrich")
    select = browser.field("Template")
    values = [o.get_attribute("value") for o in select.find_elements("tag name", "option")]
    assert {"company_profile", "person_basic", "person_contact"} <= set(values), values
    browser.field("CSV file").send_keys(str(source))
    browser.choose("Template", template)
    browser.submit("Upload")

    # the mapping: which of the customer's columns feed which lead field
    browser.wait(lambda: browser.find_all("//button[normalize-space()='Start']"), 15,
                 lambda: f"the mapping page with 'Start'; alerts: {browser.alerts()}")
    page = browser.text
    for column in ("name", "email"):
        assert column in page, f"the mapping does not show the {column!r} column"
    browser.submit("Start")

    browser.wait(lambda: re.fullmatch(r"/console/enrich/[^/?#]+", browser.path.split("?")[0]),
                 15, "the progress page /console/enrich/<upload_id>")
    progress = browser.find("//progress")
    assert progress.get_attribute("max") == str(rows), progress.get_attribute("outerHTML")
    wait_progress_done(browser, rows)  # live: the page's script, no reload
    assert not csp_violations(browser), csp_violations(browser)
    browser.driver.refresh()  # and on a reload
    assert f"{rows} of {rows} done" in browser.text
    progress = browser.find("//progress")
    assert (progress.get_attribute("value"), progress.get_attribute("max")) == (str(rows),) * 2

    browser.link("Download results").click()
    return list(csv.reader(io.StringIO(browser.downloaded().read_text(encoding="utf-8-sig"))))


def test_a_csv_upload_is_enriched_and_downloaded(signed_in, worker, tmp_path):
    browser = signed_in
    text, table = upload_csv()
    source = tmp_path / "leads.csv"
    source.write_text(text)
    got = enrich(browser, source, "person_basic", UPLOAD_ROWS)

    fields = list(TEMPLATES["person_basic"].fields)
    header, rows = got[0], got[1:]
    assert header == [*table[0], "status", *fields], header
    assert len(rows) == UPLOAD_ROWS
    width = len(table[0])
    for sent, back in zip(table[1:], rows, strict=True):  # same order, the customer's cells
        assert back[:2] == sent[:2], (sent, back)          # first (as read or neutralised:
        assert back[2:width] in ([*sent[2:]], [neutralised(c) for c in sent[2:]]), back  # below)
    assert {r[width] for r in rows} == {"succeeded"}, [r[width] for r in rows]
    found = {f: [r[width + 1 + i] for r in rows] for i, f in enumerate(fields)}
    assert all(found["title"][:-1]), "a match.test lead without a title"
    last = rows[-1][width + 1:]
    assert not any(last), f"the nomatch.test lead came back with values: {last}"
    for cells in rows:  # nothing the service wrote reads as a formula
        assert not any(c.startswith(("=", "+", "-", "@")) for c in cells[width + 1:]), cells


def test_the_customers_cells_come_back_as_read(signed_in, worker, tmp_path):
    """Cells from the service are neutralised against formula injection (the upload test
    checks them); the customer's own cells are theirs and come back exactly as read
    (enrichment/csvsafe.py, docs/console.md): a round trip must not change their file."""
    browser = signed_in
    table = [["name", "email", "note"],
             ["Ann", "ann@match.test", '=HYPERLINK("x")'],
             ["Bob", "bob@match.test", "-5"],
             ["Cy", "cy@match.test", "+1 555 0100"],
             ["Di", "di@match.test", "@home"]]
    source = tmp_path / "formulas.csv"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(table)
    source.write_text(out.getvalue())
    rows = enrich(browser, source, "person_basic", len(table) - 1)[1:]
    assert [r[2] for r in rows] == ['=HYPERLINK("x")', "-5", "+1 555 0100", "@home"]


@pytest.mark.parametrize("too_much", ["rows", "bytes"])
def test_a_file_over_the_limits_is_refused_with_a_reason(signed_in, tmp_path, too_much):
    """Up to 10,000 rows and 5 MiB: past either, the Enrich page says why (role=alert), and
    nothing is started."""
    browser = signed_in
    source = tmp_path / "big.csv"
    if too_much == "rows":
        source.write_text("email\n" + "".join(f"u{i}@match.test\n" for i in range(10_001)))
    else:  # under 10,000 rows, over 5 MiB
        filler = "x" * 600
        source.write_text("email,note\n" + "".join(f"u{i}@match.test,{filler}\n"
                                                    for i in range(9_000)))
        assert source.stat().st_size > 5 * 1024 * 1024
    browser.go("/console/enrich")
    browser.field("CSV file").send_keys(str(source))
    browser.choose("Template", "person_basic")
    browser.submit("Upload")
    alerts = browser.wait(lambda: [a for a in browser.alerts() if a.strip()], 15,
                          "a role=alert reason")
    assert not browser.find_all("//button[normalize-space()='Start']")
    assert "Something broke" not in " ".join(alerts), alerts
    assert ("10,000" if too_much == "rows" else "MiB") in " ".join(alerts), alerts


def test_every_page_of_the_navigation_renders(signed_in, live):
    """Each navigation link opens its page (200, a heading, no error page), in the browser and
    by status code."""
    browser = signed_in
    cookies = session_cookies(browser)
    for name in NAVIGATION:
        browser.click(browser.link(name))
        assert browser.find_all("//h1"), f"{name}: no <h1> at {browser.path}"
        assert not browser.alerts(), f"{name}: {browser.alerts()}"
        resp = requests.get(browser.driver.current_url, cookies=cookies, timeout=10,
                            allow_redirects=False)
        assert resp.status_code == 200, (name, resp.status_code)


def csp_violations(browser: Browser) -> list[str]:
    """Console messages of the page that report a Content-Security-Policy refusal (a script
    or style the page's own policy blocks: the live update would silently not run)."""
    try:
        logs = browser.driver.get_log("browser")
    except Exception:  # a driver without log access: nothing to report
        return []
    return [e["message"] for e in logs if "Content Security Policy" in e.get("message", "")]


def test_the_jobs_page_lists_jobs_and_a_job_shows_each_fields_confidence(
        signed_in, live, test_key, worker):
    browser = signed_in
    key = test_key[1]
    ids = [submit_job(live, key, {"email": f"jane{i}@match.test", "name": f"Jane {i}"})
           for i in range(2)]
    jobs = {i: finished_job(live, key, i) for i in ids}
    assert {j["status"] for j in jobs.values()} == {"succeeded"}, jobs

    browser.click(browser.link("Jobs"))
    assert browser.path.startswith("/console/jobs")
    for job_id in ids:
        assert browser.find_all(f"//a[contains(@href, '/console/jobs/{job_id}')]"), \
            f"no link to /console/jobs/{job_id}"
    browser.click(browser.find(f"//a[contains(@href, '/console/jobs/{ids[0]}')]"))
    assert browser.path.startswith(f"/console/jobs/{ids[0]}")

    provenance = jobs[ids[0]]["result"]["provenance"]
    assert provenance, jobs[ids[0]]
    for field, given in provenance.items():
        row = field_row(browser, field)
        shown = re.findall(r"\b[01]\.\d+\b", row.text)
        assert shown, f"no confidence in the {field!r} row: {row.text!r}"
        assert any(abs(float(s) - given["confidence"]) < 0.006 for s in shown), (
            field, shown, given["confidence"])
        if given.get("sources"):
            assert row.find_elements("xpath", ".//a[@href]"), f"no source link for {field!r}"
    assert any(float(s) >= 0.9 for s in re.findall(r"\b0\.\d+\b", browser.text))

    # the overview counts them, and charts the day they ran on
    browser.click(browser.link("Overview"))
    used = browser.find("//dt[normalize-space()='Used']/following-sibling::dd[1]"
                        " | //*[normalize-space()='Used']/following-sibling::*[1]")
    assert used.text.strip() == "2", used.text
    assert browser.find_all("//*[local-name()='svg']"), "no inline <svg> chart of daily usage"


def test_the_jobs_page_filters_and_pages_with_a_cursor(signed_in, live, test_key, worker):
    """Filters narrow the list; "Older jobs" walks it page by page (25 a page), newest first,
    every job exactly once."""
    browser = signed_in
    key = test_key[1]
    people = [{"email": f"p{i}@match.test", "name": f"P {i}"} for i in range(26)]
    submitted = []
    for template, leads in (("person_basic", people),
                            ("company_profile", [{"domain": "match.test"},
                                                 {"domain": "nomatch.test"}])):
        resp = requests.post(f"{live.url}/api/v1/enrichment/batch", timeout=30,
                             headers={"Authorization": f"Bearer {key}"},
                             json={"template": template, "leads": leads})
        assert resp.status_code in (202, 207), (resp.status_code, resp.text[:300])
        results = resp.json()["results"]
        assert {r["status"] for r in results} == {202}, [r for r in results if r["status"] != 202]
        ids = [r["job"]["job_id"] for r in results]
        submitted.append(ids)
    people_ids, company_ids = submitted

    browser.go("/console/jobs")
    browser.choose("Template", "company_profile")
    browser.submit("Filter")
    assert sorted(job_links(browser)) == sorted(company_ids)

    browser.go("/console/jobs")
    pages = [job_links(browser)]
    while browser.has_link("Older jobs"):
        assert len(pages) < 5, "paging does not end"
        browser.click(browser.link("Older jobs"))
        pages.append(job_links(browser))
    assert [len(p) for p in pages] == [25, 3], [len(p) for p in pages]
    listed = [i for p in pages for i in p]
    assert sorted(listed) == sorted(people_ids + company_ids)


def job_links(browser: Browser) -> list[str]:
    """The job ids the jobs page links to, in page order."""
    ids = []
    for a in browser.find_all("//a[contains(@href, '/console/jobs/')]"):
        found = re.search(r"/console/jobs/([0-9a-f-]{36})", a.get_attribute("href") or "")
        if found:
            ids.append(found.group(1))
    return ids


# --- screenshots for the docs ----------------------------------------------------------------

@pytest.mark.skipif(os.environ.get("CONSOLE_SCREENSHOTS") != "1",
                    reason="writes docs/console/*.png: run with CONSOLE_SCREENSHOTS=1")
def test_screenshots(signed_in, live, test_key, worker, tmp_path):
    """Every page of the console as the docs show it, from a workspace with a finished upload
    and jobs (test mode, so the figures are the simulators')."""
    browser = signed_in
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        browser.full_page_screenshot(SCREENSHOTS / f"{name}.png")

    text, _table = upload_csv()
    source = tmp_path / "leads.csv"
    source.write_text(text)
    browser.go("/console/enrich")
    shot("enrich")
    browser.field("CSV file").send_keys(str(source))
    browser.choose("Template", "person_basic")
    browser.submit("Upload")
    browser.wait(lambda: browser.find_all("//button[normalize-space()='Start']"), 15, "Start")
    shot("mapping")
    browser.submit("Start")
    wait_progress_done(browser, UPLOAD_ROWS)
    shot("progress")

    for page in ("overview", "jobs", "webhooks", "keys", "billing"):
        browser.go(f"/console/{page}")
        shot(page)
    browser.go("/console/jobs")
    matched = browser.find_all("//tr[td[normalize-space()='yes']]"
                               "//a[contains(@href, '/console/jobs/')]")  # a job that found
    browser.click(matched[0] if matched else browser.find(  # something, if the list says
        f"//a[contains(@href, '/console/jobs/{job_links(browser)[0]}')]"))
    shot("job")
    browser.submit("Sign out")
    browser.go("/console/sign-in")
    shot("sign-in")
