"""The billing jobs, one function each, called alike by the beat tasks (workers/tasks.py) and
the `enrichment billing …` commands, with the same services — so a report run by hand reaches
PostHog and a reconciliation run by hand sets the alert state, as the nightly ones do."""

from __future__ import annotations

import logging
from datetime import UTC, date, timedelta
from typing import TYPE_CHECKING

import psycopg
from psycopg.rows import dict_row

from ..alerts import DISCREPANCIES_KEY
from . import accounts, prices, reconcile, report

if TYPE_CHECKING:
    from ..config import Settings
    from ..services import Services

log = logging.getLogger(__name__)


def check_prices(settings: Settings) -> None:
    """The start-up check of the API and the workers (`prices.check`): SystemExit, naming
    the command to run, while the plans file changes a recorded price in place. A database
    that cannot be asked (down, or not migrated yet) does not stop a start — the API then
    answers 503 from /readyz — and is logged."""
    try:
        with psycopg.connect(settings.database_url, row_factory=dict_row, autocommit=True,
                             connect_timeout=5) as conn:
            prices.check(conn, settings.plans)
    except prices.PricesChanged as exc:
        raise SystemExit(f"refusing to start: {exc}") from None
    except psycopg.Error as exc:
        log.warning("prices not checked at start-up (database: %s)", exc)


def yesterday(svc: Services) -> date:
    return svc.clock().astimezone(UTC).date() - timedelta(days=1)


def report_overage(svc: Services, through: date | None = None, force: bool = False) -> dict:
    """Freeze closed days up to `through` (default yesterday) and send what is due; `force`
    (by hand) sends every unsent report that may still go through, whatever its backoff."""
    return report.report(svc.db, svc.settings.plans, svc.billing, svc.events,
                         through or yesterday(svc), svc.clock(), force)


def send_due(svc: Services) -> dict:
    """Hourly: the reports whose retry is due (an answer lost last night goes again within
    the hour, well inside Stripe's 24 h identifier deduplication)."""
    return report.send_pending(svc.db, svc.billing, svc.events, svc.clock())


def reconcile_billing(svc: Services, through: date | None = None) -> dict:
    """Discrepancies (they set the billing-accuracy alert's state) and the reports Stripe did
    not take (their own alert, `billing_unsent`, reads the table every minute)."""
    with svc.db.connection() as conn:
        problems = reconcile.reconcile(conn, svc.settings.plans, svc.billing,
                                       through or yesterday(svc), svc.clock())
        unsent = reconcile.unsent_reports(conn)
    for problem in problems:
        log.error("billing discrepancy: %s", problem)
    for row in unsent:
        log.error("overage report not taken by Stripe: %s", row)
    svc.redis.set(DISCREPANCIES_KEY, len(problems))
    return {"discrepancies": problems, "unsent": unsent}


def sync_accounts(svc: Services) -> dict:
    """Attach workspaces that have no Stripe customer yet; move subscriptions to their plan."""
    with svc.db.connection() as conn:
        return accounts.sync(conn, svc.billing, svc.clock())


def settle_expired(svc: Services) -> list[dict]:
    return report.settle_expired(svc.db, svc.billing)


