"""Product events (docs/operations.md#events) behind one interface. Properties never carry a
lead's personal data: ids, plan, template and figures only."""

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
    "credit_pack_reversed",  # a refund or lost dispute took unused credit back
    "api_error",
    "enrichment_alert",  # an alert rule fired or resolved (distinct_id "system")
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


class PostHogEvents:
    """Events through the `posthog` SDK: captured into its background queue, so sending never
    blocks or fails a request or a job; flushed at shutdown."""

    def __init__(self, api_key: str, host: str | None = None):
        import posthog

        self.client = posthog.Posthog(api_key, host=host, capture_mode="v0", sync_mode=False,
                                      max_retries=3, timeout=5)

    def capture(self, event: str, workspace_id: str, properties: dict) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}")
        try:
            self.client.capture(event, distinct_id=workspace_id, properties=properties)
        except Exception:  # analytics must never break the product
            log.exception("event %s not queued", event)

    def flush(self) -> None:
        self.client.flush()


def build_events(api_key: str | None, host: str | None) -> Events:
    return PostHogEvents(api_key, host) if api_key else LogEvents()
