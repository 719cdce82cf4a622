"""The Celery app. Queues are declared here, in one table: the tier queues from the plans
file (heaviest first) and `maintenance` for beat jobs."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from beat_schedule import SCHEDULE
from enrichment.config import Settings

from .scheduling import weighted_cycle

settings = Settings.from_env()

MAINTENANCE_QUEUE = "maintenance"
TIER_QUEUES = settings.plans.queues  # e.g. ["elite", "pro", "core"]
QUEUES = [MAINTENANCE_QUEUE, *TIER_QUEUES]
# The order in which a worker takes its next message: stride scheduling by tier weight.
TierCycle = weighted_cycle(settings.plans.queue_weights)

app = Celery("enrichment", include=["workers.tasks"])
app.conf.update(
    broker_url=settings.broker_url,
    broker_connection_retry_on_startup=True,
    # Short socket timeouts so a frozen Redis fails fast instead of hanging the API.
    broker_transport_options={
        "queue_order_strategy": "workers.celery_app:TierCycle",
        "visibility_timeout": 3600,  # above the longest job (lease + time limits)
        "socket_timeout": 5,
        "socket_connect_timeout": 3,
        "socket_keepalive": True,
    },
    task_publish_retry_policy={
        "max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
    },
    # Each queue its own direct exchange and routing key: a message goes to exactly one queue.
    task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
    task_default_exchange=MAINTENANCE_QUEUE,
    task_default_routing_key=MAINTENANCE_QUEUE,
    task_default_queue=MAINTENANCE_QUEUE,
    # Redelivered if a worker dies mid-job; one message fetched per free slot, so the tier order
    # decides every fetch. No message priorities: they would override the weighting.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    timezone="UTC",
    enable_utc=True,
    beat_schedule=SCHEDULE,
    worker_send_task_events=True,  # for Flower
)
