"""A lead list uploaded in the console: read, mapped to lead fields, admitted in batches of
100 in the background, followed, and given back as a CSV (docs/console.md#enrich).

An upload lives in Redis for UPLOAD_DAYS — its description (template, column mapping, the ids
of the batches admitted so far) under one key, its rows as read under another, read only when
needed — at most KEPT_UPLOADS per workspace and mode (the oldest go). Closing the page loses
nothing, and admission resumes where it stopped: a chunk's batch id is recorded before its
leads are admitted (in one transaction), so a chunk interrupted before its batch closed is
admitted again into the same batch (its leads already admitted today are same-day replays:
no second job, no second charge).
Admission goes through the jobs service, one batch per 100 rows, exactly like `POST
/api/v1/enrichment/batch` — the same rules, caps, idempotency and rate limit (one submission
token per batch), and stops when the key that started it is revoked.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from redis.exceptions import LockError

from .csvsafe import safe_cell
from .jobs import intake, read, service
from .jobs.states import DEFAULT_MIN_CONFIDENCE
from .leads import LEAD_FIELDS
from .ratelimit import SUBMIT, Policy
from .services import Services
from .templates import TEMPLATES
from .workspaces import Workspace, by_key_prefix

MAX_ROWS = 10_000
MAX_BYTES = 5 * 1024 * 1024
MAX_COLUMNS = 100
MAX_CELL = 2_000  # characters
KEPT_UPLOADS = 20  # per workspace and mode
CHUNK = 100  # leads per batch, as the API's batch route
LOCK_SECONDS = 600  # an admitting process holds the upload this long past its last batch
STALL_SECONDS = 120  # started, rows left, nobody admitting and nothing due: lost
UPLOAD_DAYS = 7
# Column names (lower-cased, spaces and dashes as underscores) a lead field is read from.
ALIASES = {
    "email": ("email", "e_mail", "email_address", "work_email"),
    "name": ("name", "full_name", "contact", "contact_name", "person"),
    "company": ("company", "company_name", "organization", "organisation", "account"),
    "domain": ("domain", "website", "company_domain", "url", "web"),
    "linkedin_url": ("linkedin_url", "linkedin", "linkedin_profile"),
}


class BadUpload(ValueError):
    """A file that cannot be enriched, with a message for the person who sent it."""


@dataclass
class Upload:
    id: str
    workspace_id: str
    livemode: bool
    template: str
    header: list[str]
    total: int
    mapping: dict[str, int]  # lead field → column index
    key_prefix: str = ""  # the API key that made it: admission stops if it is revoked
    batches: list[str] = field(default_factory=list)  # one per CHUNK rows, in order
    pending: str | None = None  # the batch of the chunk being admitted
    started: bool = False
    resume_at: float = 0.0  # admission waits for the rate limit until then (epoch seconds)
    filename: str = ""

    @property
    def admitted(self) -> int:
        return min(self.total, len(self.batches) * CHUNK)

    def lead(self, row: list[str]) -> dict:
        return {f: row[i].strip() for f, i in self.mapping.items() if row[i].strip()}


def _key(upload_id: str) -> str:
    return f"console:upload:{upload_id}"


def _normal(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def mapping(header: list[str]) -> dict[str, int]:
    """Which column each lead field is read from: the first column whose name is one of the
    field's names."""
    names = [_normal(h) for h in header]
    found = {}
    for lead_field in LEAD_FIELDS:
        for alias in ALIASES[lead_field]:
            if alias in names:
                found[lead_field] = names.index(alias)
                break
    return found


def parse(data: bytes, template: str) -> tuple[list[str], list[list[str]], dict[str, int]]:
    """The header, rows and mapping of an uploaded file; BadUpload says why not."""
    if template not in TEMPLATES:
        raise BadUpload("Choose a template.")
    if len(data) > MAX_BYTES:
        raise BadUpload(f"The file is larger than {MAX_BYTES // (1024 * 1024)} MiB.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadUpload("The file is not UTF-8 text (save it as CSV UTF-8).") from None
    if "\x00" in text:
        raise BadUpload("The file is not a CSV text file.")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    try:
        table = [r for r in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise BadUpload(f"The file is not a readable CSV ({exc}).") from None
    if not table:
        raise BadUpload("The file is empty.")
    header, rows = table[0], table[1:]
    if not rows:
        raise BadUpload("The file has a header but no rows.")
    if len(rows) > MAX_ROWS:
        raise BadUpload(f"The file has {len(rows):,} rows; at most {MAX_ROWS:,} per upload.")
    if len(header) > MAX_COLUMNS:
        raise BadUpload(f"The file has {len(header):,} columns; at most {MAX_COLUMNS}.")
    for number, row in enumerate(rows, start=2):
        if any(c.strip() for c in row[len(header):]):
            raise BadUpload(f"Line {number} has more cells than the header has columns.")
        if any(len(c) > MAX_CELL for c in row):
            raise BadUpload(f"Line {number} has a cell longer than {MAX_CELL:,} characters.")
        row[:] = row[:len(header)] + [""] * (len(header) - len(row))
    found = mapping(header)
    if not found:
        raise BadUpload("No column names a lead field: name columns email, name, company, "
                        "domain or linkedin_url.")
    return header, rows, found


def create(svc: Services, workspace: Workspace, template: str, data: bytes,
           filename: str = "", key_prefix: str = "") -> Upload:
    header, rows, found = parse(data, template)
    upload = Upload(secrets.token_urlsafe(12), str(workspace.id), workspace.livemode, template,
                    header, len(rows), found, key_prefix, filename=filename[:200])
    ttl = UPLOAD_DAYS * 86400
    index = _index(workspace)
    with svc.redis.pipeline() as pipe:
        pipe.set(_rows_key(upload.id), json.dumps(rows), ex=ttl)
        pipe.set(_key(upload.id), json.dumps(asdict(upload)), ex=ttl)
        pipe.lpush(index, upload.id)
        pipe.lrange(index, KEPT_UPLOADS, -1)  # the oldest, beyond what is kept: they go
        pipe.ltrim(index, 0, KEPT_UPLOADS - 1)
        pipe.expire(index, ttl)
        dropped = pipe.execute()[3]
    for old in dropped:
        old_id = old.decode() if isinstance(old, bytes) else old
        svc.redis.delete(_key(old_id), _rows_key(old_id))
    return upload


def _rows_key(upload_id: str) -> str:
    return f"{_key(upload_id)}:rows"


def rows(svc: Services, upload: Upload) -> list[list[str]]:
    raw = svc.redis.get(_rows_key(upload.id))
    return json.loads(raw) if raw is not None else []


def _index(workspace: Workspace) -> str:
    return f"console:uploads:{workspace.bucket}"


def save(svc: Services, upload: Upload) -> None:
    svc.redis.set(_key(upload.id), json.dumps(asdict(upload)), ex=UPLOAD_DAYS * 86400)


def load(svc: Services, upload_id: str, workspace: Workspace | None = None) -> Upload | None:
    """The upload — only its own workspace's, in the same mode, when `workspace` is given."""
    raw = svc.redis.get(_key(upload_id)) if upload_id.replace("-", "").replace("_", "") \
        .isalnum() else None
    if raw is None:
        return None
    upload = Upload(**json.loads(raw))
    if workspace is not None and (upload.workspace_id != str(workspace.id)
                                  or upload.livemode != workspace.livemode):
        return None
    return upload


def recent(svc: Services, workspace: Workspace) -> list[Upload]:
    ids = svc.redis.lrange(_index(workspace), 0, 19)
    found = (load(svc, i.decode() if isinstance(i, bytes) else i, workspace) for i in ids)
    return [u for u in found if u is not None]


def admit_next(svc: Services, workspace: Workspace, upload: Upload, table: list[list[str]],
               validate: Callable[[dict, str], dict]) -> bool:
    """Admit the next CHUNK rows of `table` as one batch (the one recorded as pending, if a
    run was interrupted in it). `validate(lead, template)` returns the lead as a submission
    would take it, or raises ValueError with the reason (a refused row). Returns whether rows
    remain."""
    start = upload.admitted
    chunk = table[start:start + CHUNK]
    if not chunk:
        return False
    if upload.pending is None:
        upload.pending = str(service.open_batch(svc, workspace.id, upload.template,
                                                len(chunk), workspace.livemode))
        save(svc, upload)
    batch_id = uuid.UUID(upload.pending)
    items: list[tuple[int, uuid.UUID | None, bool]] = []
    valid: list[tuple[int, dict]] = []
    for index, row in enumerate(chunk):
        try:
            valid.append((index, validate(upload.lead(row), upload.template)))
        except ValueError:  # invalid: a refused row
            items.append((index, None, True))
    # The valid rows admitted together, in one transaction, as POST /enrichment/batch does.
    outcomes = service.submit_batch(
        svc, workspace, upload.template, [lead for _, lead in valid], {}, 7,
        min_confidence=DEFAULT_MIN_CONFIDENCE, batch_id=batch_id) if valid else []
    for (index, _), outcome in zip(valid, outcomes, strict=True):
        if isinstance(outcome, intake.Refused):  # a cap, suppression
            items.append((index, None, True))
        else:
            items.append((index, outcome.job["id"], False))
    service.close_batch(svc, workspace.id, batch_id, sorted(items, key=lambda i: i[0]))
    upload.batches.append(upload.pending)
    upload.pending = None
    save(svc, upload)
    return upload.admitted < upload.total


def admit(svc: Services, upload_id: str, validate: Callable[[dict, str], dict]) -> int:
    """Admit what remains of a started upload — one process at a time (a Redis lock): a
    duplicate or retried task finds it held and leaves. When the workspace's submission rate
    limit runs out, the rest is sent again for when it refills. Returns the rows admitted."""
    lock = svc.redis.lock(f"{_key(upload_id)}:lock", timeout=LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return 0
    try:
        upload = load(svc, upload_id)  # read under the lock: what the last holder saved
        if upload is None or not upload.started:
            return 0
        table = rows(svc, upload)
        while upload.admitted < upload.total:
            with svc.db.connection() as conn:  # the key that started it still stands?
                workspace = by_key_prefix(conn, upload.key_prefix)
            if workspace is None or str(workspace.id) != upload.workspace_id:
                break  # revoked (or its workspace deleted): stop
            policy = Policy.for_plan(svc.settings.plans[workspace.plan], SUBMIT)
            decision = svc.rate_limiter.hit(workspace.bucket, policy, stats=False)
            if not decision.allowed:
                upload.resume_at = time.time() + decision.retry_after
                save(svc, upload)
                svc.publisher.send_admission(upload_id, countdown=decision.retry_after)
                break
            admit_next(svc, workspace, upload, table, validate)
            lock.extend(LOCK_SECONDS, replace_ttl=True)
        return upload.admitted
    finally:
        with contextlib.suppress(LockError):
            lock.release()


def stalled(svc: Services, upload: Upload) -> bool:
    """Started, rows left, nobody admitting them and no admission due (a worker lost its
    task): the page that shows it sends it again."""
    return (upload.started and upload.admitted < upload.total
            and time.time() > upload.resume_at + STALL_SECONDS
            and not svc.redis.exists(f"{_key(upload.id)}:lock"))


@dataclass
class Progress:
    total: int
    done: int
    counts: dict[str, int]

    @property
    def finished(self) -> bool:
        return self.done >= self.total


def progress(svc: Services, upload: Upload) -> Progress:
    counts = {"queued": upload.total - upload.admitted, "processing": 0, "succeeded": 0,
              "failed": 0, "dead": 0, "rejected": 0}
    with svc.db.connection() as conn:
        for batch_id in upload.batches:
            body = read.batch_progress(conn, uuid.UUID(upload.workspace_id),
                                       uuid.UUID(batch_id), upload.livemode)
            for name, n in (body or {}).get("counts", {}).items():
                counts[name] += n
    done = counts["succeeded"] + counts["failed"] + counts["dead"] + counts["rejected"]
    return Progress(upload.total, done, counts)


def results(svc: Services, upload: Upload) -> Iterator[str]:
    """The results file, line by line: the customer's columns as read (a column the template
    also fills keeps the customer's value, or takes the found one where theirs is empty), then
    `status`, then the template's other fields — every cell from the service neutralised
    against formula injection (csvsafe)."""
    fields = TEMPLATES[upload.template].fields
    names = [_normal(h) for h in upload.header]
    shared = {f: names.index(f) for f in fields if f in names}
    extra = [f for f in fields if f not in shared]
    out = io.StringIO()
    writer = csv.writer(out)

    def line(cells: list[str]) -> str:
        writer.writerow(cells)
        text = out.getvalue()
        out.seek(0)
        out.truncate()
        return text

    yield line([*upload.header, "status", *extra])
    jobs = _jobs(svc, upload)
    for index, row in enumerate(rows(svc, upload)):
        job = jobs.get(index)
        status = "rejected" if job is None else job["status"]
        found = ((job or {}).get("result") or {}).get("fields") or {}
        cells = list(row)  # (parse made every row as wide as the header)
        for name, i in shared.items():
            if not cells[i].strip() and found.get(name):
                cells[i] = safe_cell(found[name])
        yield line([*cells, status, *(safe_cell(found.get(f)) for f in extra)])


def _jobs(svc: Services, upload: Upload) -> dict[int, dict]:
    """Row index → its job's body (rows refused, erased or not admitted yet: absent)."""
    ws = uuid.UUID(upload.workspace_id)
    bodies: dict[int, dict] = {}
    with svc.db.connection() as conn:
        for n, batch_id in enumerate(upload.batches):
            items = conn.execute("SELECT idx, job_id FROM batch_items WHERE batch_id = %s"
                                 " AND job_id IS NOT NULL", (batch_id,)).fetchall()
            found = {r["id"]: r for r in read.get_jobs(conn, ws, [i["job_id"] for i in items],
                                                       upload.livemode)}
            for item in items:
                if item["job_id"] in found:
                    bodies[n * CHUNK + item["idx"]] = read.job_body(found[item["job_id"]])
    return bodies
