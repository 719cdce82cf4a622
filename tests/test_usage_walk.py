"""The usage walk (`enrichment/billing/usage.py::walk`), the money rule every bill rests on,
as a table: a period's daily units, its plan segments and its credit ledger rows in, each
day's overage units and where the walk ends out. No database.

Every expected value is worked out by hand from the module docstring's rule:

* a day is billed under the segment (plan) in force on it; the period's first segment grants
  its plan's full `included`, a later one `included * days left in the period // days in the
  period`, and what the earlier segment left is not carried;
* credits (net of refunds) count from the end of the day they were paid: a day's units —
  billed at the end of that day — may use every credit paid before the next midnight, no
  earlier day may; they carry across segments;
* a day's units use the segment's included units first, then credits; the rest is overage,
  at the price of the plan in force that day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from itertools import accumulate

import pytest

from enrichment.billing.usage import Segment, WalkEnd, walk
from enrichment.config import Plan

SMALL = Plan("small", "core", 1.0, 60, included=100, overage_usd=Decimal("0.10"))
BIG = Plan("big", "pro", 2.0, 120, included=300, overage_usd=Decimal("0.05"))
K = Plan("k", "elite", 3.0, 200, included=1000, overage_usd=Decimal("0.04"))

JUNE = date(2027, 6, 1)  # 30 days


def d(n: int, period: date = JUNE) -> date:
    return period.replace(day=n)


def at(n: int, hh: int = 12, mm: int = 0, period: date = JUNE) -> datetime:
    return datetime.combine(d(n, period), time(hh, mm), UTC)


LAST_MICROSECOND = time(23, 59, 59, 999_999)


def midnight_before(n: int, period: date = JUNE) -> datetime:
    return datetime.combine(d(n, period), time.min, UTC)


@dataclass
class Case:
    id: str
    daily: list[tuple[int, int]]  # (day of the month, units)
    segments: list[tuple[int, Plan]]  # (first day, plan)
    paid: list[tuple[datetime, int]]  # credit ledger rows: (paid at, units; < 0 a refund)
    overage: list[int]  # expected overage units, one per day of `daily`
    end: WalkEnd  # expected
    plans: list[str] = field(default_factory=list)  # expected plan per day (when given)
    period: date = JUNE


CASES = [
    # --- one plan ----------------------------------------------------------------------------
    Case("one plan, under included",
         [(1, 40), (2, 50)], [(1, SMALL)], [],
         [0, 0], WalkEnd(included_left=10, used=90)),
    Case("one plan, exactly included",
         [(1, 60), (2, 40)], [(1, SMALL)], [],
         [0, 0], WalkEnd(included_left=0, used=100)),
    Case("one plan, over included: the day that crosses pays only its excess",
         # 60 (40 left) | 70: 40 included, 30 over | 5 over
         [(1, 60), (2, 70), (3, 5)], [(1, SMALL)], [],
         [0, 30, 5], WalkEnd(included_left=0, used=135)),
    Case("zero-usage days change nothing",
         [(1, 0), (5, 100), (6, 0), (7, 1), (30, 0)], [(1, SMALL)], [],
         [0, 0, 0, 1, 0], WalkEnd(included_left=0, used=101)),
    Case("a workspace created mid-month gets the full included (first segment)",
         [(20, 100), (21, 1)], [(20, SMALL)], [],
         [0, 1], WalkEnd(included_left=0, used=101)),

    # --- credits ---------------------------------------------------------------------------
    Case("credits bought mid-period cover their own day and later, never an earlier day",
         # 100 (0 left) | 30 over, nothing paid yet | 50 paid at 15:00: 30 from credits |
         # 20 credits left: 20 from credits, 10 over
         [(1, 100), (2, 30), (3, 30), (4, 30)], [(1, SMALL)], [(at(3, 15), 50)],
         [0, 30, 0, 10], WalkEnd(included_left=0, credits_bought=50, credits_used=50,
                                 used=190)),
    Case("credits paid at midnight belong to the day that starts then",
         # paid 00:00 on the 3rd: not for the 2nd (30 over); the 3rd takes 30 of them
         [(1, 100), (2, 30), (3, 30)], [(1, SMALL)], [(midnight_before(3), 50)],
         [0, 30, 0], WalkEnd(included_left=0, credits_bought=50, credits_used=30, used=160)),
    Case("credits paid in a day's last microsecond cover that day",
         # 2nd: 30 from credits | 3rd: 20 from credits, 10 over
         [(1, 100), (2, 30), (3, 30)], [(1, SMALL)],
         [(datetime.combine(d(2), LAST_MICROSECOND, UTC), 50)],
         [0, 0, 10], WalkEnd(included_left=0, credits_bought=50, credits_used=50, used=160)),
    Case("credits paid before the included units run out wait for them",
         # 80 included (20 left) | 20 included, then 20 from credits
         [(1, 80), (2, 40)], [(1, SMALL)], [(at(1, 9), 30)],
         [0, 0], WalkEnd(included_left=0, credits_bought=30, credits_used=20, used=120)),
    Case("two packs the same day add up",
         [(1, 100), (2, 70)], [(1, SMALL)], [(at(2, 8), 25), (at(2, 20), 25)],
         [0, 20], WalkEnd(included_left=0, credits_bought=50, credits_used=50, used=170)),
    Case("credits on a day nothing is used are still there later",
         [(1, 100), (5, 40)], [(1, SMALL)], [(at(3), 50)],
         [0, 0], WalkEnd(included_left=0, credits_bought=50, credits_used=40, used=140)),

    # --- refunds (negative credit rows) ----------------------------------------------------
    Case("a refund of the free credits leaves none: the rest is overage",
         # 1st: 50 paid, none used | 2nd: 20 from credits | 3rd: -30 refunded: 50-30 = 20
         # bought, 20 used: nothing left, 20 over | 4th: 20 over
         [(1, 100), (2, 20), (3, 20), (4, 20)], [(1, SMALL)], [(at(1, 10), 50), (at(3, 12), -30)],
         [0, 0, 20, 20], WalkEnd(included_left=0, credits_bought=20, credits_used=20,
                                 used=160)),
    Case("a partial refund leaves the rest of the pack usable",
         # 2nd: 20 from credits | 3rd: -10: 40 bought, 20 used: 20 from credits |
         # 4th: 40 bought, 40 used: 30 over
         [(1, 100), (2, 20), (3, 20), (4, 30)], [(1, SMALL)], [(at(1, 10), 50), (at(3, 12), -10)],
         [0, 0, 0, 30], WalkEnd(included_left=0, credits_bought=40, credits_used=40,
                                used=170)),
    Case("a refund the same day as its purchase nets out before the day is billed",
         [(1, 100), (2, 30)], [(1, SMALL)], [(at(2, 9), 50), (at(2, 18), -50)],
         [0, 30], WalkEnd(included_left=0, credits_bought=0, credits_used=0, used=130)),
    Case("a refund after every credit was used takes nothing back from past days",
         # 2nd: 50 from credits | 3rd: -50: bought 0 < used 50, nothing available: 10 over
         [(1, 100), (2, 50), (3, 10)], [(1, SMALL)], [(at(1), 50), (at(3), -50)],
         [0, 0, 10], WalkEnd(included_left=0, credits_bought=0, credits_used=50, used=160)),

    # --- plan changes (June: 30 days) --------------------------------------------------------
    Case("upgrade on the 16th: prorated grant, each day at its own plan's price",
         # small: 90 (10 left) | 15th: 10 included, 10 over at small's price |
         # 16th big: 300 * 15 days left // 30 = 150; 100 (50 left) | 30th: 50 incl., 10 over
         [(1, 90), (15, 20), (16, 100), (30, 60)], [(1, SMALL), (16, BIG)], [],
         [0, 10, 0, 10], WalkEnd(included_left=0, used=270),
         plans=["small", "small", "big", "big"]),
    Case("upgrade: what the earlier plan left is not carried over",
         # small: 40 (60 left, lost) | big: 150, not 210: 160 - 150 = 10 over
         [(1, 40), (16, 160)], [(1, SMALL), (16, BIG)], [],
         [0, 10], WalkEnd(included_left=0, used=200), plans=["small", "big"]),
    Case("upgrade: the new plan's grant is what is left after the change",
         [(1, 40), (16, 100)], [(1, SMALL), (16, BIG)], [],
         [0, 0], WalkEnd(included_left=50, used=140), plans=["small", "big"]),
    Case("downgrade on the 11th: units the old plan included are not billed",
         # big: 250 of 300 | small: 100 * 20 days left // 30 = 66 (66.7 rounded down):
         # 70 - 66 = 4 over at small's price
         [(1, 250), (11, 70)], [(1, BIG), (11, SMALL)], [],
         [0, 4], WalkEnd(included_left=0, used=320), plans=["big", "small"]),
    Case("the day of the change is billed under the new plan, all of it",
         # big from the 11th: 300 * 20 // 30 = 200; small left 100 unused and lost
         [(10, 0), (11, 250)], [(1, SMALL), (11, BIG)], [],
         [0, 50], WalkEnd(included_left=0, used=250), plans=["small", "big"]),
    Case("credits carry across a plan change",
         # small 100 (0 left) | 10 from credits (10 of 20 left) | big: 150 included,
         # then 10 from credits: no overage
         [(1, 100), (2, 10), (16, 160)], [(1, SMALL), (16, BIG)], [(at(1), 20)],
         [0, 0, 0], WalkEnd(included_left=0, credits_bought=20, credits_used=20, used=270),
         plans=["small", "small", "big"]),
    Case("small, big, small again: each later segment its own prorated grant",
         # 1st: 100 (0 left) | big from the 11th: no usage | small from the 21st:
         # 100 * 10 // 30 = 33; 40 - 33 = 7 over
         [(1, 100), (21, 40)], [(1, SMALL), (11, BIG), (21, SMALL)], [],
         [0, 7], WalkEnd(included_left=0, used=140), plans=["small", "small"]),
    Case("no usage before the change: the later segment is still prorated, not first",
         # k from the 16th: 1000 * 15 // 30 = 500
         [(16, 600)], [(1, SMALL), (16, K)], [],
         [100], WalkEnd(included_left=0, used=600), plans=["k"]),

    # --- proration by the period's length: the change on the 15th, 1000 used that day ----
    Case("28-day period (Feb 2027): 1000 * 14 // 28 = 500",
         [(15, 1000)], [(1, SMALL), (15, K)], [],
         [500], WalkEnd(included_left=0, used=1000), period=date(2027, 2, 1)),
    Case("29-day period (Feb 2028, leap): 1000 * 15 // 29 = 517",
         [(15, 1000)], [(1, SMALL), (15, K)], [],
         [483], WalkEnd(included_left=0, used=1000), period=date(2028, 2, 1)),
    Case("30-day period (Apr 2027): 1000 * 16 // 30 = 533",
         [(15, 1000)], [(1, SMALL), (15, K)], [],
         [467], WalkEnd(included_left=0, used=1000), period=date(2027, 4, 1)),
    Case("31-day period (Jan 2027): 1000 * 17 // 31 = 548",
         [(15, 1000)], [(1, SMALL), (15, K)], [],
         [452], WalkEnd(included_left=0, used=1000), period=date(2027, 1, 1)),
    Case("31-day period ending the year (Dec 2027): 1000 * 17 // 31 = 548",
         [(15, 1000)], [(1, SMALL), (15, K)], [],
         [452], WalkEnd(included_left=0, used=1000), period=date(2027, 12, 1)),
    Case("leap day itself: a change on Feb 29 2028 grants 1000 * 1 // 29 = 34",
         [(28, 0), (29, 100)], [(1, SMALL), (29, K)], [],
         [0, 66], WalkEnd(included_left=0, used=100), period=date(2028, 2, 1)),
    Case("a change on Feb 2 2028 grants 1000 * 28 // 29 = 965",
         [(2, 1000)], [(1, SMALL), (2, K)], [],
         [35], WalkEnd(included_left=0, used=1000), period=date(2028, 2, 1)),
    Case("Feb 2028, credits paid on the 29th cover the 29th",
         # k from the 15th: 517; 28th: 517 (0 left) | 29th: 40 paid, 30 from credits
         [(15, 517), (29, 30)], [(1, SMALL), (15, K)], [(at(29, 18, period=date(2028, 2, 1)), 40)],
         [0, 0], WalkEnd(included_left=0, credits_bought=40, credits_used=30, used=547),
         period=date(2028, 2, 1)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_walk(case: Case):
    daily = [(d(n, case.period), units) for n, units in case.daily]
    segments = [Segment(d(n, case.period), plan) for n, plan in case.segments]
    reports, end = walk("ws", case.period, daily, segments, case.paid)
    assert [r.units for r in reports] == case.overage
    assert end == case.end
    assert [r.day for r in reports] == [day for day, _ in daily]
    assert [r.used_to_date for r in reports] == list(accumulate(u for _, u in case.daily))
    assert [r.overage_to_date for r in reports] == list(accumulate(case.overage))
    if case.plans:
        assert [r.plan for r in reports] == case.plans
        prices = {p.name: p.overage_usd for p in (SMALL, BIG, K)}
        assert [r.unit_price_usd for r in reports] == [prices[p] for p in case.plans]


def test_an_empty_period_reports_nothing():
    assert walk("ws", JUNE, [], [Segment(JUNE, SMALL)], []) == ([], WalkEnd())


def test_allowance_is_the_included_units_granted_so_far_plus_credits_paid_by_the_day_end():
    daily = [(d(1), 100), (d(2), 30), (d(3), 30), (d(16), 10)]
    reports, _ = walk("ws", JUNE, daily, [Segment(d(1), SMALL), Segment(d(16), BIG)],
                      [(at(3, 15), 50)])
    # 100 | 100 | 100 + 50 paid on the 3rd | + big's 150 from the 16th
    assert [r.allowance for r in reports] == [100, 100, 150, 300]


def test_days_before_the_first_segment_count_under_it():
    reports, end = walk("ws", JUNE, [(d(1), 120)], [Segment(d(5), SMALL)], [])
    assert [r.units for r in reports] == [20] and [r.plan for r in reports] == ["small"]
    assert end == WalkEnd(included_left=0, used=120)


def test_the_walk_ends_in_the_segment_of_the_last_day_walked():
    """WalkEnd.included_left is the position after the last day *walked*: a plan change with
    no usage since leaves it in the old segment, and a zero-usage day at the date asked about
    moves it into the segment in force then (what `credit_position` needs after a change)."""
    segments = [Segment(d(1), SMALL), Segment(d(16), BIG)]
    _, end = walk("ws", JUNE, [(d(1), 40)], segments, [])
    assert end.included_left == 60  # small's leftover: the 16th was never walked
    _, end = walk("ws", JUNE, [(d(1), 40), (d(20), 0)], segments, [])
    assert end.included_left == 150  # big's grant from the 16th: 300 * 15 // 30
    _, end = walk("ws", JUNE, [(d(20), 0)], segments, [])
    assert end.included_left == 150  # no usage at all: still the grant in force
