"""Helpers for driving the console in a real browser: Debian's chromium through its own
chromedriver, headless, against the app served on a free port by a thread of the test process.

Why a real browser rather than the Flask test client: the console's contract is what a person
sees and clicks (labels, buttons, links by their accessible names), its cookies as a browser
keeps them (HttpOnly, SameSite), its CSP-compliant JavaScript updating the progress, and a
download landing on disk. Elements are found by accessible name, never by id or CSS class, so
the tests break only when the contract does.

Why the system chromium and chromedriver (never Selenium Manager's download): CI and the image
install them with apt (`make install`, `.ci/run`); a run must not fetch a browser from the
network, and the two must match each other, which Debian's pair does."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
INSTALL_HINT = "apt-get install chromium chromium-driver (or `make install` as root)"


# --- is there a browser? ---------------------------------------------------------------------

def browser_binaries() -> tuple[str, str] | None:
    """(chromium, chromedriver) from PATH, or None if either is missing."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def require_browser() -> tuple[str, str]:
    """The browser, or: skip with the reason on a developer's machine, fail in CI. CI must not
    pass with the browser tests quietly skipped (a missing package would hide every console
    regression); `.ci/run` installs the packages and runs with CI set."""
    found = browser_binaries()
    if found:
        return found
    why = f"chromium and chromedriver are not on PATH: {INSTALL_HINT}"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI is set and the console's browser tests cannot run: {why}",
                    pytrace=False)
    pytest.skip(why)


# --- the app on a real port ------------------------------------------------------------------

def console_services(services, insecure_cookies: bool = True):
    """The services with the console's cookies allowed over plain HTTP (the live server is not
    behind TLS, and a `Secure` cookie set over http://127.0.0.1 is one a browser may drop), or,
    with `insecure_cookies=False`, refused over it whatever the environment says. Before the
    console's settings field exists, the services are returned as they are; the caller sets
    the environment variable as well."""
    settings = services.settings
    if "console_insecure_cookies" in {f.name for f in fields(settings)}:
        settings = replace(settings, console_insecure_cookies=insecure_cookies)
    return replace(services, settings=settings)


class LiveServer:
    """A WSGI app served by werkzeug (threaded: the page, its polling and a download may be in
    flight at once) on a free port of 127.0.0.1, in a daemon thread of the test process, so the
    test and the app share the test's services (its database, Redis and clock)."""

    def __init__(self, app):
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="live-server",
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- the browser -----------------------------------------------------------------------------

def chrome(download_dir: Path, width: int = 1280, height: int = 900):
    """A headless chromium (the system's) driven by the system's chromedriver, downloading into
    `download_dir` without asking."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = require_browser()
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--lang=en-US"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(download_dir),
        "download.prompt_for_download": False,
        "download.directory_upgrade": True,
        "safebrowsing.enabled": False,
        "credentials_enable_service": False,
        "profile.password_manager_enabled": False,
    })
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP reports, JS errors
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    # Headless chromium may ignore the download preference; say it through DevTools as well.
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {
        "behavior": "allow", "downloadPath": str(download_dir), "eventsEnabled": True})
    driver.set_page_load_timeout(30)
    return driver


def xpath_literal(text: str) -> str:
    """`text` as an XPath 1.0 string literal (XPath has no escapes: concat() for both quotes)."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    parts = text.split("'")
    return "concat(" + ", \"'\", ".join(f"'{p}'" for p in parts) + ")"


class Browser:
    """A webdriver with the console's vocabulary: go to a path, find a control by its label, a
    button or a link by its name, wait for a condition. Every lookup by accessible name."""

    def __init__(self, driver, base_url: str, download_dir: Path):
        self.driver, self.base, self.downloads = driver, base_url, download_dir

    # navigation
    def go(self, path: str) -> None:
        self.driver.get(self.base + path)

    @property
    def path(self) -> str:
        url = self.driver.current_url
        return url[len(self.base):] if url.startswith(self.base) else url

    @property
    def source(self) -> str:
        return self.driver.page_source

    @property
    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.TAG_NAME, "body").text

    # finding by accessible name
    def find(self, xpath: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.XPATH, xpath)

    def find_all(self, xpath: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.XPATH, xpath)

    def field(self, label: str):
        """The form control labelled `label`: a <label for=…>, a <label> around the control
        (its own text, not the options of a <select> inside it), or an aria-label."""
        name = xpath_literal(label)
        for lab in self.find_all(f"//label[normalize-space()={name}]"
                                 f" | //label[normalize-space(text())={name}]"):
            target = lab.get_attribute("for")
            if target:
                found = self.find_all(f"//*[@id={xpath_literal(target)}]")
                if found:
                    return found[0]
            inside = lab.find_elements("xpath", ".//input | .//select | .//textarea")
            if inside:
                return inside[0]
        found = self.find_all(f"//*[(self::input or self::select or self::textarea)"
                              f" and @aria-label={name}]")
        if found:
            return found[0]
        raise AssertionError(f"no form control labelled {label!r} on {self.path}")

    def button(self, name: str):
        """The button named `name` (<button> text or aria-label, or a submit input's value)."""
        lit = xpath_literal(name)
        found = self.find_all(
            f"//button[normalize-space()={lit} or @aria-label={lit}]"
            f" | //input[(@type='submit' or @type='button') and @value={lit}]")
        if not found:
            raise AssertionError(f"no button named {name!r} on {self.path}")
        return found[0]

    def link(self, name: str):
        lit = xpath_literal(name)
        found = self.find_all(f"//a[normalize-space()={lit} or @aria-label={lit}]")
        if not found:
            raise AssertionError(f"no link named {name!r} on {self.path}")
        return found[0]

    def has_link(self, name: str) -> bool:
        lit = xpath_literal(name)
        return bool(self.find_all(f"//a[normalize-space()={lit} or @aria-label={lit}]"))

    def alerts(self) -> list[str]:
        return [e.text for e in self.find_all("//*[@role='alert']")]

    # acting
    def fill(self, label: str, value: str) -> None:
        control = self.field(label)
        control.clear()
        control.send_keys(value)

    def choose(self, label: str, value: str) -> None:
        """Select the option whose value is `value` in the <select> labelled `label`."""
        from selenium.webdriver.support.select import Select

        Select(self.field(label)).select_by_value(value)

    def click(self, element, navigates: bool = True) -> None:
        """Click, and wait for the page the click leads to to have loaded: first for the old
        page to be gone (right after a click, readyState is still the old page's
        "complete"), then for the new one to be complete."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.by import By

        old = self.driver.find_element(By.TAG_NAME, "html")
        element.click()

        def gone() -> bool:
            try:
                old.is_enabled()
            except WebDriverException as exc:  # stale, or (chromedriver's other wording,
                if gone_element(exc):            # mid-navigation) no longer in the document
                    return True
                raise
            return False

        if navigates:
            self.wait(gone, 15, "the next page after the click")
        self.wait(lambda: self.driver.execute_script("return document.readyState") == "complete",
                  15, "the page to load")

    def submit(self, button: str) -> None:
        self.click(self.button(button))

    def wait(self, predicate: Callable[[], Any], timeout: float,
             what: str | Callable[[], str], interval: float = 0.2) -> Any:
        """Poll until `predicate` is truthy (stale elements mid-navigation count as not yet);
        fail naming `what` (a callable: worded when it fails, e.g. with the page's alerts)
        and the page it was on."""
        from selenium.common.exceptions import NoSuchElementException, WebDriverException

        deadline = time.monotonic() + timeout
        while True:
            try:
                value = predicate()
                if value:
                    return value
            except NoSuchElementException:
                pass
            except WebDriverException as exc:
                if not gone_element(exc):
                    raise
            if time.monotonic() > deadline:
                said = what() if callable(what) else what
                raise AssertionError(f"{said}: not within {timeout}s (at {self.path})")
            time.sleep(interval)

    # state
    def cookies(self) -> dict[str, str]:
        return {c["name"]: c["value"] for c in self.driver.get_cookies()}

    def downloaded(self, timeout: float = 20) -> Path:
        """The one file the browser has finished downloading into its directory."""
        def done():
            files = [p for p in self.downloads.iterdir() if p.is_file()]
            if files and not any(p.suffix == ".crdownload" or p.name.startswith(".")
                                 for p in files):
                return files
            return None

        files = self.wait(done, timeout, "a finished download")
        assert len(files) == 1, f"expected one download, got {[p.name for p in files]}"
        return files[0]

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))

    def full_page_screenshot(self, path: Path, width: int = 1280) -> None:
        """A PNG of the whole page (for the docs), not only the window's first screen."""
        height = self.driver.execute_script(
            "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
        size = self.driver.get_window_size()
        self.driver.set_window_size(width, max(int(height) + 120, 600))
        try:
            self.screenshot(path)
        finally:
            self.driver.set_window_size(size["width"], size["height"])


def gone_element(exc: Exception) -> bool:
    """Whether a webdriver error means the element belongs to a page that has gone."""
    from selenium.common.exceptions import StaleElementReferenceException

    return isinstance(exc, StaleElementReferenceException) or (
        "does not belong to the document" in str(exc))


def artifact_name(nodeid_name: str) -> str:
    """A test's name as a file name (parametrised ids carry brackets, slashes, spaces)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid_name).strip("_")


class RecordOutcome:
    """A pytest plugin (registered by the browser fixture, since hooks in a test module are
    not called) that keeps each phase's report on the item: `item.rep_call.failed` tells the
    fixture's teardown to keep a screenshot and the page's source."""

    NAME = "console-browser-outcome"

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        setattr(item, f"rep_{report.when}", report)
        return report


def record_outcomes(config) -> None:
    if not config.pluginmanager.has_plugin(RecordOutcome.NAME):
        config.pluginmanager.register(RecordOutcome(), RecordOutcome.NAME)


def save_failure(browser: Browser, test_name: str) -> list[Path]:
    """Screenshot and page source of a failed test into tests/artifacts/ (CI keeps them)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = artifact_name(test_name)
    png, html = ARTIFACTS / f"{stem}.png", ARTIFACTS / f"{stem}.html"
    saved = []
    try:
        browser.screenshot(png)
        saved.append(png)
    except Exception:  # a dead browser must not hide the test's own failure
        pass
    try:
        html.write_text(f"<!-- {browser.driver.current_url} -->\n{browser.source}")
        saved.append(html)
    except Exception:  # as above
        pass
    return saved


def download_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="console-downloads-"))
