"""Billing periods: calendar months, UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, time


def day_start(d: date) -> datetime:
    """00:00 UTC of a day."""
    return datetime.combine(d, time.min, UTC)


def period_start(now: datetime) -> date:
    """First day of the billing period (calendar month, UTC) containing `now`."""
    return now.astimezone(UTC).date().replace(day=1)


def next_period_start(period: date) -> date:
    return date(period.year + period.month // 12, period.month % 12 + 1, 1)
