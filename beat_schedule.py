"""Periodic jobs, in one flat table. Every entry names a registered task and a known queue
(tests/test_beat_schedule.py checks both)."""

from celery.schedules import crontab

SCHEDULE = {
    # Publish jobs whose post-commit publish was lost; requeue jobs whose worker died; wake
    # parked jobs whose wake-up was lost.
    "outbox-relay": {
        "task": "enrichment.relay_outbox",
        "schedule": crontab(),  # every minute
        "options": {"queue": "maintenance", "expires": 55},
    },
    # Idempotency windows: result cache 7 days, client Idempotency-Key answers 24 h.
    "expire-caches": {
        "task": "enrichment.expire_caches",
        "schedule": crontab(minute=7),  # hourly
        "options": {"queue": "maintenance", "expires": 3000},
    },
    # Billing: overage of closed UTC days frozen and sent once; then checked against Stripe.
    "overage-report": {
        "task": "enrichment.report_overage",
        "schedule": crontab(hour=0, minute=30),
        "options": {"queue": "maintenance"},
    },
    "billing-reconciliation": {
        "task": "enrichment.reconcile_billing",
        "schedule": crontab(hour=2, minute=0),
        "options": {"queue": "maintenance"},
    },
}
