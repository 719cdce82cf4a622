"""Screenshots of every console page for the docs (docs/console/*.png).

The pictures are taken by a test (tests/test_console_browser.py::test_screenshots), so they
come from the same stack the browser tests check — a fresh test database, the real worker,
test mode's simulators — and never from anyone's real workspace. This only runs that test with
its switch on.

    .venv/bin/python scripts/console_screenshots.py            # into docs/console/
    .venv/bin/python scripts/console_screenshots.py /tmp/shots # elsewhere, to look first

Needs PostgreSQL, Redis, chromium and chromedriver, as `make test` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    env = {**os.environ, "CONSOLE_SCREENSHOTS": "1"}
    if argv:
        env["CONSOLE_SCREENSHOTS_DIR"] = str(Path(argv[0]).resolve())
    where = env.get("CONSOLE_SCREENSHOTS_DIR") or ROOT / "docs" / "console"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_console_browser.py::test_screenshots",
         "-p", "no:cacheprovider", "-q"], cwd=ROOT, env=env, check=False)
    if done.returncode == 0:
        print(f"screenshots in {where}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
