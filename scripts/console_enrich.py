"""Enrich a generated list through the console, over HTTP, as a browser would: sign in with a
key, upload a CSV, Start, wait for the end, download the results and check them (count and
order). A smoke test for a running stack (`make run`):

    .venv/bin/python scripts/console_enrich.py --key lek_… [--rows 1000]
        [--template person_social] [--url http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import time

import requests


def token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--template", default="person_social")
    args = parser.parse_args(argv)
    base, s = f"{args.url.rstrip('/')}/console", requests.Session()
    page = s.get(f"{base}/sign-in", timeout=10).text
    if "Overview" not in s.post(f"{base}/sign-in", timeout=10, data={
            "api_key": args.key, "csrf_token": token(page)}).text:
        print("sign-in refused", file=sys.stderr)
        return 1
    rows = "email,name,company,note\n" + "".join(
        f"p{i}@example{i % 37}.com,Person {i},Company {i % 37},row {i}\n"
        for i in range(args.rows))
    page = s.get(f"{base}/enrich", timeout=10).text
    mapped = s.post(f"{base}/enrich", timeout=60, data={
        "csrf_token": token(page), "template": args.template},
        files={"csv_file": ("list.csv", rows.encode(), "text/csv")})
    upload = mapped.url.rsplit("/", 1)[1]
    started = time.monotonic()
    s.post(f"{base}/enrich/{upload}/start", timeout=10, data={"csrf_token": token(mapped.text)})
    while not (progress := s.get(f"{base}/enrich/{upload}/progress.json", timeout=10).json()
               )["finished"]:
        time.sleep(2)
    elapsed = time.monotonic() - started
    out = list(csv.reader(io.StringIO(s.get(f"{base}/enrich/{upload}/results.csv",
                                            timeout=60).text)))
    in_order = [r[3] for r in out[1:]] == [f"row {i}" for i in range(args.rows)]
    print(f"{args.rows} rows ({args.template}) in {elapsed:.0f} s: {progress['counts']}; "
          f"results {len(out) - 1} rows, columns {out[0]}, in input order: {in_order}")
    return 0 if in_order and len(out) - 1 == args.rows else 1


if __name__ == "__main__":
    sys.exit(main())
