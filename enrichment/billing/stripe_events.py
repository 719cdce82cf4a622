"""Credit packs (Stripe Checkout) and the Stripe events this service acts on, each exactly
once per event id.

A pack is credited only for a checkout session this service created (its id, workspace,
customer, pack and amount stored at checkout), when Stripe says it is paid — at once
(`checkout.session.completed` with `payment_status: paid`) or later for delayed methods such
as SEPA or ACH (`checkout.session.async_payment_succeeded`). The session's metadata is never
trusted: a session we did not create, or whose customer or amount differ, credits nothing.
Credits are dated by the payment (the event's time), so a pack paid at 23:59 on the 31st
tops up that month. A refund (`charge.refunded`) or a lost dispute takes back the credit not
yet used in the period it belongs to — never more than is unused; one that arrives before
the payment is recorded is kept and applied when it is.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from ..config import Plans
from ..db import Conn, Pool, one
from ..events import Events
from ..jobs import units as ledger
from ..jobs.slots import lock_workspace
from ..periods import period_start
from .catalog import load_catalog
from .interface import Billing, Checkout
from .usage import credit_position

log = logging.getLogger(__name__)


def start_checkout(pool: Pool, billing: Billing, plans: Plans,
                   workspace_id: uuid.UUID, pack_name: str, success_url: str,
                   cancel_url: str) -> Checkout:
    """A Checkout session for a pack, recorded so that its webhook can be trusted. No
    database connection is held while Stripe answers."""
    pack = plans.packs[pack_name]
    with pool.connection() as conn:
        customer = one(conn.execute("SELECT stripe_customer_id FROM workspaces WHERE id = %s",
                                    (workspace_id,)))["stripe_customer_id"]
        catalog = load_catalog(conn)
    checkout = billing.checkout(customer, str(workspace_id), pack, catalog, success_url,
                                cancel_url)
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO checkout_sessions (id, workspace_id, pack, units, amount_cents,"
            " currency, customer) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (checkout.session_id, workspace_id, pack.name, pack.units, checkout.amount_cents,
             checkout.currency, customer))
    return checkout


def handle_event(conn: Conn, plans: Plans, events: Events, event: dict) -> str:
    """Apply one verified Stripe event once (event ids are recorded; a redelivery does
    nothing). Returns what was done."""
    handler = HANDLERS.get(event["type"])
    with conn.transaction():
        first = conn.execute("INSERT INTO stripe_events (id, type) VALUES (%s, %s)"
                             " ON CONFLICT DO NOTHING", (event["id"], event["type"])).rowcount
        if not first:
            return "duplicate"
        if handler is None:
            return "ignored"
        outcome = handler(conn, plans, event, event["data"]["object"])
    if outcome is not None:
        name, workspace_id, properties = outcome
        events.capture(name, workspace_id, properties)
    return "handled"


def _when(event: dict) -> datetime:
    """When Stripe says it happened: the event's creation time."""
    created = event.get("created")
    return datetime.fromtimestamp(int(created), UTC) if created else datetime.now(UTC)


def _ours(conn: Conn, session: dict) -> dict | None:
    """The stored session, if the event's session is one we created and agrees with it."""
    stored = conn.execute("SELECT * FROM checkout_sessions WHERE id = %s FOR UPDATE",
                          (session.get("id"),)).fetchone()
    if stored is None:
        log.warning("checkout session %s was not created here: ignored", session.get("id"))
        return None
    problems = []
    if stored["customer"] and session.get("customer") != stored["customer"]:
        problems.append("customer")
    if session.get("amount_total") != stored["amount_cents"]:
        problems.append("amount")
    if (session.get("currency") or "").lower() != stored["currency"]:
        problems.append("currency")
    if problems:
        log.warning("checkout session %s: %s do not match what was sold; nothing credited",
                    stored["id"], ", ".join(problems))
        return None
    return stored


def _credit(conn: Conn, plans: Plans, event: dict, session: dict):
    stored = _ours(conn, session)
    if stored is None or stored["status"] == "paid":
        return None
    paid_at = _when(event)
    conn.execute(
        "UPDATE checkout_sessions SET status = 'paid', paid_at = %s, payment_intent = %s"
        " WHERE id = %s", (paid_at, session.get("payment_intent"), stored["id"]))
    ledger.credit(conn, stored["workspace_id"], stored["units"], f"credit pack {stored['pack']}",
                  ledger.credit_time(conn, stored["workspace_id"], paid_at),
                  event_id=event["id"], session_id=stored["id"],
                  payment_intent=session.get("payment_intent"))
    if session.get("payment_intent"):  # a refund or lost dispute that arrived first
        _take_back(conn, plans, session["payment_intent"], event["id"], paid_at)
    return ("credit_pack_purchased", str(stored["workspace_id"]),
            {"pack": stored["pack"], "units": stored["units"]})


def _checkout_completed(conn: Conn, plans: Plans, event: dict, session: dict):
    if session.get("payment_status") == "paid":
        return _credit(conn, plans, event, session)
    stored = _ours(conn, session)  # a delayed method: paid later, or not
    if stored is not None and stored["status"] == "open":
        conn.execute("UPDATE checkout_sessions SET status = 'awaiting_payment',"
                     " payment_intent = %s WHERE id = %s",
                     (session.get("payment_intent"), stored["id"]))
    return None


def _async_payment_failed(conn: Conn, plans: Plans, event: dict, session: dict):
    stored = _ours(conn, session)
    if stored is not None and stored["status"] != "paid":
        conn.execute("UPDATE checkout_sessions SET status = 'failed' WHERE id = %s",
                     (stored["id"],))
        log.warning("checkout session %s: the delayed payment failed", stored["id"])
    return None


def _reverse(conn: Conn, plans: Plans, event: dict, payment_intent: str | None,
             fraction: Decimal, why: str):
    """Record that Stripe reversed `fraction` of a payment (cumulative), and take back the
    credit it bought if the payment is recorded — else when it is. The workspace is locked
    before the reversal's row, in the order finishing jobs take them."""
    if not payment_intent:
        return None
    pack = conn.execute("SELECT workspace_id FROM checkout_sessions WHERE payment_intent = %s",
                        (payment_intent,)).fetchone()
    if pack is not None:
        lock_workspace(conn, pack["workspace_id"])
    conn.execute(
        "INSERT INTO credit_reversals (payment_intent, fraction, reason) VALUES (%s, %s, %s)"
        " ON CONFLICT (payment_intent) DO UPDATE SET updated_at = now(),"
        " fraction = greatest(credit_reversals.fraction, excluded.fraction),"
        " reason = excluded.reason", (payment_intent, min(Decimal(1), fraction), why))
    return _take_back(conn, plans, payment_intent, event["id"], _when(event))


def _take_back(conn: Conn, plans: Plans, payment_intent: str, key: str,
               now: datetime):
    """Take back what the payment's reversals call for, by the units ledger: the pack's credit
    that is free at once, what unfinished jobs hold as they give it back (the walk says what
    is used: credits are used after the included units). A period that has ended has no
    unused credit left. Serialised per payment by the session's row lock, and with the
    workspace's reservations by its lock."""
    pack = conn.execute("SELECT * FROM checkout_sessions WHERE payment_intent = %s"
                        " AND status = 'paid' FOR UPDATE", (payment_intent,)).fetchone()
    reversal = conn.execute("SELECT * FROM credit_reversals WHERE payment_intent = %s",
                            (payment_intent,)).fetchone()
    if pack is None or reversal is None:
        return None  # not (yet) a payment of ours: applied when it is credited
    workspace_id = pack["workspace_id"]
    lock_workspace(conn, workspace_id)
    period = period_start(pack["paid_at"])
    position = None
    if period_start(now) == period:
        walked = credit_position(conn, plans, workspace_id, period, now.date())
        pending = ledger.reserved(conn, workspace_id, period) - walked.used - walked.included_left
        position = ledger.Position(walked.credits_bought, walked.credits_used, max(0, pending))
    taken = ledger.take_back(conn, workspace_id, payment_intent, pack["units"],
                             Decimal(reversal["fraction"]), reversal["reason"], key, period,
                             position, now)
    log.warning("%s of credit pack %s: %d units taken back, %d owed by unfinished jobs"
                " (%d asked)", reversal["reason"], pack["id"], taken.now, taken.owed,
                taken.wanted)
    return ("credit_pack_reversed", str(workspace_id),
            {"pack": pack["pack"], "units": taken.now + taken.owed,
             "reason": reversal["reason"]})


def _refunded(conn: Conn, plans: Plans, event: dict, charge: dict):
    amount = int(charge.get("amount") or 0)
    refunded = int(charge.get("amount_refunded") or 0)  # a running total across refunds
    return _reverse(conn, plans, event, charge.get("payment_intent"),
                    Decimal(refunded) / amount if amount else Decimal(1), "refund")


def _dispute_closed(conn: Conn, plans: Plans, event: dict, dispute: dict):
    if dispute.get("status") != "lost":
        return None
    return _reverse(conn, plans, event, dispute.get("payment_intent"), Decimal(1),
                    "dispute lost")


def _invoice(conn: Conn, plans: Plans, event: dict, invoice: dict):
    conn.execute(
        "INSERT INTO invoices (id, workspace_id, status, amount_due, amount_paid, currency)"
        " SELECT %s, id, %s, %s, %s, %s FROM workspaces WHERE stripe_customer_id = %s"
        " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
        " amount_due = excluded.amount_due, amount_paid = excluded.amount_paid,"
        " updated_at = now()",
        (invoice["id"], invoice["status"], invoice.get("amount_due", 0),
         invoice.get("amount_paid", 0), invoice.get("currency", "usd"), invoice["customer"]))


def _payment_failed(conn: Conn, plans: Plans, event: dict, invoice: dict):
    _invoice(conn, plans, event, invoice | {"status": "payment_failed"})
    log.warning("invoice %s of customer %s: payment failed", invoice["id"], invoice["customer"])


HANDLERS = {
    "checkout.session.completed": _checkout_completed,
    "checkout.session.async_payment_succeeded": _credit,
    "checkout.session.async_payment_failed": _async_payment_failed,
    "charge.refunded": _refunded,
    "charge.dispute.closed": _dispute_closed,
    "invoice.finalized": _invoice,
    "invoice.paid": _invoice,
    "invoice.payment_failed": _payment_failed,
}
