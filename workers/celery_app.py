"""The Celery app. Queues are declared here, in one table: the tier queues from the plans
file (heaviest first) and `maintenance` for beat jobs.

Nothing is read from the environment at import: `app` takes its configuration from
`celery_config(settings())` the first time Celery needs it (a worker, beat or a publish), so
importing this module (tests, `--help`) never fails on configuration.
"""

from __future__ import annotations

import sys
from functools import cache

from celery import Celery
from celery.signals import celeryd_init, setup_logging
from kombu import Exchange, Queue

from beat_schedule import SCHEDULE
from enrichment import logs
from enrichment.config import Settings

from .scheduling import StrideCycle

MAINTENANCE_QUEUE = "maintenance"
WEBHOOKS_QUEUE = "webhooks"  # consumed by its own workers (a slow receiver holds up nothing)


@cache
def settings() -> Settings:
    """This process's settings, read once from the environment. A bad one ends the process
    with one line (EX_CONFIG), not a traceback."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        print(f"configuration: {exc}", file=sys.stderr)
        sys.exit(78)


def celery_config(settings: Settings) -> dict:
    queues = [MAINTENANCE_QUEUE, *settings.plans.queues]
    redis_broker = settings.broker_url.startswith(("redis://", "rediss://"))
    return {
        "broker_url": settings.broker_url,
        # kombu's Redis transport, publishing through one client (workers/transport.py).
        **({"broker_transport": "workers.transport:Transport"} if redis_broker else {}),
        "broker_connection_retry_on_startup": True,
        # Short socket timeouts so a frozen Redis fails fast instead of hanging the API.
        "broker_transport_options": {
            "queue_order_strategy": "workers.celery_app:TierCycle",
            "visibility_timeout": 3600,  # above the longest job (lease + time limits)
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
            "socket_keepalive": True,
            # Exchanges whose bindings never change: their routing tables are read once.
            "fixed_exchanges": [*queues, WEBHOOKS_QUEUE],
        },
        "task_publish_retry_policy": {
            "max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
        },
        # Each queue its own direct exchange and routing key: a message goes to exactly one
        # queue.
        "task_queues": [Queue(name, Exchange(name, type="direct"), routing_key=name)
                        for name in queues],
        "task_default_exchange": MAINTENANCE_QUEUE,
        "task_default_routing_key": MAINTENANCE_QUEUE,
        "task_default_queue": MAINTENANCE_QUEUE,
        # Redelivered if a worker dies mid-job; one message fetched per free slot, so the tier
        # order decides every fetch. No message priorities: they would override the weighting.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # WORKER_CONCURRENCY; a `-c` on the command line wins (the image's roles pass one).
        "worker_concurrency": settings.worker_concurrency,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": SCHEDULE,
        # No task events unless someone watches: they cost a worker ~10 % of its jobs/s
        # (bench/PROFILES.md). Flower turns them on while it runs (its --enable_events).
        "worker_send_task_events": False,
        "tier_weights": dict(settings.plans.queue_weights),  # ours: read by TierCycle
    }


def make_app() -> Celery:
    celery = Celery("enrichment", include=["workers.tasks"])
    celery.add_defaults(lambda: celery_config(settings()))  # evaluated on first use
    return celery


app = make_app()


def tier_queues() -> list[str]:
    """The tier queues, heaviest first (the order every worker consumes them in)."""
    weights = app.conf.tier_weights
    return sorted(weights, key=lambda q: -weights[q])


class TierCycle(StrideCycle):
    """The order in which a worker takes its next message: stride scheduling by the plans'
    tier weights (kombu instantiates this class by name)."""

    def __init__(self, it=None):
        self.weights = dict(app.conf.tier_weights)
        super().__init__(it)


@celeryd_init.connect  # a worker's first lines (e.g. the superuser warning) come before
@setup_logging.connect  # Celery leaves logging alone when this signal has a receiver
def _logging(**_):
    """Workers and beat log as LOG_LEVEL and LOG_FORMAT say."""
    logs.configure(settings().log_level, settings().log_format)
