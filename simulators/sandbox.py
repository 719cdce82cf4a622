"""Test mode's providers: the real clients, served in-process by the bundled fakes.

A job submitted with a `lek_test_…` key must run the real pipeline and the real provider
client code (request building, `http.call_json`'s retries and deadlines, answer parsing) —
yet never reach a real provider, whatever provider keys and base URLs are configured, and
without a simulator process to run beside the service. `build_sandbox(settings)` builds the
same clients as `providers.build_providers`, pointed at `http://sandbox.invalid/<provider>`
with the key "sandbox", and seals each client's session: its base URL is served by a
`WSGIAdapter` (the fake's Flask app, called in this process, no socket), and every other
http(s) URL by an adapter that refuses (`requests.ConnectionError`). No code path of a
sandbox client can open a connection.

The fakes answer magic leads (MAGIC_DOMAINS, described in `simulators/providers.py`) the
same on every template, so an integrator can see each outcome on purpose: a match, no
match, unsure values, rate limiting, errors, a slow provider.
"""

from __future__ import annotations

import io
import threading
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from werkzeug.test import EnvironBuilder, run_wsgi_app

from enrichment.providers import build_providers
from enrichment.providers.social_links import SocialLinksClient, build_query

from .hunter import HunterConfig, create_hunter
from .providers import CANCEL_KEY, MAGIC_DOMAINS, SimConfig, create_simulator, magic_domain

if TYPE_CHECKING:
    from collections.abc import Callable

    from enrichment.config import Settings
    from enrichment.providers import Answer, Ask, Provider

BASE = "http://sandbox.invalid"
KEY = "sandbox"
UNLIMITED = float("inf")

__all__ = ["BASE", "KEY", "MAGIC_DOMAINS", "RefusingAdapter", "SandboxSocialLinks",
           "WSGIAdapter", "build_sandbox", "fakes", "magic", "reset", "seal"]


def magic(lead: dict) -> str | None:
    """The lead's magic domain: its e-mail's domain, else its `domain`, if one of
    MAGIC_DOMAINS (lower-cased); else None."""
    for value in (lead.get("email"), lead.get("domain")):
        if domain := magic_domain(value):
            return domain
    return None


# --- adapters ------------------------------------------------------------------------------


def _read_timeout(timeout) -> float | None:
    """The read part of what requests passes as `timeout`: (connect, read), a number, None."""
    if isinstance(timeout, tuple):
        return timeout[1]
    if isinstance(timeout, urllib3.Timeout):
        return timeout.read_timeout if isinstance(timeout.read_timeout, (int, float)) else None
    return timeout


class WSGIAdapter(BaseAdapter):
    """Serves requests under `base` from a WSGI app, in this process: the app sees the path
    below `base` (SCRIPT_NAME is base's path), and the answer comes back as a urllib3
    response over an in-memory body — status, headers (Retry-After) and body as the app
    gave them — so the client's streaming body reader works unchanged.

    The app runs on a thread: an answer that outlasts the request's read timeout raises
    `requests.ReadTimeout`, as a real server's would, and the app is told (the
    `sandbox.cancel` event in its environ) so that its slow answer stops waiting."""

    def __init__(self, app: Callable, base: str):
        super().__init__()
        self.app = app
        self.base = base.rstrip("/")

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout=None,
             verify=True, cert=None, proxies=None) -> requests.Response:
        environ = self._environ(request)
        status, headers, body = self._call(environ, _read_timeout(timeout), request)
        return self._response(request, status, headers, body)

    def close(self) -> None:
        """Nothing to close (a session closes its adapters when idle: this one stays usable)."""

    def _environ(self, request: requests.PreparedRequest) -> dict:
        url = urlsplit(request.url or "")
        base_path = urlsplit(self.base).path
        if not url.path.startswith(base_path):
            raise requests.exceptions.InvalidURL(f"sandbox: {request.url} is not under "
                                                 f"{self.base}", request=request)
        body = request.body.encode() if isinstance(request.body, str) else request.body
        builder = EnvironBuilder(
            path=url.path[len(base_path):] or "/", base_url=self.base,
            query_string=url.query, method=request.method,
            headers=list(request.headers.items()), data=body or None,
            environ_overrides={CANCEL_KEY: threading.Event()})
        try:
            return builder.get_environ()
        finally:
            builder.close()

    def _call(self, environ: dict, timeout: float | None, request: requests.PreparedRequest
              ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The app's (status, headers, body), within `timeout` seconds."""
        outcome: dict = {}

        def run() -> None:
            try:
                app_iter, status, headers = run_wsgi_app(self.app, environ, buffered=True)
                try:
                    outcome["answer"] = (int(status.split(" ", 1)[0]), headers.to_wsgi_list(),
                                         b"".join(app_iter))
                finally:
                    if hasattr(app_iter, "close"):
                        app_iter.close()
            except Exception as exc:  # handed to the caller's thread
                outcome["error"] = exc

        worker = threading.Thread(target=run, name="sandbox-wsgi", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            environ[CANCEL_KEY].set()
            raise requests.exceptions.ReadTimeout(
                f"sandbox: no answer within {timeout:.1f}s", request=request)
        if "error" in outcome:
            raise requests.exceptions.ConnectionError(
                f"sandbox: the simulator failed: {outcome['error']!r}",
                request=request) from outcome["error"]
        return outcome["answer"]

    def _response(self, request: requests.PreparedRequest, status: int,
                  headers: list[tuple[str, str]], body: bytes) -> requests.Response:
        raw = urllib3.HTTPResponse(body=io.BytesIO(body), headers=headers, status=status,
                                   preload_content=False, decode_content=False,
                                   request_url=request.url)
        resp = requests.Response()
        resp.status_code = status
        resp.headers = CaseInsensitiveDict(raw.headers)
        resp.encoding = get_encoding_from_headers(resp.headers)
        resp.raw = raw
        resp.reason = raw.reason
        resp.url = request.url or ""
        resp.request = request
        resp.connection = self
        return resp


class RefusingAdapter(BaseAdapter):
    """Every URL a sandbox client has no fake for: refused before anything is sent (a
    `ConnectionError` whose cause says so, which the client treats as never sent)."""

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout=None,
             verify=True, cert=None, proxies=None) -> requests.Response:
        raise requests.exceptions.ConnectionError(
            urllib3.exceptions.NewConnectionError("sandbox", "no outside calls"),
            request=request)

    def close(self) -> None:
        """Nothing to close."""


# --- the fakes and the clients ---------------------------------------------------------------

_lock = threading.Lock()
_apps: dict[str, Callable] = {}


def fakes() -> dict[str, Callable]:
    """The WSGI app serving each provider, by name (Perplexity and Social Links share one);
    one set per process, made on first use, with no rate limit, latency or quota (test mode
    is not a load test). Their `extensions` hold the fakes' config, stats and `magic`."""
    with _lock:
        if not _apps:
            providers = create_simulator(SimConfig(perplexity_rps=0, social_rps=0))
            _apps.update({
                "perplexity": providers,
                "social_links": providers,
                "hunter": create_hunter(HunterConfig(
                    finder_rps=0, finder_rpm=0, verifier_rps=0, verifier_rpm=0,
                    credits=UNLIMITED)),
            })
        return dict(_apps)


def reset() -> None:
    """Forget the fakes (their counters: a rate-limited lead starts its cycle again)."""
    with _lock:
        _apps.clear()


def seal(session: requests.Session, base: str, app: Callable | None) -> None:
    """Let `session` reach `app` under `base`, and nothing else."""
    refuse = RefusingAdapter()
    session.mount("http://", refuse)
    session.mount("https://", refuse)
    if app is not None:
        session.mount(f"{base.rstrip('/')}/", WSGIAdapter(app, base))
    session.proxies = {}


class SandboxSocialLinks(SocialLinksClient):
    """The Social Links client, asking about a magic lead with its magic domain in the
    query: `build_query` sends "<name> <company>" for a named lead, which would hide
    `jane@match.test` from the fake. The domain is added to the company the query names;
    the rest is the real client."""

    def fill(self, ask: Ask) -> Answer:
        domain = magic(ask.lead)
        if domain is None or domain in build_query(ask.lead):
            return super().fill(ask)
        lead = dict(ask.lead)
        if lead.get("name"):
            lead["company"] = " ".join(v for v in (lead.get("company"), domain) if v)
        else:  # a LinkedIn URL goes first: ask by the address or domain instead
            lead.pop("linkedin_url", None)
        return super().fill(replace(ask, lead=lead))


def build_sandbox(settings: Settings) -> dict[str, Provider]:
    """The providers of `providers.build_providers`, each at BASE/<name> with the key KEY
    and a session sealed to its fake. The settings' provider keys and base URLs are not
    used; their other choices (Perplexity's API style and model) are."""
    apps = fakes()
    sandboxed = replace(settings, ca_bundle=None, **{
        f"{name}_{what}": value for name in apps
        for what, value in (("api_base", f"{BASE}/{name}"), ("api_key", KEY))})
    clients = build_providers(sandboxed)
    clients["social_links"] = SandboxSocialLinks(sandboxed.social_links_api_base, KEY)
    for name, client in clients.items():
        seal(client.session, client.base, apps.get(name))
    return clients
