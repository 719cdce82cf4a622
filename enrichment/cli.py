"""The `enrichment` command: migrations, workspaces and API keys, dead letters, retention,
alerts and billing. Configuration is read when a command first needs it (so `--help` always
works), and every command runs on the same `Services` as the API and the workers. Errors are
one line on stderr and exit status 1 (2 for bad usage)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import uuid
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from importlib.metadata import version

import click
import psycopg

from . import alerts, db, logs, privacy, workspaces
from .billing import BillingError, accounts, prices
from .billing import operations as billing_ops
from .config import Settings
from .errors import BACKING_SERVICE_DOWN, EnrichmentError
from .jobs import dead_letters
from .services import Services, build_services


class App:
    """What commands share: the settings, read on first use, and the services built from
    them (closed when the command ends)."""

    def __init__(self, ctx: click.Context):
        self.ctx = ctx

    @cached_property
    def settings(self) -> Settings:
        try:
            settings = Settings.from_env()
        except (ValueError, OSError) as exc:  # a bad variable, an unreadable PLANS_FILE
            raise click.ClickException(f"configuration: {exc}") from None
        logs.configure(settings.log_level, settings.log_format)
        # The pool's reconnection warnings would bury the one-line error.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        return settings

    @cached_property
    def services(self) -> Services:
        svc = build_services(self.settings)
        self.ctx.call_on_close(svc.close)
        return svc


pass_app = click.make_pass_decorator(App)


class Commands(click.Group):
    """Domain errors, database errors and unreachable backing services as one line, not a
    traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EnrichmentError as exc:
            raise click.ClickException(_line(str(exc))) from None
        except BACKING_SERVICE_DOWN as exc:
            raise click.ClickException(_line(
                f"a backing service is unreachable ({type(exc).__name__}: {exc})")) from None
        except psycopg.errors.UndefinedTable:
            raise click.ClickException("the database has no schema yet: run "
                                       "`enrichment db upgrade`") from None
        except psycopg.Error as exc:  # the primary message only: DETAIL can quote row data
            message = exc.diag.message_primary if exc.diag.message_primary else str(exc)
            raise click.ClickException(_line(f"database: {message}")) from None
        except ValueError as exc:  # e.g. a URL the client libraries cannot parse
            raise click.ClickException(_line(f"configuration: {exc}")) from None


def _line(message: str) -> str:
    return " ".join(message.split())


class _Day(click.DateTime):
    name = "date"

    def convert(self, value, param, ctx):
        day = super().convert(value, param, ctx)
        if day.year < 2000:
            self.fail(f"{value!r} is before 2000", param, ctx)
        return day


class _Name(click.ParamType):
    name = "name"

    def convert(self, value, param, ctx):
        if not 1 <= len(value.strip()) <= 200:
            self.fail("a name has 1 to 200 characters", param, ctx)
        return value.strip()


Day = _Day(formats=["%Y-%m-%d"])
Name = _Name()


@click.group(cls=Commands)
@click.version_option(version("lead-enrichment"), prog_name="enrichment")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Lead enrichment service administration."""
    ctx.obj = App(ctx)


@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Create the database if missing and apply pending migrations (idempotent). Runs before
    the services exist: it may have to create their database."""
    url = app.settings.database_url
    if db.ensure_database(url):
        click.echo("created database")
    applied = db.upgrade(url)
    click.echo(f"applied {', '.join(applied)}" if applied else "schema is up to date")


@db_group.command("restore")
@click.option("--dump", type=click.Path(exists=True, dir_okay=False),
              help="A `pg_dump -Fc` file to restore into DATABASE_URL (created if missing).")
@click.option("--no-restore", is_flag=True,
              help="The database is restored already (point-in-time recovery): run the steps"
              " after it.")
@click.option("--pg-restore", default=lambda: shutil.which("pg_restore") or "pg_restore",
              show_default="pg_restore on PATH",
              help="The pg_restore binary (the server's major version or newer).")
@pass_app
def db_restore(app: App, dump: str | None, no_restore: bool, pg_restore: str) -> None:
    """The restore drill (docs/operations.md#the-restore-drill): restore the dump in one
    transaction, apply migrations, drop the API key cache, re-apply the revocations journaled
    since, reconcile billing. Stop beat, the workers and the API first. One JSON line per step;
    exit 0 when reconciliation is clean, 1 on discrepancies, 2 when a step failed."""
    if not no_restore and dump is None:
        raise click.UsageError("--dump FILE is required (or --no-restore)")
    url, step = app.settings.database_url, "restore"

    def say(**facts) -> None:
        click.echo(json.dumps({"step": step, **facts}, default=str))

    try:
        if dump is not None and not no_restore:
            db.ensure_database(url)
            # Into an empty schema: `--clean` drops only what the dump has, and tables of
            # migrations newer than the dump would survive it (and fail the upgrade).
            with psycopg.connect(url, autocommit=True) as empty:
                empty.execute("DROP SCHEMA IF EXISTS public CASCADE")
                empty.execute("CREATE SCHEMA public")
            done = subprocess.run(  # noqa: S603 (the operator's own binary and dump)
                [pg_restore, "--no-owner", "--no-privileges", "--single-transaction",
                 "--exit-on-error", "-d", url, dump],
                capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"pg_restore failed: {done.stderr.strip()[-2000:]}")
            say(dump=dump)
        step = "upgrade"
        say(applied=db.upgrade(url))
        svc = app.services
        step = "flush-key-cache"
        say(dropped=svc.key_cache.flush())
        step = "reapply-revocations"
        with svc.db.connection() as conn:
            journaled = len(svc.key_cache.revocations())
            say(revoked_again=workspaces.reapply_revocations(conn, svc.key_cache),
                journaled=journaled, **({} if journaled else {"warning": (
                    "the revocation journal is empty: if Redis was lost or replaced too,"
                    " revoke again by hand the keys revoked since the backup point")}))
        step = "reconcile"
        found = billing_ops.reconcile_billing(svc)
    except Exception as exc:  # the operator reads which step failed
        say(error=f"{type(exc).__name__}: {exc}")
        app.ctx.exit(2)
    say(discrepancies=found["discrepancies"], unsent=found["unsent"])
    app.ctx.exit(1 if found["discrepancies"] else 0)


@main.group("workspace")
def workspace_group() -> None:
    """Workspaces."""


@workspace_group.command("create")
@click.option("--name", required=True, type=Name, help="1-200 characters.")
@click.option("--plan", required=True, help="A plan of PLANS_FILE (see `workspace list`).")
@click.option("--region", type=click.Choice(["us", "eu"]), default="us", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print {workspace_id, api_key} as JSON.")
@pass_app
def workspace_create(app: App, name: str, plan: str, region: str, as_json: bool):
    """Create a workspace and its first API key (shown once)."""
    svc = app.services
    if plan not in svc.settings.plans:
        known = ", ".join(svc.settings.plans.names)
        raise click.BadParameter(f"known plans: {known}", param_hint="--plan")
    with svc.db.connection() as conn:
        ws, key = workspaces.create_workspace(conn, svc.settings.plans, name, plan, region)
        if svc.billing.sends:  # the Stripe customer and subscription come with the workspace
            try:
                accounts.attach(conn, svc.billing, ws.id)
            except EnrichmentError as exc:  # the key must still be shown
                click.echo(f"warning: not attached to Stripe yet ({exc}); the billing sync "
                           "job retries every 10 minutes", err=True)
    if as_json:
        click.echo(json.dumps({"workspace_id": str(ws.id), "api_key": key}))
    else:
        click.echo(f"workspace {ws.id} ({ws.plan}, {ws.region})\napi key (shown once): {key}")


@workspace_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per workspace.")
@pass_app
def workspace_list(app: App, as_json: bool):
    """Every workspace: id, plan, region, live API keys, Stripe customer."""
    with app.services.db.connection() as conn:
        rows = workspaces.list_workspaces(conn)
    for r in rows:
        if as_json:
            click.echo(json.dumps({**r, "id": str(r["id"]),
                                   "created_at": r["created_at"].isoformat()}))
        else:
            click.echo(f"{r['id']}  {r['plan']:<6} {r['region']}  keys={r['live_keys']}  "
                       f"{r['created_at']:%Y-%m-%d}  {r['stripe_customer_id'] or '-':<20}  "
                       f"{r['name']}")
    if not rows and not as_json:
        click.echo("no workspaces: create one with `enrichment workspace create`")


@workspace_group.command("set-plan")
@click.argument("workspace_id", type=click.UUID)
@click.argument("plan")
@pass_app
def workspace_set_plan(app: App, workspace_id: uuid.UUID, plan: str):
    """Move a workspace to another plan from now on (and its Stripe subscription)."""
    svc = app.services
    with svc.db.connection() as conn:
        accounts.set_plan(conn, svc.key_cache, svc.settings.plans, workspace_id, plan,
                          svc.clock())
        if svc.billing.sends:
            try:
                if accounts.move(conn, svc.billing, workspace_id, svc.clock()):
                    click.echo("Stripe subscription moved to the new plan's prices")
            except BillingError as exc:
                click.echo(f"warning: Stripe subscription not moved yet ({exc}); the "
                           "billing sync job retries every 10 minutes", err=True)
    click.echo(f"workspace {workspace_id} is now on {plan}")


@workspace_group.command("set-region")
@click.argument("workspace_id", type=click.UUID)
@click.argument("region", type=click.Choice(["us", "eu"]))
@click.option("--person-level/--no-person-level", default=None,
              help="Allow person-level templates (never in the EU).")
@pass_app
def workspace_set_region(app: App, workspace_id: uuid.UUID, region: str,
                         person_level: bool | None):
    """Move a workspace to a region (EU: person-level enrichment off)."""
    svc = app.services
    with svc.db.connection() as conn:
        workspaces.set_region(conn, svc.key_cache, workspace_id, region, person_level)
    click.echo(f"workspace {workspace_id} is now in region {region}")


@main.group("apikey")
def apikey_group() -> None:
    """API keys."""


@apikey_group.command("create")
@click.argument("workspace_id", type=click.UUID)
@click.option("--test", "test_mode", is_flag=True,
              help="A test-mode key (lek_test_…): simulated providers, never billed.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def apikey_create(app: App, workspace_id: uuid.UUID, test_mode: bool, as_json: bool):
    """Create another API key for a workspace (shown once)."""
    with app.services.db.connection() as conn:
        key = workspaces.create_api_key(conn, workspace_id, livemode=not test_mode)
    click.echo(json.dumps({"workspace_id": str(workspace_id), "api_key": key}) if as_json else key)


@apikey_group.command("list")
@click.argument("workspace_id", type=click.UUID, required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
@pass_app
def apikey_list(app: App, workspace_id: uuid.UUID | None, as_json: bool):
    """API keys by prefix (the key itself is never stored), of one workspace or all."""
    with app.services.db.connection() as conn:
        rows = workspaces.list_api_keys(conn, workspace_id)
    for r in rows:
        if as_json:
            click.echo(json.dumps({**r, "workspace_id": str(r["workspace_id"]),
                                   "created_at": r["created_at"].isoformat(),
                                   "revoked_at": r["revoked_at"] and r["revoked_at"].isoformat()}))
        else:
            state = f"revoked {r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "active"
            mode = "live" if r["livemode"] else "test"
            click.echo(f"{r['prefix']}  {r['workspace_id']}  {mode}  "
                       f"created {r['created_at']:%Y-%m-%d %H:%M}  {state}")
    if not rows and not as_json:
        click.echo("no API keys")


@apikey_group.command("revoke")
@click.argument("key_or_prefix")
@pass_app
def apikey_revoke(app: App, key_or_prefix: str):
    """Revoke a key, given the key itself or its prefix (the 12 hex characters after
    'lek_', as `apikey list` shows)."""
    prefix = workspaces.key_prefix(key_or_prefix) or key_or_prefix
    svc = app.services
    with svc.db.connection() as conn:
        if not workspaces.revoke_api_key(conn, svc.key_cache, prefix):
            raise click.ClickException("no live key with that prefix")
    click.echo(f"revoked key {prefix}")


@main.group("dlq")
def dlq_group() -> None:
    """Dead letters: jobs whose providers failed for good."""


@dlq_group.command("list")
@click.option("--all", "include_replayed", is_flag=True, help="Include replayed ones.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def dlq_list(app: App, include_replayed: bool, as_json: bool):
    """List dead letters, oldest first."""
    with app.services.db.connection() as conn:
        rows = dead_letters.list_dead_letters(conn, include_replayed)
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
@pass_app
def dlq_replay(app: App, job_id: uuid.UUID | None, replay_all: bool):
    """Re-queue a dead-lettered job (or all of them); the beat relay publishes them within a
    minute. Replaying a job twice does nothing the second time."""
    if bool(job_id) == replay_all:
        raise click.UsageError("give a JOB_ID or --all")
    svc = app.services
    with svc.db.connection() as conn:
        ids = [job_id] if job_id else [
            r["job_id"] for r in dead_letters.list_dead_letters(conn, limit=None)]
        outcomes = [dead_letters.replay(conn, svc.settings, i, svc.clock()) for i in ids]
    for i, outcome in zip(ids, outcomes, strict=True):
        click.echo(f"{i}  {outcome}")
    if job_id and outcomes[0] != "replayed":
        raise click.ClickException(f"job {job_id} was not replayed ({outcomes[0]})")


@main.group("retention")
def retention_group() -> None:
    """Retention of personal data."""


@retention_group.command("purge")
@pass_app
def retention_purge(app: App):
    """Run the retention purge now (idempotent): raw data after RETENTION_RAW_DAYS, jobs,
    results and per-job usage after RETENTION_SUMMARY_DAYS."""
    svc = app.services
    with svc.db.connection() as conn:
        removed = privacy.purge(conn, datetime.now(UTC), svc.settings.retention_raw_days,
                                svc.settings.retention_summary_days)
    click.echo(json.dumps(removed))


@main.command("alerts")
@pass_app
def alerts_command(app: App):
    """Print the current state of every alert rule (of ALERTS_FILE)."""
    svc = app.services
    with svc.db.connection() as conn:
        states = {r["rule"]: r for r in alerts.current(conn)}
    for rule in alerts.load_rules(svc.settings.alerts_file):
        row = states.get(rule.name)
        state = row["state"] if row else "unknown"
        value = "-" if not row or row["value"] is None else f"{row['value']:.3f}"
        since = f"since {row['since']:%Y-%m-%d %H:%M}Z" if row else ""
        click.echo(f"{rule.name:24} {state:8} value={value:>10}  {rule.op} {rule.threshold:<6}"
                   f" {since}  {rule.description}")


@main.group("billing")
def billing_group() -> None:
    """Stripe catalog, customers, the overage report, reconciliation."""


@billing_group.command("sync-catalog")
@pass_app
def billing_sync_catalog(app: App):
    """Create the meter, products and prices in Stripe (idempotent, by lookup keys)."""
    svc = app.services
    if not svc.billing.sends:
        raise click.ClickException("STRIPE_API_KEY is not set: billing runs ledger-only")
    with svc.db.connection() as conn:
        stored = prices.sync_catalog(conn, svc.billing, svc.settings.plans)
        found = prices.mismatches(conn, svc.settings.plans)
    for key, stripe_id in sorted(stored.items()):
        click.echo(f"{key:32} {stripe_id}")
    for mismatch in found:
        click.echo(f"warning: {mismatch}: run `enrichment billing change-price`", err=True)


@billing_group.command("change-price")
@click.argument("plan")
@pass_app
def billing_change_price(app: App, plan: str):
    """Make the plans file's prices for PLAN the prices in force, the Stripe way: a new price
    takes over each changed price's lookup key (the old one archived, past invoices keep it),
    the plan's subscriptions move to it (the base fee from their next period), and the
    history records when (each day's overage is priced at the price in force at its end).
    Edit the plans file first, run this, then restart the API and workers. A rerun moves the
    subscriptions a failure left behind; exit 1 while any is left."""
    svc = app.services
    if plan not in svc.settings.plans:
        raise click.ClickException(f"no plan {plan!r} in the plans file")
    with svc.db.connection() as conn:
        done = prices.change(conn, svc.billing, svc.settings.plans, plan, svc.clock())
    click.echo(json.dumps({"plan": done.plan, "prices": done.prices, "recorded": done.recorded,
                           "subscriptions_moved": done.moved, "failed": done.failed}))
    if done.failed:
        raise click.ClickException(f"{len(done.failed)} subscriptions not moved: run the"
                                   " command again")


@billing_group.command("attach")
@click.argument("workspace_id", type=click.UUID)
@pass_app
def billing_attach(app: App, workspace_id: uuid.UUID):
    """Create the workspace's Stripe customer and subscription (once)."""
    svc = app.services
    with svc.db.connection() as conn:
        customer = accounts.attach(conn, svc.billing, workspace_id)
    click.echo(f"workspace {workspace_id} → Stripe customer {customer}")


@billing_group.command("sync")
@pass_app
def billing_sync(app: App):
    """Attach workspaces without a Stripe customer; move subscriptions to their plan (what
    the billing sync job does every 10 minutes)."""
    click.echo(json.dumps(billing_ops.sync_accounts(app.services)))


def _closed_day(day: datetime | None) -> date:
    return day.date() if day else datetime.now(UTC).date() - timedelta(days=1)


@billing_group.command("report")
@click.option("--date", "day", type=Day, help="Last closed UTC day to report (default: "
              "yesterday).")
@pass_app
def billing_report(app: App, day: datetime | None):
    """Run the overage report now for closed UTC days up to --date, and send every unsent
    report that may still go through, whatever its backoff. Idempotent."""
    through = _closed_day(day)
    done = billing_ops.report_overage(app.services, through, force=True)
    click.echo(json.dumps({"through": through.isoformat(), **done}))


@billing_group.command("reconcile")
@click.option("--date", "day", type=Day, help="Last closed UTC day to check (default: "
              "yesterday).")
@pass_app
def billing_reconcile(app: App, day: datetime | None):
    """Compare metered usage, usage_reports and Stripe's meter, and list the reports Stripe
    did not take (failed, expired); exit 1 on any."""
    found = billing_ops.reconcile_billing(app.services, _closed_day(day))
    for p in found["discrepancies"]:
        click.echo(json.dumps({"discrepancy": p}))
    for r in found["unsent"]:
        click.echo(json.dumps({"unsent": r}))
    if found["discrepancies"] or found["unsent"]:
        raise click.ClickException(f"{len(found['discrepancies'])} discrepancies, "
                                   f"{len(found['unsent'])} unsent reports")
    click.echo("billing reconciled: no discrepancy, nothing unsent")


@billing_group.command("settle-expired")
@pass_app
def billing_settle_expired(app: App):
    """Bill expired reports (days older than Stripe's meter accepts) as invoice items on each
    customer's next invoice. Idempotent."""
    for item in billing_ops.settle_expired(app.services):
        click.echo(json.dumps(item))


if __name__ == "__main__":
    main()
