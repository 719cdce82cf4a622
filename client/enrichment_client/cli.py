"""enrichment-client enrich FILE.csv --template T [--out OUT.csv]

Sends a CSV of leads through the lead-enrichment API (ENRICHMENT_API_URL, ENRICHMENT_API_KEY)
in batches of at most 100, waits for the results and writes one row per input row, in order.

* Columns are matched to lead fields by name (email, name, company, domain, linkedin_url and
  common variants such as "E-mail", "Company name", "Website", "LinkedIn"); every column,
  mapped or not, is written back as it was (by position: duplicate names are fine).
* Each batch carries an Idempotency-Key derived from the file's content and the batch's
  place in it, so running the same file again (within 24 h) resumes: batches already sent
  are answered as before (no lead is charged twice), the rest are sent. Leads the hard cap
  turned away are sent again (a same-day repeat of a lead is never charged twice).
* A 429 is waited out (Retry-After); a 402 (the workspace's hard cap) stops the run cleanly:
  what was sent is waited for and written, the rest is marked `not_submitted`.
* A cell written from an answer (result fields, citations, status, errors) that a spreadsheet
  would read as a formula (it begins with =, +, -, @, a tab or a carriage return) is prefixed
  with ' (OWASP CSV injection); the file's own columns are written as read.
* Progress: a bar on a terminal, plain lines otherwise. Exit 0 when done, 1 when stopped by
  the hard cap or the API, 2 for a bad file or arguments.
"""

from __future__ import annotations

import argparse
import csv
import email.utils
import hashlib
import io
import os
import sys
import time
import uuid
from dataclasses import dataclass, field

import requests
from tqdm import tqdm

BATCH = 100
TERMINAL = ("succeeded", "failed", "dead")
ALIASES = {
    "email": ("email", "e_mail", "email_address", "work_email", "mail"),
    "name": ("name", "full_name", "contact_name", "person"),
    "company": ("company", "company_name", "organization", "organisation", "account"),
    "domain": ("domain", "website", "company_domain", "url", "web"),
    "linkedin_url": ("linkedin_url", "linkedin", "linkedin_profile", "linkedin_profile_url"),
}
MAX_FIELD = 1024 * 1024  # characters in one cell
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
READS_PER_SECOND = 2.0  # polls of an unfinished batch; the smallest plan's read budget is 5/s


class Stop(Exception):
    """End the run with a message and an exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def safe_cell(value: object) -> str:
    """`value` as a cell's text, prefixed with `'` if a spreadsheet would read it as a
    formula: a web page quoting `=HYPERLINK(...)` must not become a live link in the
    customer's Excel. The service's copy is enrichment/csvsafe.py (this package does not
    depend on it): change both together."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _key(header: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in header.strip().lower()).strip("_")


def read_csv(path: str) -> tuple[bytes, list[str], list[list[str]], dict[str, int]]:
    """(raw bytes, header, rows, lead field → column index)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise Stop(f"{path}: {exc.strerror}", 2) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Stop(f"{path} is not UTF-8 text: save it as CSV UTF-8 and try again", 2) from None
    csv.field_size_limit(MAX_FIELD)
    try:
        lines = [r for r in csv.reader(io.StringIO(text)) if r]  # blank lines hold no lead
    except csv.Error as exc:
        raise Stop(f"{path}: not a readable CSV ({exc})", 2) from None
    header, rows = (lines[0], lines[1:]) if lines else ([], [])
    for number, row in enumerate(rows, start=2):
        if len(row) > len(header) and any(cell.strip() for cell in row[len(header):]):
            raise Stop(f"{path}: row {number} has more cells than the header", 2)
        row[len(header):] = [""] * (len(header) - len(row))  # short rows: empty cells
    mapping: dict[str, int] = {}
    for index, column in enumerate(header):
        for lead_field, names in ALIASES.items():
            if _key(column) in names and lead_field not in mapping:
                mapping[lead_field] = index
    if not mapping:
        raise Stop(f"{path} has no lead column: add email, linkedin_url, domain, company or "
                   f"name (found: {', '.join(header) or 'no header'})", 2)
    return raw, header, rows, mapping


@dataclass
class Progress:
    total: int
    submitted: int = 0
    done: int = 0
    failed: int = 0
    bar: tqdm | None = None
    last_line: float = 0.0
    started: float = field(default_factory=time.monotonic)
    lines: bool = field(default=False)

    def __post_init__(self):
        if sys.stderr.isatty():
            # A terminal that reports no size (some CI runners) gets an 80 x 24 one: tqdm would
            # otherwise draw nothing.
            size = os.get_terminal_size(sys.stderr.fileno())
            sized = size.columns > 0 and size.lines > 0
            self.bar = tqdm(total=self.total, unit="lead", dynamic_ncols=sized,
                            ncols=None if sized else 80, nrows=None if sized else 24)
        else:
            self.lines = True

    def update(self, submitted: int | None = None, done: int | None = None,
               failed: int | None = None) -> None:
        if submitted is not None:
            self.submitted = submitted
        if failed is not None:
            self.failed = failed
        if done is not None:
            if self.bar is not None:
                self.bar.update(done - self.done)
            self.done = done
        if self.bar is not None:
            self.bar.set_postfix(submitted=self.submitted, failed=self.failed)
        elif time.monotonic() - self.last_line > 2 or self.done == self.total:
            self.last_line = time.monotonic()
            rate = self.done / max(1e-9, self.last_line - self.started)
            eta = f"{(self.total - self.done) / rate:.0f}s" if rate else "?"
            print(f"submitted {self.submitted}/{self.total}  done {self.done}  "
                  f"failed {self.failed}  {rate:.1f} leads/s  eta {eta}", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Api:
    def __init__(self, url: str, key: str):
        self.url, self.session = url.rstrip("/"), requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        """One request, waiting out 429s (Retry-After) and transient failures; a read that
        leaves little of the read budget slows down to what is left."""
        for attempt in range(8):
            try:
                resp = self.session.request(method, self.url + path, timeout=30, **kwargs)
            except requests.RequestException as exc:
                if attempt == 7:
                    raise Stop(f"the API cannot be reached: {exc}", 1) from None
                time.sleep(min(30, 2 ** attempt))
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                time.sleep(retry_after(resp.headers.get("Retry-After"), min(30, 2 ** attempt)))
                continue
            if resp.status_code == 401:
                raise Stop("the API key was refused (401): check ENRICHMENT_API_KEY", 1)
            remaining = resp.headers.get("X-RateLimit-Remaining")
            if method == "GET" and remaining is not None and int(remaining) < 2:
                time.sleep(max(0.0, float(resp.headers.get("X-RateLimit-Reset", 0))
                               - time.time()))
            return resp
        raise Stop(f"{method} {path} kept failing (last: HTTP {resp.status_code})", 1)


def retry_after(value: str | None, default: float) -> float:
    """Retry-After as seconds or an HTTP date; `default` when absent or unreadable."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return default


def leads_of(rows: list[list[str]], mapping: dict[str, int]) -> list[dict]:
    return [{f: row[c].strip() for f, c in mapping.items() if row[c].strip()} for row in rows]


def enrich(args) -> int:
    raw, header, rows, mapping = read_csv(args.file)
    url = args.api_url or os.environ.get("ENRICHMENT_API_URL")
    key = args.api_key or os.environ.get("ENRICHMENT_API_KEY")
    if not url or not key:
        raise Stop("set ENRICHMENT_API_URL and ENRICHMENT_API_KEY (or --api-url/--api-key)", 2)
    api, leads = Api(url, key), leads_of(rows, mapping)
    digest = hashlib.sha256(raw + f"|{args.template}|{args.max_age_days}".encode()).hexdigest()
    outcome: list[dict] = [{} for _ in rows]  # per row: its batch entry (job or problem)
    progress = Progress(len(rows))
    out = args.out or _out_name(args.file)
    stopped = None
    try:
        for start in range(0, len(leads), BATCH):
            chunk = list(range(start, min(start + BATCH, len(leads))))
            stopped = submit(api, args, leads, outcome, chunk,
                             f"csv-{digest[:32]}-{start // BATCH}")
            if stopped is None and any(outcome[i].get("status") == 402 for i in chunk) and \
                    outcome[chunk[0]].get("replayed_answer"):
                # A re-run: this batch's answer is the stored one, in which the hard cap
                # turned leads away. Send those again (a fresh key: no lead is charged twice
                # in a day, whatever the key).
                again = [i for i in chunk if outcome[i].get("status") == 402]
                stopped = submit(api, args, leads, outcome, again,
                                 f"csv-{digest[:32]}-{start // BATCH}-{uuid.uuid4().hex[:12]}")
            if stopped is None and any(outcome[i].get("status") == 402 for i in chunk):
                stopped = next(outcome[i]["problem"].get("detail", "hard cap reached")
                               for i in chunk if outcome[i].get("status") == 402)
            progress.update(submitted=chunk[-1] + 1)
            if stopped:
                break
        wait(api, outcome, progress)
    finally:
        progress.close()
        write(out, header, rows, outcome)  # what is known so far, whatever stopped the run
    failed = sum(1 for o in outcome if _status(o) not in ("succeeded",))
    print(f"{len(rows)} rows written to {out}: {len(rows) - failed} succeeded, {failed} not",
          file=sys.stderr)
    if stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        return 1
    return 0


def submit(api: Api, args, leads: list[dict], outcome: list[dict], rows: list[int],
           key: str) -> str | None:
    """Send the leads of `rows` as one batch; their entries go to `outcome`. Returns why the
    run must stop (a 402 for the whole batch), else None."""
    resp = api.call("POST", "/api/v1/enrichment/batch", headers={"Idempotency-Key": key},
                    json={"template": args.template, "leads": [leads[i] for i in rows],
                          "max_age_days": args.max_age_days})
    if resp.status_code == 402:
        return resp.json().get("detail", "the workspace's hard cap is reached")
    if resp.status_code != 207:
        raise Stop(f"batch of rows {rows[0] + 2}-{rows[-1] + 2}: HTTP {resp.status_code}: "
                   f"{resp.json().get('detail', resp.text[:200])}", 1)
    body = resp.json()
    replayed = resp.headers.get("Idempotent-Replayed") == "true"
    for entry in body["results"]:
        outcome[rows[entry["index"]]] = entry | {"batch": body["batch_id"],
                                                 "replayed_answer": replayed}
    return None


def wait(api: Api, outcome: list[dict], progress: Progress) -> None:
    """Poll the batches of unfinished jobs through the list endpoint (a batch's jobs fit one
    page) until every job ended — the oldest unfinished batch first: jobs end about in the
    order they were sent, so while it is unfinished the client waits a poll interval, and
    once it is done the next one is read at once. A list is then written moments after its
    last job ends, in as many reads as it has batches plus the waits (the read budget paces
    them: `Api.call`)."""
    while True:
        pending: dict[str, list[int]] = {}  # in row order: the oldest batch first
        for i, entry in enumerate(outcome):
            job = entry.get("job")
            if job and job["status"] not in TERMINAL:
                pending.setdefault(entry["batch"], []).append(i)
        done = sum(1 for e in outcome if _status(e) in (*TERMINAL, "rejected", ""))
        failed = sum(1 for e in outcome if _status(e) in ("failed", "dead", "rejected"))
        progress.update(done=done, failed=failed)
        if not pending:
            return
        batch_id, indexes = next(iter(pending.items()))
        page = api.call("GET", "/api/v1/enrichment",
                        params={"batch_id": batch_id, "limit": BATCH}).json()
        by_id = {j["job_id"]: j for j in page["data"]}
        for i in indexes:
            job = by_id.get(outcome[i]["job"]["job_id"])
            if job is None:  # erased meanwhile
                outcome[i] = {"status": 404, "problem": {"detail": "job not found"}}
            else:
                outcome[i]["job"] = job
        if any(_status(outcome[i]) not in (*TERMINAL, "rejected", "") for i in indexes):
            time.sleep(1.0 / READS_PER_SECOND)  # its jobs are still running


def _status(entry: dict) -> str:
    if "job" in entry:
        return entry["job"]["status"]
    if "problem" in entry:
        return "not_submitted" if entry.get("status") == 402 else "rejected"
    return "not_submitted" if entry == {} else ""


def _out_name(path: str) -> str:
    base, _, _ = path.rpartition(".csv")
    return f"{base or path}.enriched.csv"


def write(path: str, header: list[str], rows: list[list[str]], outcome: list[dict]) -> None:
    fields = sorted({k for o in outcome if "job" in o and o["job"].get("result")
                     for k in o["job"]["result"]["fields"]})
    extra = ["status", "match", "job_id", "error", *fields, "citations"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow([*header, *map(safe_cell, extra)])  # field names come from answers
        for row, entry in zip(rows, outcome, strict=True):
            job = entry.get("job") or {}
            result = job.get("result") or {}
            found = result.get("fields") or {}
            answer = [_status(entry), _match(job), job.get("job_id", ""),
                      job.get("error") or _problem(entry.get("problem")),
                      *(found.get(f) or "" for f in fields),
                      " | ".join(result.get("citations") or [])]
            # The customer's columns as read; every cell from an answer made safe.
            out.writerow([*row[:len(header)], *map(safe_cell, answer)])


def _match(job: dict) -> str:
    return "" if job.get("match") is None else str(job["match"]).lower()


def _problem(problem: dict | None) -> str:
    """A refusal as one cell: its detail and, for invalid fields, which and why."""
    if not problem:
        return ""
    fields = "; ".join(f"{e['field']}: {e['message']}" for e in problem.get("errors") or [])
    return f"{problem.get('detail', '')} ({fields})" if fields else problem.get("detail", "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enrichment-client", description=__doc__.split(
        "\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("enrich", help="enrich a CSV of leads")
    run.add_argument("file")
    run.add_argument("--template", required=True,
                     help="company_profile, person_basic or person_social")
    run.add_argument("--out", help="where to write (default: FILE.enriched.csv)")
    run.add_argument("--max-age-days", type=int, default=7, choices=range(0, 8),
                     metavar="0-7", help="answer from results up to this old (0: fresh)")
    run.add_argument("--api-url", help="default: $ENRICHMENT_API_URL")
    run.add_argument("--api-key", help="default: $ENRICHMENT_API_KEY")
    args = parser.parse_args(argv)
    try:
        return enrich(args)
    except Stop as exc:
        print(f"enrichment-client: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("enrichment-client: interrupted; run it again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
