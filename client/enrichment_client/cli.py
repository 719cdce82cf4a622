"""enrichment-client enrich FILE.csv --template T [--out OUT.csv]

Sends a CSV of leads through the lead-enrichment API (ENRICHMENT_API_URL, ENRICHMENT_API_KEY)
in batches of at most 100, waits for the results and writes one row per input row, in order.

* Columns are matched to lead fields by name (email, name, company, domain, linkedin_url and
  common variants such as "E-mail", "Company name", "Website", "LinkedIn"); other columns are
  kept as they are.
* Each batch carries an Idempotency-Key derived from the file's content and the batch's
  place in it, so running the same file again resumes: batches already sent are answered as
  before (no lead is charged twice), the rest are sent.
* A 429 is waited out (Retry-After); a 402 (the workspace's hard cap) stops the run cleanly:
  what was sent is waited for and written, the rest is marked `not_submitted`.
* Progress: a bar on a terminal, plain lines otherwise. Exit 0 when done, 1 when stopped by
  the hard cap or the API, 2 for a bad file or arguments.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import sys
import time
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
IDENTIFIERS = ("email", "linkedin_url", "domain")


class Stop(Exception):
    """End the run with a message and an exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _key(header: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in header.strip().lower()).strip("_")


def read_csv(path: str) -> tuple[bytes, list[str], list[dict], dict[str, str]]:
    """(raw bytes, header, rows, lead field → column)."""
    try:
        raw = open(path, "rb").read()  # noqa: SIM115
    except OSError as exc:
        raise Stop(f"{path}: {exc.strerror}", 2) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Stop(f"{path} is not UTF-8 text: save it as CSV UTF-8 and try again", 2) from None
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    mapping = {}
    for column in header:
        for lead_field, names in ALIASES.items():
            if _key(column) in names and lead_field not in mapping:
                mapping[lead_field] = column
    if not any(f in mapping for f in IDENTIFIERS):
        raise Stop(f"{path} has no identifier column: add an email, linkedin_url or domain "
                   f"column (found: {', '.join(header) or 'no header'})", 2)
    return raw, header, list(reader), mapping


@dataclass
class Progress:
    total: int
    submitted: int = 0
    done: int = 0
    failed: int = 0
    bar: tqdm | None = None
    last_line: float = 0.0
    lines: bool = field(default=False)

    def __post_init__(self):
        if sys.stderr.isatty():
            self.bar = tqdm(total=self.total, unit="lead", dynamic_ncols=True)
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
            print(f"submitted {self.submitted}/{self.total}  done {self.done}  "
                  f"failed {self.failed}", file=sys.stderr, flush=True)

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
                time.sleep(float(resp.headers.get("Retry-After") or min(30, 2 ** attempt)))
                continue
            if resp.status_code == 401:
                raise Stop("the API key was refused (401): check ENRICHMENT_API_KEY", 1)
            remaining = resp.headers.get("X-RateLimit-Remaining")
            if method == "GET" and remaining is not None and int(remaining) < 2:
                time.sleep(max(0.0, float(resp.headers.get("X-RateLimit-Reset", 0))
                               - time.time()))
            return resp
        raise Stop(f"{method} {path} kept failing (last: HTTP {resp.status_code})", 1)


def leads_of(rows: list[dict], mapping: dict[str, str]) -> list[dict]:
    return [{f: row[c].strip() for f, c in mapping.items() if (row.get(c) or "").strip()}
            for row in rows]


def enrich(args) -> int:
    raw, header, rows, mapping = read_csv(args.file)
    url = args.api_url or os.environ.get("ENRICHMENT_API_URL")
    key = args.api_key or os.environ.get("ENRICHMENT_API_KEY")
    if not url or not key:
        raise Stop("set ENRICHMENT_API_URL and ENRICHMENT_API_KEY (or --api-url/--api-key)", 2)
    api, leads = Api(url, key), leads_of(rows, mapping)
    digest = hashlib.sha256(raw + f"|{args.template}|{args.max_age_days}".encode()).hexdigest()
    outcome: list[dict] = [{} for _ in rows]  # per row: job or problem
    batches: list[str] = []
    progress = Progress(len(rows))
    stopped = None
    try:
        for start in range(0, len(leads), BATCH):
            resp = api.call("POST", "/api/v1/enrichment/batch", json={
                "template": args.template, "leads": leads[start:start + BATCH],
                "max_age_days": args.max_age_days},
                headers={"Idempotency-Key": f"csv-{digest[:32]}-{start // BATCH}"})
            if resp.status_code == 402:
                stopped = resp.json().get("detail", "the workspace's hard cap is reached")
                break
            if resp.status_code != 207:
                raise Stop(f"batch {start // BATCH + 1}: HTTP {resp.status_code}: "
                           f"{resp.json().get('detail', resp.text[:200])}", 1)
            body = resp.json()
            batches.append(body["batch_id"])
            for entry in body["results"]:
                outcome[start + entry["index"]] = entry
                if entry["status"] == 402 and stopped is None:
                    stopped = entry["problem"].get("detail", "hard cap reached")
            progress.update(submitted=min(len(rows), start + BATCH))
            if stopped:
                break
        wait(api, outcome, progress)
    finally:
        progress.close()
    write(args.out or _out_name(args.file), header, rows, outcome)
    failed = sum(1 for o in outcome if _status(o) not in ("succeeded",))
    print(f"{len(rows)} rows written to {args.out or _out_name(args.file)}: "
          f"{len(rows) - failed} succeeded, {failed} not", file=sys.stderr)
    if stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        return 1
    return 0


def wait(api: Api, outcome: list[dict], progress: Progress) -> None:
    """Poll each unfinished job's batch through the list endpoint until every job ended."""
    while True:
        pending: dict[str, list[int]] = {}
        for i, entry in enumerate(outcome):
            job = entry.get("job")
            if job and job["status"] not in TERMINAL:
                pending.setdefault(job["batch_id"] or "", []).append(i)
        done = sum(1 for e in outcome if _status(e) in (*TERMINAL, "rejected", ""))
        failed = sum(1 for e in outcome if _status(e) in ("failed", "dead", "rejected"))
        progress.update(done=done, failed=failed)
        if not pending:
            return
        time.sleep(1.0)
        by_id = {}
        for batch_id, _ in pending.items():
            query: dict = {"limit": 100}
            if batch_id:
                query["batch_id"] = batch_id
            cursor = None
            while True:
                page = api.call("GET", "/api/v1/enrichment",
                                params=query | ({"starting_after": cursor} if cursor else {}))
                data = page.json()
                by_id |= {j["job_id"]: j for j in data["data"]}
                if not data["has_more"]:
                    break
                cursor = data["data"][-1]["job_id"]
        for indexes in pending.values():
            for i in indexes:
                job_id = outcome[i]["job"]["job_id"]
                if job_id in by_id:
                    outcome[i]["job"] = by_id[job_id]
                else:  # a repeat of another batch's job: read it on its own
                    resp = api.call("GET", f"/api/v1/enrichment/{job_id}")
                    if resp.status_code == 200:
                        outcome[i]["job"] = resp.json()
                    else:  # erased meanwhile
                        outcome[i] = {"status": 404, "problem": {"detail": "job not found"}}


def _status(entry: dict) -> str:
    if "job" in entry:
        return entry["job"]["status"]
    if "problem" in entry:
        return "not_submitted" if entry.get("status") == 402 else "rejected"
    return "not_submitted" if entry == {} else ""


def _out_name(path: str) -> str:
    base, _, _ = path.rpartition(".csv")
    return f"{base or path}.enriched.csv"


def write(path: str, header: list[str], rows: list[dict], outcome: list[dict]) -> None:
    fields = sorted({k for o in outcome if "job" in o and o["job"].get("result")
                     for k in o["job"]["result"]["fields"]})
    extra = ["status", "match", "job_id", "error", *fields, "citations"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow([*header, *extra])
        for row, entry in zip(rows, outcome, strict=True):
            job = entry.get("job") or {}
            result = job.get("result") or {}
            found = result.get("fields") or {}
            error = job.get("error") or (entry.get("problem") or {}).get("detail") or ""
            match = "" if job.get("match") is None else str(job["match"]).lower()
            out.writerow([*(row.get(c, "") for c in header), _status(entry), match,
                          job.get("job_id", ""), error, *(found.get(f) or "" for f in fields),
                          " | ".join(result.get("citations") or [])])


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
