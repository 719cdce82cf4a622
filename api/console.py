"""/console/: the workspace's own web page (docs/console.md) — server-rendered, no front-end
build, nothing loaded from elsewhere. It calls the same domain code as the API.

Security: sign-in with an API key (behind the failed-authentication throttle) makes a
server-side session in Redis (`ConsoleSessions`: a random id in an HttpOnly, SameSite=Lax,
Secure cookie; idle expiry 12 h); every request re-reads the key, so a revoked key ends its
sessions at once; every POST carries Flask-WTF's CSRF token (checked before anything else:
403 without it); pages carry a CSP without inline scripts and `frame-ancestors 'none'`.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from datetime import timedelta

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SessionInterface, SessionMixin
from flask_wtf.csrf import CSRFError, generate_csrf, validate_csrf
from werkzeug.datastructures import CallbackDict
from werkzeug.exceptions import HTTPException
from wtforms.validators import ValidationError

from enrichment import uploads, webhooks, workspaces
from enrichment.billing import stripe_events
from enrichment.billing.usage import usage_summary
from enrichment.errors import BACKING_SERVICE_DOWN, EnrichmentError
from enrichment.jobs import read
from enrichment.jobs.states import PUBLIC_STATUSES
from enrichment.templates import TEMPLATES
from enrichment.webhooks import EVENTS, BadWebhookUrl

from .auth import services

log = logging.getLogger(__name__)
bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
               static_folder="static/console", static_url_path="/static")

COOKIE = "console_session"
IDLE = timedelta(hours=12)
ANONYMOUS = timedelta(minutes=15)  # a sign-in form's session (its CSRF token) lives this long
CSRF_SECRET = "console:csrf-secret"  # noqa: S105 (the Redis key that holds it, shared)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
NAV = [("Overview", "console.overview"), ("Enrich", "console.enrich"),
       ("Jobs", "console.jobs"), ("Webhooks", "console.hooks"),
       ("API keys", "console.keys"), ("Billing", "console.billing")]


# --- sessions ------------------------------------------------------------------------------

class ConsoleSession(CallbackDict, SessionMixin):
    def __init__(self, initial=None, sid: str | None = None):
        def changed(_):
            self.modified = True

        super().__init__(initial, changed)
        self.sid = sid
        self.modified = False
        self.rotate = False  # a new id at sign-in (no session fixation)
        self.down = False  # Redis could not be read


class ConsoleSessions(SessionInterface):
    """Flask's session, kept in Redis under a random id, for /console only (the API has no
    session at all)."""

    def _key(self, sid: str) -> str:
        return f"console:session:{sid}"

    def open_session(self, app, request):
        if not request.path.startswith("/console"):
            return None  # the API: no session (Flask's null session)
        redis = app.extensions["enrichment"].redis
        sid = request.cookies.get(COOKIE, "")
        try:
            raw = redis.get(self._key(sid)) if 20 <= len(sid) <= 64 and sid.isascii() else None
        except BACKING_SERVICE_DOWN:
            unavailable = ConsoleSession()
            unavailable.down = True  # type: ignore[attr-defined]
            return unavailable  # before_request answers with a page
        if raw is None:
            return ConsoleSession()
        return ConsoleSession(json.loads(raw), sid)

    def save_session(self, app, session, response):
        if not isinstance(session, ConsoleSession):
            return
        redis = app.extensions["enrichment"].redis
        secure = not app.extensions["enrichment"].settings.console_insecure_cookies
        if not session:
            if session.sid:
                redis.delete(self._key(session.sid))
                response.delete_cookie(COOKIE, path="/console")
            return
        if session.rotate and session.sid:
            redis.delete(self._key(session.sid))
            session.sid = None
        session.sid = session.sid or secrets.token_urlsafe(32)
        ttl = IDLE if "ws" in session else ANONYMOUS
        redis.set(self._key(session.sid), json.dumps(dict(session)), ex=ttl)
        response.set_cookie(COOKIE, session.sid, max_age=int(ttl.total_seconds()),
                            path="/console", httponly=True, samesite="Lax", secure=secure)


def install(app) -> None:
    app.session_interface = ConsoleSessions()
    # The token is bound to the session, which expires after 12 h idle: no shorter limit (a
    # Sign out form left open an hour must still sign out).
    app.config["WTF_CSRF_TIME_LIMIT"] = None
    app.register_blueprint(bp)
    app.extensions["console_errors"] = _http

    @app.after_request
    def _console_headers(response: Response) -> Response:
        if request.path.startswith("/console"):  # routing errors included
            response.headers.update(HEADERS)
        return response


# --- every request -------------------------------------------------------------------------

@bp.before_request
def _guard():
    app, svc = current_app, services()
    if getattr(session, "down", False):
        return page("error.html", 503, message="The service cannot reach Redis right now; "
                    "try again in a minute.")
    if request.endpoint == "console.enrich":  # an upload may be larger than an API body
        request.max_content_length = uploads.MAX_BYTES + 64 * 1024
    # One secret for every API process, read each time (a restored Redis gets a new one for
    # all processes at once, not one per process): one round trip, two the first time.
    secret = svc.redis.get(CSRF_SECRET)
    if secret is None:
        svc.redis.set(CSRF_SECRET, secrets.token_hex(32), nx=True)
        secret = svc.redis.get(CSRF_SECRET)
    app.config["WTF_CSRF_SECRET_KEY"] = secret.decode()
    if request.method == "POST":  # before anything else: 403 without the form's token
        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError as exc:
            raise CSRFError(exc.args[0]) from None
    g.workspace = None
    if request.endpoint in ("console.sign_in", "console.static"):
        return None
    prefix = session.get("prefix")
    workspace = None
    if prefix:
        with svc.db.connection() as conn:
            workspace = workspaces.by_key_prefix(conn, prefix)
    if workspace is None or str(workspace.id) != session.get("ws"):
        # signed out, idle too long, or the key was revoked
        session.clear()
        return redirect(url_for("console.sign_in"))
    g.workspace = workspace
    return None


HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
           "Cache-Control": "no-store"}


@bp.errorhandler(CSRFError)
def _csrf(exc: CSRFError):
    return page("error.html", 403, message="This form has expired or was not sent from "
                "this console; go back, reload the page and try again.")


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException):
    messages = {404: "There is nothing here (or it belongs to another workspace or mode).",
                413: f"The file is larger than {uploads.MAX_BYTES // (1024 * 1024)} MiB."}
    return page("error.html", exc.code or 500,
                message=messages.get(exc.code or 500, exc.description or exc.name))


@bp.errorhandler(EnrichmentError)
def _domain(exc: EnrichmentError):
    return page("error.html", exc.status, message=str(exc))


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    """A page, never a stack trace: the database or Redis out of reach (503), or a bug."""
    down = isinstance(exc, BACKING_SERVICE_DOWN)
    if not down:
        log.exception("console: unhandled error")
    return page("error.html", 503 if down else 500, message=(
        "The service cannot reach its database or Redis right now; try again in a minute."
        if down else f"Something broke on our side (request {g.get('request_id', '-')})."))


@bp.app_context_processor
def _context():
    return {"csrf_token": generate_csrf, "nav": NAV}


def page(name: str, status: int = 200, **values):
    return render_template(f"console/{name}", workspace=g.get("workspace"), **values), status


# --- sign-in -------------------------------------------------------------------------------

@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    if request.method == "GET":
        return page("sign_in.html")
    svc = services()
    key = (request.form.get("api_key") or "").strip()
    prefix = workspaces.key_prefix(key)
    wait, _ = svc.auth_guard.check(request.remote_addr or "-", prefix, key)
    if wait is not None:
        return page("sign_in.html", 429, error=f"Too many failed sign-ins; try again in "
                    f"{wait} seconds.")
    workspace = None
    if prefix is not None:
        with svc.db.connection() as conn:
            workspace = workspaces.authenticate(conn, key)
    if workspace is None:
        svc.auth_guard.failed(request.remote_addr or "-", prefix)
        return page("sign_in.html", 401, error="That API key is unknown or revoked.")
    svc.auth_guard.succeeded(prefix, key)
    session.clear()
    session.rotate = True  # type: ignore[attr-defined]
    session.update({"ws": str(workspace.id), "prefix": prefix})
    return redirect(url_for("console.overview"))


@bp.post("/sign-out")
def sign_out():
    session.clear()
    return redirect(url_for("console.sign_in"))


@bp.get("/")
def home():
    return redirect(url_for("console.overview"))


# --- overview ------------------------------------------------------------------------------

@bp.get("/overview")
def overview():
    svc, ws = services(), g.workspace
    with svc.db.connection() as conn:
        usage = usage_summary(conn, svc.settings.plans, {
            "id": ws.id, "plan": ws.plan, "plan_since": ws.plan_since}, svc.clock(),
            ws.livemode)
        daily = conn.execute(
            "SELECT day, matched, jobs FROM usage_daily WHERE workspace_id = %s"
            " AND livemode = %s AND day >= %s ORDER BY day",
            (ws.id, ws.livemode, usage["period"]["start"])).fetchall()
    return page("overview.html", usage=usage, chart=_chart(daily))


def _chart(days: list[dict]) -> dict:
    """Bars of jobs per day (matched darker), scaled into a 600x160 SVG."""
    top = max((d["jobs"] for d in days), default=0) or 1
    width = min(600 / max(len(days), 1), 40)  # a day's bar is at most 40 px wide
    bars = [{"x": round(i * width + 2, 1), "w": round(max(width - 4, 1), 1),
             "h": round(150 * d["jobs"] / top, 1), "m": round(150 * d["matched"] / top, 1),
             "label": f"{d['day']:%b %d}: {d['jobs']} jobs, {d['matched']} matched"}
            for i, d in enumerate(days)]
    return {"bars": bars, "top": top}


# --- enrich --------------------------------------------------------------------------------

@bp.route("/enrich", methods=["GET", "POST"])
def enrich():
    svc, ws = services(), g.workspace
    recent = uploads.recent(svc, ws)
    if request.method == "GET":
        return page("enrich.html", templates=TEMPLATES, recent=recent)
    file = request.files.get("csv_file")
    template = request.form.get("template", "")
    if file is None or not file.filename:
        return page("enrich.html", 400, templates=TEMPLATES, recent=recent,
                    error="Choose a CSV file.")
    data = file.stream.read(uploads.MAX_BYTES + 1)
    try:
        upload = uploads.create(svc, ws, template, data, file.filename,
                                session.get("prefix", ""))
    except uploads.BadUpload as exc:
        return page("enrich.html", 400, templates=TEMPLATES, recent=recent, error=str(exc))
    return redirect(url_for("console.upload", upload_id=upload.id))


def _upload(upload_id: str) -> uploads.Upload:
    upload = uploads.load(services(), upload_id, g.workspace)
    if upload is None:
        abort(404)
    return upload


@bp.get("/enrich/<upload_id>")
def upload(upload_id: str):
    svc = services()
    found = _upload(upload_id)
    if not found.started:
        columns = {i: f for f, i in found.mapping.items()}
        return page("mapping.html", upload=found, columns=columns,
                    template=TEMPLATES[found.template],
                    sample=uploads.rows(svc, found)[:5])
    if uploads.stalled(svc, found):  # a worker lost its task: send it again
        found.resume_at = time.time()
        uploads.save(svc, found)
        svc.publisher.send_admission(found.id)
    return page("progress.html", upload=found, progress=uploads.progress(svc, found))


@bp.post("/enrich/<upload_id>/start")
def start(upload_id: str):
    svc = services()
    found = _upload(upload_id)
    if not found.started:
        found.started = True
        uploads.save(svc, found)
        svc.publisher.send_admission(found.id)
    return redirect(url_for("console.upload", upload_id=found.id))


@bp.get("/enrich/<upload_id>/progress.json")
def progress(upload_id: str):
    svc, found = services(), _upload(upload_id)
    if uploads.stalled(svc, found):
        found.resume_at = time.time()
        uploads.save(svc, found)
        svc.publisher.send_admission(found.id)
    done = uploads.progress(svc, found)
    return {"done": done.done, "total": done.total, "finished": done.finished,
            "counts": done.counts}


@bp.get("/enrich/<upload_id>/results.csv")
def results(upload_id: str):
    found = _upload(upload_id)
    name = (found.filename.rsplit(".", 1)[0] or "leads") + "-enriched.csv"
    safe = "".join(c for c in name if c.isascii() and (c.isalnum() or c in "-_.")) \
        or "results.csv"
    return Response("".join(uploads.results(services(), found)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{safe}"'})


# --- jobs ----------------------------------------------------------------------------------

@bp.get("/jobs")
def jobs():
    ws = g.workspace
    status = request.args.get("status") or None
    template = request.args.get("template") or None
    after = request.args.get("starting_after") or None
    if status not in (None, *PUBLIC_STATUSES) or template not in (None, *TEMPLATES):
        return page("jobs.html", 400, jobs=[], more=False, filters=request.args,
                    statuses=PUBLIC_STATUSES, templates=TEMPLATES,
                    error="Unknown status or template.")
    try:
        cursor = uuid.UUID(after) if after else None
    except ValueError:
        cursor = None
    with services().db.connection() as conn:
        try:
            rows, more = read.list_jobs(conn, ws.id, limit=25, livemode=ws.livemode,
                                        starting_after=cursor, status=status,
                                        template=template)
        except EnrichmentError:
            rows, more = [], False
    return page("jobs.html", jobs=[read.job_body(r) for r in rows], more=more,
                filters=request.args, statuses=PUBLIC_STATUSES, templates=TEMPLATES)


@bp.get("/jobs/<uuid:job_id>")
def job(job_id: uuid.UUID):
    ws = g.workspace
    with services().db.connection() as conn:
        row = read.get_job(conn, ws.id, job_id, ws.livemode)
    if row is None:
        abort(404)
    return page("job.html", job=read.job_body(row))


# --- webhooks ------------------------------------------------------------------------------

@bp.route("/webhooks", methods=["GET", "POST"])
def hooks():
    svc, ws = services(), g.workspace
    created, error = None, None
    if request.method == "POST":
        events = [e for e in request.form.getlist("events") if e in EVENTS] or list(EVENTS)
        try:
            with svc.db.connection() as conn:
                created = webhooks.endpoint_body(webhooks.create_endpoint(
                    conn, ws.id, (request.form.get("url") or "").strip(), events,
                    svc.settings.webhooks_allow_private_urls, ws.livemode), with_secret=True)
        except (BadWebhookUrl, EnrichmentError) as exc:
            error = str(exc)
    with svc.db.connection() as conn:
        endpoints = [(webhooks.endpoint_body(e), webhooks.deliveries(
            conn, ws.id, e["id"], limit=5, livemode=ws.livemode))
            for e in webhooks.list_endpoints(conn, ws.id, ws.livemode)]
    return page("webhooks.html", 400 if error else 200, endpoints=endpoints, events=EVENTS,
                created=created, error=error)


@bp.post("/webhooks/<uuid:endpoint_id>/delete")
def delete_hook(endpoint_id: uuid.UUID):
    ws = g.workspace
    with services().db.connection() as conn:
        webhooks.delete_endpoint(conn, ws.id, endpoint_id, ws.livemode)
    return redirect(url_for("console.hooks"))


# --- API keys ------------------------------------------------------------------------------

@bp.route("/keys", methods=["GET", "POST"])
def keys():
    svc, ws = services(), g.workspace
    created = None
    if request.method == "POST":
        # A test-mode session makes test keys only: a live key would reach live data.
        live = request.form.get("test") is None and ws.livemode
        with svc.db.connection() as conn:
            created = workspaces.create_api_key(conn, ws.id, livemode=live)
    with svc.db.connection() as conn:
        rows = workspaces.list_api_keys(conn, ws.id)
    return page("keys.html", keys=rows, created=created, current=session.get("prefix"))


@bp.post("/keys/<prefix>/revoke")
def revoke(prefix: str):
    svc, ws = services(), g.workspace
    with svc.db.connection() as conn:
        row = conn.execute("SELECT livemode FROM api_keys WHERE prefix = %s AND"
                           " workspace_id = %s", (prefix, ws.id)).fetchone()
        # Only this workspace's keys; a test-mode session only test keys.
        if row is None or (row["livemode"] and not ws.livemode):
            abort(404)
        workspaces.revoke_api_key(conn, svc.key_cache, prefix)
    return redirect(url_for("console.keys"))


# --- billing -------------------------------------------------------------------------------

@bp.route("/billing", methods=["GET", "POST"])
def billing():
    svc, ws = services(), g.workspace
    if not ws.livemode:
        return page("billing.html", live=False)
    checkout, error = None, None
    packs = svc.settings.plans.packs
    if request.method == "POST":
        name = request.form.get("pack", "")
        if name not in packs:
            error = "Choose a credit pack."
        else:
            try:
                checkout = stripe_events.start_checkout(
                    svc.db, svc.billing, svc.settings.plans, ws.id, name,
                    svc.settings.checkout_success_url, svc.settings.checkout_cancel_url).url
            except EnrichmentError as exc:
                error = str(exc)
    invoices, upcoming = _invoices(svc, ws)
    return page("billing.html", 400 if error else 200, live=True, packs=packs,
                checkout=checkout, error=error, invoices=invoices, upcoming=upcoming)


def _invoices(svc, ws) -> tuple[list[dict], dict | None]:
    """The workspace's invoices and the upcoming one — nothing when Stripe is not configured
    or has no customer for it (shown as such, never an error page)."""
    with svc.db.connection() as conn:
        customer = conn.execute("SELECT stripe_customer_id FROM workspaces WHERE id = %s",
                                (ws.id,)).fetchone()["stripe_customer_id"]
    if customer is None:
        return [], None
    found: list = [[], None]
    for n, fetch in enumerate((lambda: list(svc.billing.invoices(customer)),
                               lambda: svc.billing.upcoming_invoice(customer))):
        try:  # each on its own: Stripe down or refusing shows "none", nothing breaks
            found[n] = fetch()
        except Exception:
            log.warning("console: Stripe did not answer for workspace %s", ws.id)
    return found[0], found[1]


@bp.app_template_filter("cents")
def _cents(value) -> str:
    return "-" if value is None else f"{int(value) / 100:,.2f}"
