"""Thin tasks: read arguments, call one domain function. `EnrichmentTask` holds the policy:
database and Redis outages are retried explicitly (an ordinary exception would be acked and
the job lost), with exponential backoff."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from celery import Task
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

from enrichment import alerts, logs, metrics, pipeline, privacy, uploads, webhooks
from enrichment.billing import operations as billing_ops
from enrichment.errors import BACKING_SERVICE_DOWN
from enrichment.jobs import intake, outbox
from enrichment.services import Services, build_services

from .celery_app import app, settings
from .publisher import RUN_JOB, WEBHOOKS_QUEUE, CeleryPublisher

log = logging.getLogger(__name__)

_services: Services | None = None


def services() -> Services:
    """One set of services per worker process, built after the fork."""
    global _services
    if _services is None:
        _services = build_services(settings(), publisher=CeleryPublisher())
    return _services


@worker_init.connect
def _check_prices(**_):
    """A worker does not start while the plans file changed a synced price in place."""
    billing_ops.check_prices(settings())


@worker_process_init.connect
def _forget_parent_services(**_):
    global _services
    _services = None


@worker_process_shutdown.connect
def _close_services(**_):
    if _services is not None:
        _services.close()


@worker_ready.connect
def _serve_metrics(**_):
    """WORKER_METRICS_PORT: this worker host's metrics (all its pool processes) over HTTP, for
    hosts whose workers do not share PROMETHEUS_MULTIPROC_DIR with an API. On
    WORKER_METRICS_HOST (loopback unless set), behind METRICS_TOKEN as the API's /metrics."""
    config = settings()
    if config.worker_metrics_port is None:
        return None
    server = metrics.serve(config.worker_metrics_port, config.worker_metrics_host,
                           config.metrics_token)
    log.info("metrics on %s:%s%s", config.worker_metrics_host, config.worker_metrics_port,
             "" if config.metrics_token else " (no METRICS_TOKEN: unauthenticated)")
    return server


@task_prerun.connect
def _log_context(task=None, args=None, **_):
    """The job's id on every line logged while running it, and the id of the API request
    that submitted it (a message header) when the API published it."""
    logs.job_id.set(args[0] if task.name == RUN_JOB and args else None)
    logs.request_id.set(task.request.get("request_id"))


@task_postrun.connect
def _forget_log_context(**_):
    logs.job_id.set(None)
    logs.request_id.set(None)


class EnrichmentTask(Task):
    autoretry_for = BACKING_SERVICE_DOWN
    retry_backoff = 1
    retry_backoff_max = 30
    retry_jitter = True
    max_retries = 20


@app.task(name="enrichment.run_job", base=EnrichmentTask, soft_time_limit=120, time_limit=150)
def run_job(job_id: str) -> str:
    return pipeline.run_job(services(), job_id)


@app.task(name="enrichment.admit_upload", base=EnrichmentTask, soft_time_limit=900,
          time_limit=960)
def admit_upload(upload_id: str) -> int:
    """Admit a console upload's rows, a batch of 100 per submission token of the workspace's
    rate limit (waiting for the next when it runs out). Returns the rows admitted."""
    return uploads.admit(services(), upload_id, _valid_lead)


def _valid_lead(lead: dict, template: str) -> dict:
    """The lead as `POST /api/v1/enrichment` takes it (api/schemas.py); ValueError if not."""
    from marshmallow import ValidationError

    from api.schemas import SubmitSchema

    try:
        return SubmitSchema().load({"template": template, "lead": lead})["lead"]
    except ValidationError as exc:
        raise ValueError(str(exc.messages)) from None


@app.task(name="enrichment.relay_outbox", base=EnrichmentTask)
def relay_outbox() -> dict:
    done = pipeline.sweep(services())
    if any(done.values()):
        log.info("outbox relay: %s", done)
    return done


@app.task(name="enrichment.deliver_webhook", base=EnrichmentTask, queue=WEBHOOKS_QUEUE)
def deliver_webhook(delivery_id: str) -> str:
    """One attempt at a webhook delivery; a retry due within a minute (the first ones) or an
    endpoint busy with others is re-sent here, later ones by the webhook sweeper."""
    svc = services()
    attempt = webhooks.deliver(svc.db, delivery_id,
                               allow_private=svc.settings.webhooks_allow_private_urls,
                               concurrency=svc.settings.webhook_endpoint_concurrency)
    if attempt.retry_in is not None and attempt.retry_in <= 60:
        CeleryPublisher().send_webhook(delivery_id, countdown=attempt.retry_in)
    return attempt.outcome


@app.task(name="enrichment.sweep_webhooks", base=EnrichmentTask)
def sweep_webhooks() -> int:
    """Turn the job events a crash left into messages, and send again the deliveries whose
    attempt is overdue (long backoffs, lost messages, workers that died mid-attempt)."""
    svc = services()
    written = svc.notify()
    overdue = webhooks.overdue(svc.db)
    outbox.send_webhooks(svc.publisher, overdue)
    return written + len(overdue)


@app.task(name="enrichment.expire_caches", base=EnrichmentTask)
def expire_caches() -> dict:
    with services().db.connection() as conn:
        return intake.expire_caches(conn)


@app.task(name="enrichment.noop")
def noop(record_key: str | None = None, tag: str | None = None) -> None:
    """Does nothing (the benchmark baseline); with a key, records `tag` in a Redis list
    (tests use it to see the order in which a worker took messages)."""
    if record_key:
        services().redis.rpush(record_key, tag or "")


@app.task(name="enrichment.report_overage", base=EnrichmentTask)
def report_overage() -> dict:
    """The nightly overage report: every closed UTC day up to yesterday."""
    return billing_ops.report_overage(services())


@app.task(name="enrichment.send_overage_due", base=EnrichmentTask)
def send_overage_due() -> dict:
    """Hourly: overage reports whose retry is due."""
    return billing_ops.send_due(services())


@app.task(name="enrichment.reconcile_billing", base=EnrichmentTask)
def reconcile_billing() -> dict:
    return billing_ops.reconcile_billing(services())


@app.task(name="enrichment.sync_billing_accounts", base=EnrichmentTask)
def sync_billing_accounts() -> dict:
    """Attach workspaces Stripe was down for; move subscriptions whose plan changed."""
    return billing_ops.sync_accounts(services())


@app.task(name="enrichment.retention_purge", base=EnrichmentTask)
def retention_purge() -> dict:
    svc = services()
    with svc.db.connection() as conn:
        removed = privacy.purge(conn, datetime.now(UTC), svc.settings.retention_raw_days,
                                svc.settings.retention_summary_days)
    log.info("retention purge removed %s", removed)
    return removed


@app.task(name="enrichment.evaluate_alerts", base=EnrichmentTask)
def evaluate_alerts() -> list:
    svc = services()
    with svc.db.connection() as conn:
        return alerts.evaluate(conn, svc.redis, svc.events, datetime.now(UTC),
                               alerts.load_rules(svc.settings.alerts_file),
                               alertmanager_url=svc.settings.alertmanager_url)
