"""Small helpers shared by tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime


def eventually(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> None:
    """Poll `predicate` until it is true; fail the test if it is not within `timeout` seconds.
    A bound on waiting, never a timing assertion on the code under test."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def at(svc, when: datetime):
    """The services with their clock stopped at `when` (a test's instant, from the services'
    clock, or one it moves on): code under test and assertions then read one instant."""
    return replace(svc, clock=lambda: when)
