"""Weighted, work-conserving queue order for the kombu Redis transport (elite:pro:core = 3:2:1).

kombu's Redis channel asks its `queue_order_strategy` for the order of the keys it sends to
BRPOP (`consume`), and BRPOP pops from the first non-empty key; then kombu calls `rotate` with
the queue the message came from. Prefetch ratios and dedicated workers cannot give weighted
shares on this transport; ordering the BRPOP keys can.

`StrideCycle` is stride scheduling: each queue has a *pass*; the order is by lowest pass (ties:
higher weight first), and a queue that delivers advances its pass by its stride (1/weight). So
under saturation elite, pro and core deliver 3:2:1. It is work-conserving because BRPOP skips
empty keys: an idle tier's share goes to the others. An idle tier must not bank credit and
burst later: every queue ordered before the one that delivered was empty, so its pass is
raised to the deliverer's — it re-enters at the current virtual time, not with a backlog of
credit. Queues without a weight (e.g. `maintenance`) get the top weight.

Depends on kombu's channel calling update/consume/rotate as in kombu 5.5-5.7 (pinned in
setup.cfg; tests/test_scheduling.py checks the order through a real worker).
"""

from __future__ import annotations

from fractions import Fraction


class StrideCycle:
    weights: dict[str, int] = {}  # set by the subclass the Celery app configures

    def __init__(self, it=None):
        self.items: list[str] = []
        self.passes: dict[str, Fraction] = {}
        if it is not None:
            self.update(it)

    def weight(self, queue: str) -> int:
        return self.weights.get(queue, max(self.weights.values(), default=1))

    def update(self, it) -> None:
        """The consumed queues changed (kombu passes the full list)."""
        self.items[:] = list(it)
        floor = min(self.passes.values(), default=Fraction(0))
        self.passes = {q: self.passes.get(q, floor) for q in self.items}

    def consume(self, n: int) -> list[str]:
        """The BRPOP key order: lowest pass first, heavier first on ties."""
        order = sorted(self.items, key=lambda q: (self.passes[q], -self.weight(q)))
        return order[:n]

    def rotate(self, last_used: str) -> str:
        if last_used not in self.passes:
            return last_used
        current = self.passes[last_used]
        for queue in self.consume(len(self.items)):
            if queue == last_used:
                break
            self.passes[queue] = max(self.passes[queue], current)  # was empty: no banking
        self.passes[last_used] = current + Fraction(1, self.weight(last_used))
        # Keep the numbers small; only differences matter.
        low = min(self.passes.values())
        self.passes = {q: p - low for q, p in self.passes.items()}
        return last_used

    def close(self) -> None:
        pass


def weighted_cycle(weights: dict[str, int]) -> type[StrideCycle]:
    """A StrideCycle class bound to these weights (kombu instantiates it without arguments)."""
    return type("TierStrideCycle", (StrideCycle,), {"weights": dict(weights)})
