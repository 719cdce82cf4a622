"""Periodic jobs, in one flat table. Every entry names a registered task and a known queue
(tests/test_beat_schedule.py checks both)."""

from celery.schedules import crontab

SCHEDULE = {
    # The relay's minute (pipeline.sweep): requeue jobs whose worker died (expired lease;
    # dead after their last run), re-send queued jobs whose message the broker lost, fill
    # workspace slots a hand-over missed, publish outbox rows a crash left.
    "outbox-relay": {
        "task": "enrichment.relay_outbox",
        "schedule": crontab(),  # every minute
        "options": {"queue": "maintenance", "expires": 55},
    },
    # Webhook deliveries whose attempt is overdue (long backoffs come due here).
    "webhook-sweep": {
        "task": "enrichment.sweep_webhooks",
        "schedule": crontab(),  # every minute
        "options": {"queue": "maintenance", "expires": 55},
    },
    # The seed's alert rules over a sliding window (alerts.toml).
    "alert-evaluation": {
        "task": "enrichment.evaluate_alerts",
        "schedule": crontab(),  # every minute
        "options": {"queue": "maintenance", "expires": 55},
    },
    # Idempotency windows: result cache 7 days, client Idempotency-Key answers 24 h.
    "expire-caches": {
        "task": "enrichment.expire_caches",
        "schedule": crontab(minute=7),  # hourly
        "options": {"queue": "maintenance", "expires": 3000},
    },
    # Retention: raw data after 90 days, jobs, results and per-job usage after 365.
    "retention-purge": {
        "task": "enrichment.retention_purge",
        "schedule": crontab(hour=3, minute=15),
        "options": {"queue": "maintenance"},
    },
    # Billing: overage of closed UTC days frozen and sent once; then checked against Stripe.
    "overage-report": {
        "task": "enrichment.report_overage",
        "schedule": crontab(hour=0, minute=30),
        "options": {"queue": "maintenance"},
    },
    # Overage reports whose retry is due (a lost answer goes again within the hour).
    "overage-send-due": {
        "task": "enrichment.send_overage_due",
        "schedule": crontab(minute=17),  # hourly
        "options": {"queue": "maintenance", "expires": 3000},
    },
    # Workspaces created while Stripe was down; subscriptions whose plan changed.
    "billing-account-sync": {
        "task": "enrichment.sync_billing_accounts",
        "schedule": crontab(minute="*/10"),
        "options": {"queue": "maintenance", "expires": 550},
    },
    "billing-reconciliation": {
        "task": "enrichment.reconcile_billing",
        "schedule": crontab(hour=2, minute=0),
        "options": {"queue": "maintenance"},
    },
}
