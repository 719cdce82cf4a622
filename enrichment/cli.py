"""The `enrichment` command: migrations, workspaces and API keys."""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from datetime import UTC, date, datetime, timedelta

import click
import psycopg
from psycopg.rows import dict_row

from . import alerts, db, dlq, privacy, workspaces
from .billing import BillingError, BillingNotConfigured, accounts, build_billing, catalog
from .billing import jobs as billing_jobs
from .config import Settings


def _connect(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(settings.database_url, row_factory=dict_row, connect_timeout=5,
                           options="-c timezone=UTC")


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Lead enrichment service administration."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Settings.from_env()


@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.pass_obj
def db_upgrade(settings: Settings) -> None:
    """Create the database if missing and apply pending migrations (idempotent)."""
    if db.ensure_database(settings.database_url):
        click.echo("created database")
    applied = db.upgrade(settings.database_url)
    click.echo(f"applied {', '.join(applied)}" if applied else "schema is up to date")


@main.group("workspace")
def workspace_group() -> None:
    """Workspaces."""


@workspace_group.command("create")
@click.option("--name", required=True)
@click.option("--plan", required=True)
@click.option("--region", type=click.Choice(["us", "eu"]), default="us", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print {workspace_id, api_key} as JSON.")
@click.pass_obj
def workspace_create(settings: Settings, name: str, plan: str, region: str, as_json: bool):
    """Create a workspace and its first API key (shown once)."""
    if plan not in settings.plans:
        known = ", ".join(settings.plans.names)
        raise click.BadParameter(f"known plans: {known}", param_hint="--plan")
    with _connect(settings) as conn:
        ws, key = workspaces.create_workspace(conn, settings.plans, name, plan, region)
        conn.commit()
        billing = _billing(settings)
        if billing.sends:  # the Stripe customer and subscription come with the workspace
            try:
                accounts.attach(conn, billing, ws.id)
                conn.commit()
            except (BillingError, LookupError) as exc:  # the key must still be shown
                conn.rollback()
                click.echo(f"warning: not attached to Stripe yet ({exc}); the billing sync "
                           "job retries every 10 minutes", err=True)
    if as_json:
        click.echo(json.dumps({"workspace_id": str(ws.id), "api_key": key}))
    else:
        click.echo(f"workspace {ws.id} ({ws.plan}, {ws.region})\napi key (shown once): {key}")


@workspace_group.command("set-plan")
@click.argument("workspace_id", type=click.UUID)
@click.argument("plan")
@click.pass_obj
def workspace_set_plan(settings: Settings, workspace_id: uuid.UUID, plan: str):
    """Move a workspace to another plan from now on (and its Stripe subscription)."""
    try:
        with _connect(settings) as conn:
            accounts.set_plan(conn, settings.plans, workspace_id, plan)
            conn.commit()
            billing = _billing(settings)
            if billing.sends:
                try:
                    moved = accounts.move(conn, billing, workspace_id)
                    conn.commit()
                    if moved:
                        click.echo("Stripe subscription moved to the new plan's prices")
                except BillingError as exc:
                    conn.rollback()
                    click.echo(f"warning: Stripe subscription not moved yet ({exc}); the "
                               "billing sync job retries every 10 minutes", err=True)
    except (ValueError, LookupError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"workspace {workspace_id} is now on {plan}")


@workspace_group.command("set-region")
@click.argument("workspace_id", type=click.UUID)
@click.argument("region", type=click.Choice(["us", "eu"]))
@click.option("--person-level/--no-person-level", default=None,
              help="Allow person-level templates (never in the EU).")
@click.pass_obj
def workspace_set_region(settings: Settings, workspace_id: uuid.UUID, region: str,
                         person_level: bool | None):
    """Move a workspace to a region (EU: person-level enrichment off)."""
    try:
        with _connect(settings) as conn:
            workspaces.set_region(conn, workspace_id, region, person_level)
    except (ValueError, LookupError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"workspace {workspace_id} is now in region {region}")


@main.group("apikey")
def apikey_group() -> None:
    """API keys."""


@apikey_group.command("create")
@click.argument("workspace_id", type=click.UUID)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def apikey_create(settings: Settings, workspace_id: uuid.UUID, as_json: bool):
    """Create another API key for a workspace (shown once)."""
    try:
        with _connect(settings) as conn:
            key = workspaces.create_api_key(conn, workspace_id)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"workspace_id": str(workspace_id), "api_key": key}) if as_json else key)


@apikey_group.command("revoke")
@click.argument("key_or_prefix")
@click.pass_obj
def apikey_revoke(settings: Settings, key_or_prefix: str):
    """Revoke a key, given the key itself or its prefix (the part after 'lek_')."""
    prefix = workspaces.key_prefix(key_or_prefix) or key_or_prefix
    with _connect(settings) as conn:
        if not workspaces.revoke_api_key(conn, prefix):
            raise click.ClickException("no live key with that prefix")
    click.echo(f"revoked key {prefix}")


@main.group("dlq")
def dlq_group() -> None:
    """Dead letters: jobs whose providers failed for good."""


@dlq_group.command("list")
@click.option("--all", "include_replayed", is_flag=True, help="Include replayed ones.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def dlq_list(settings: Settings, include_replayed: bool, as_json: bool):
    """List dead letters, oldest first."""
    with _connect(settings) as conn:
        rows = dlq.list_dead_letters(conn, include_replayed)
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    if not rows:
        click.echo("no dead letters")
    for r in rows:
        replayed = f"  replayed {r['replayed_at']:%Y-%m-%d %H:%M}" if r["replayed_at"] else ""
        click.echo(f"{r['job_id']}  {r['created_at']:%Y-%m-%d %H:%M:%S}  {r['status']:<6}  "
                   f"{r['template']:<15}  attempts={r['attempts']}  {r['error']}{replayed}")


@dlq_group.command("replay")
@click.argument("job_id", type=click.UUID, required=False)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
@click.pass_obj
def dlq_replay(settings: Settings, job_id: uuid.UUID | None, replay_all: bool):
    """Re-queue a dead-lettered job (or all of them); the beat relay publishes them within a
    minute. Replaying a job twice does nothing the second time."""
    if bool(job_id) == replay_all:
        raise click.UsageError("give a JOB_ID or --all")
    with _connect(settings) as conn:
        conn.autocommit = True
        ids = [job_id] if job_id else [r["job_id"] for r in dlq.list_dead_letters(conn, limit=None)]
        outcomes = [dlq.replay(conn, settings, i, datetime.now(UTC)) for i in ids]
    for i, outcome in zip(ids, outcomes, strict=True):
        click.echo(f"{i}  {outcome}")
    if job_id and outcomes[0] != "replayed":
        raise click.ClickException(f"job {job_id} was not replayed ({outcomes[0]})")


@main.group("retention")
def retention_group() -> None:
    """Retention of personal data."""


@retention_group.command("purge")
@click.pass_obj
def retention_purge(settings: Settings):
    """Run the retention purge now (idempotent): raw data after RETENTION_RAW_DAYS, jobs,
    results and per-job usage after RETENTION_SUMMARY_DAYS."""
    with _connect(settings) as conn:
        conn.autocommit = True
        removed = privacy.purge(conn, datetime.now(UTC), settings.retention_raw_days,
                                settings.retention_summary_days)
    click.echo(json.dumps(removed))


@main.command("alerts")
@click.pass_obj
def alerts_command(settings: Settings):
    """Print the current state of every alert rule."""
    with _connect(settings) as conn:
        states = {r["rule"]: r for r in alerts.current(conn)}
    for rule in alerts.load_rules():
        row = states.get(rule.name)
        state = row["state"] if row else "unknown"
        value = "-" if not row or row["value"] is None else f"{row['value']:.3f}"
        since = f"since {row['since']:%Y-%m-%d %H:%M}Z" if row else ""
        click.echo(f"{rule.name:24} {state:8} value={value:>10}  {rule.op} {rule.threshold:<6}"
                   f" {since}  {rule.description}")


@main.group("billing")
def billing_group() -> None:
    """Stripe catalog, customers, the overage report, reconciliation."""


def _billing(settings: Settings):
    return build_billing(settings.stripe_api_key, settings.stripe_api_base,
                         settings.stripe_timeout)


@contextlib.contextmanager
def _services(settings: Settings):
    """The same services the API and the workers build (events reach PostHog, alert state
    reaches Redis); Stripe's failures as one line."""
    from .services import build_services

    svc = build_services(settings)
    try:
        yield svc
    except BillingNotConfigured as exc:
        raise click.ClickException(str(exc)) from None
    except BillingError as exc:
        raise click.ClickException(f"Stripe: {exc}") from None
    finally:
        svc.close()


@billing_group.command("sync-catalog")
@click.pass_obj
def billing_sync_catalog(settings: Settings):
    """Create the meter, products and prices in Stripe (idempotent, by lookup keys)."""
    billing = _billing(settings)
    if not billing.sends:
        raise click.ClickException("STRIPE_API_KEY is not set: billing runs ledger-only")
    try:
        with _connect(settings) as conn:
            stored = catalog.sync_catalog(conn, billing, settings.plans)
    except BillingError as exc:
        raise click.ClickException(f"Stripe: {exc}") from None
    for key, stripe_id in sorted(stored.items()):
        click.echo(f"{key:32} {stripe_id}")


@billing_group.command("attach")
@click.argument("workspace_id", type=click.UUID)
@click.pass_obj
def billing_attach(settings: Settings, workspace_id: uuid.UUID):
    """Create the workspace's Stripe customer and subscription (once)."""
    try:
        with _connect(settings) as conn:
            customer = accounts.attach(conn, _billing(settings), workspace_id)
    except (LookupError, BillingNotConfigured) as exc:
        raise click.ClickException(str(exc)) from None
    except BillingError as exc:
        raise click.ClickException(f"Stripe: {exc}") from None
    click.echo(f"workspace {workspace_id} → Stripe customer {customer}")


@billing_group.command("sync")
@click.pass_obj
def billing_sync(settings: Settings):
    """Attach workspaces without a Stripe customer; move subscriptions to their plan (what
    the billing sync job does every 10 minutes)."""
    with _services(settings) as svc:
        click.echo(json.dumps(billing_jobs.sync_accounts(svc)))


def _closed_day(value: str | None) -> date:
    today = datetime.now(UTC).date()
    try:
        return date.fromisoformat(value) if value else today - timedelta(days=1)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)",
                                 param_hint="--date") from None


@billing_group.command("report")
@click.option("--date", "day", help="Last closed UTC day to report (default: yesterday).")
@click.pass_obj
def billing_report(settings: Settings, day: str | None):
    """Run the overage report now for closed UTC days up to --date, and send every unsent
    report that may still go through, whatever its backoff. Idempotent."""
    through = _closed_day(day)
    with _services(settings) as svc:
        try:
            done = billing_jobs.report_overage(svc, through, force=True)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"through": through.isoformat(), **done}))


@billing_group.command("reconcile")
@click.option("--date", "day", help="Last closed UTC day to check (default: yesterday).")
@click.pass_obj
def billing_reconcile(settings: Settings, day: str | None):
    """Compare metered usage, usage_reports and Stripe's meter, and list the reports Stripe
    did not take (failed, expired); exit 1 on any."""
    with _services(settings) as svc:
        found = billing_jobs.reconcile_billing(svc, _closed_day(day))
    for p in found["discrepancies"]:
        click.echo(json.dumps({"discrepancy": p}))
    for r in found["unsent"]:
        click.echo(json.dumps({"unsent": r}))
    problems = len(found["discrepancies"]) + len(found["unsent"])
    if problems:
        raise click.ClickException(f"{len(found['discrepancies'])} discrepancies, "
                                   f"{len(found['unsent'])} unsent reports")
    click.echo("billing reconciled: no discrepancy, nothing unsent")


@billing_group.command("settle-expired")
@click.pass_obj
def billing_settle_expired(settings: Settings):
    """Bill expired reports (days older than Stripe's meter accepts) as invoice items on each
    customer's next invoice. Idempotent."""
    with _services(settings) as svc:
        for item in billing_jobs.settle_expired(svc):
            click.echo(json.dumps(item))


if __name__ == "__main__":
    main()
