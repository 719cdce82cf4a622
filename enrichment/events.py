"""Product events (DESIGN §9) behind one interface. Properties never carry a lead's personal
data: ids, plan, template and figures only."""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("enrichment.events")

EVENTS = frozenset({
    "enrichment_requested",
    "enrichment_succeeded",
    "enrichment_throttled",
    "enrichment_overage_billed",
    "enrichment_quality_issue",
    "credit_pack_purchased",
    "api_error",
})


class Events(Protocol):
    def capture(self, event: str, workspace_id: str, properties: dict) -> None: ...

    def flush(self) -> None: ...


class LogEvents:
    """The null sink: events go to the log only (no POSTHOG_API_KEY)."""

    def capture(self, event: str, workspace_id: str, properties: dict) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}")
        log.info("event %s workspace=%s %s", event, workspace_id, properties)

    def flush(self) -> None:
        pass
