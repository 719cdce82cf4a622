"""A small stateful fake of the Stripe API for tests and development: the real `stripe`
library talks to it through STRIPE_API_BASE. (stripe-mock and localstripe do not know meters,
meter events or credit grants.)

What it keeps: customers (and their deletion), products, prices (lookup keys), subscriptions
(and price changes), billing meters and meter events (identifier dedup, event summaries),
checkout sessions, invoice items, invoices and their preview, and webhooks signed like
Stripe's. Form-encoded bodies with bracket keys, `object` fields, list envelopes, Stripe's
error shape, and Idempotency-Key replay.

Stripe's documented limits, enforced so that a green test means something:
  - `GET /v1/prices`: at most 10 `lookup_keys` per call (400 otherwise);
  - a price's amount never changes (`POST /v1/prices/{id}` takes `active` and metadata only);
    a lookup key in use moves to a new price only with `transfer_lookup_key`; an archived
    (inactive) price is refused for a subscription's items;
  - meter events: `timestamp` within the past 35 calendar days and at most 5 minutes ahead
    (400, param `timestamp`); `identifier` unique (400 `resource_already_exists`);
  - meter event summaries: `start_time` and `end_time` aligned with minute boundaries (400),
    and eventually consistent — `summary_lag_seconds` (config) holds back recent events.
One deliberate difference: a meter event for a deleted or unknown customer is refused at once
(400 `resource_missing`) where Stripe accepts it and reports the error asynchronously in a
`billing.meter.error_report_triggered` event — both leave the usage unbilled, and
reconciliation (Stripe's meter summary below what was sent) catches the asynchronous case.

Test-only endpoints:
  POST /_test/checkout_sessions/<id>/complete {"async": false}
        → `checkout.session.completed` (paid; with "async": true unpaid, as SEPA/ACH)
  POST /_test/checkout_sessions/<id>/async_result {"succeeded": true}
        → `checkout.session.async_payment_succeeded` / `_failed`
  POST /_test/charges/refund {"payment_intent": …, "amount": cents}  → `charge.refunded`
  POST /_test/disputes {"payment_intent": …, "status": "lost"}         → `charge.dispute.closed`
  POST /_test/invoices                          → finalize/pay an invoice, signed events back
  POST /_test/config {"lose_next_meter_event_response": true, "forget_idempotency": true,
                      "summary_lag_seconds": 0,
                      "webhook_url": …, "webhook_secret": …, "fail_all": 503}
  GET  /_test/state                             → everything it holds
Every signed event is returned to the caller and, when webhook_url is set, delivered there.

Its clock: Stripe's own. Everything it dates or judges — a meter event's timestamp window,
`created`, a subscription item's price history, invoice periods, webhook signatures — reads
`now()`, real time unless set: `create_stripe_fake(now=…)` or `StripeFakeServer.now = …` (a
function returning epoch seconds), so tests run Stripe at the same instant as the services'
injected clock.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import requests
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from .serving import ThreadedServer

BRACKET = re.compile(r"\[([^\]]*)\]")


def unflatten(items) -> dict:
    """Stripe's form encoding (`a[b][0][c]=v`) back into nested dicts and lists."""
    out: dict = {}
    for key, value in items:
        head = key.split("[", 1)[0]
        path = [head, *BRACKET.findall(key[len(head):])]
        node = out
        for part, nxt in zip(path, [*path[1:], None], strict=True):
            if nxt is None:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _lists(out)


def _lists(node):
    if isinstance(node, dict):
        node = {k: _lists(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    t = int(timestamp if timestamp is not None else time.time())
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def create_stripe_fake(now: Callable[[], float] | None = None) -> Flask:
    """The fake; `now` is its clock (epoch seconds), real time by default — settable later
    through `app.extensions["stripe_fake_clock"]["now"]` (StripeFakeServer.now)."""
    app = Flask(__name__)
    clock = {"now": now or time.time}
    app.extensions["stripe_fake_clock"] = clock

    def stamp_now() -> int:
        """Stripe's time, in whole seconds."""
        return int(clock["now"]())

    lock = threading.RLock()
    db: dict[str, dict] = defaultdict(dict)  # kind -> id -> object
    meter_events: list[dict] = []
    identifiers: set[str] = set()
    idempotent: dict[str, tuple[int, dict]] = {}
    config = {"lose_next_meter_event_response": False, "forget_idempotency": False,
              "webhook_url": None, "webhook_secret": "whsec_test", "requests": 0,
              "fail_all": 0, "delay_seconds": 0.0, "summary_lag_seconds": 0}
    app.extensions["stripe_fake"] = (db, meter_events, config, identifiers)

    def new_id(prefix: str) -> str:
        return f"{prefix}_{secrets.token_hex(8)}"

    def error(status: int, message: str, code: str | None = None, param: str | None = None):
        err = {"type": "invalid_request_error", "message": message}
        if code:
            err["code"] = code
        if param:
            err["param"] = param
        return jsonify({"error": err}), status

    def listing(objects, url: str):
        return jsonify({"object": "list", "data": objects, "has_more": False, "url": url})

    def store(kind: str, obj: dict) -> dict:
        db[kind][obj["id"]] = obj
        return obj

    @app.before_request
    def authenticate_and_replay():
        if request.path.startswith("/_test"):
            return None
        config["requests"] += 1
        if config["delay_seconds"]:
            time.sleep(config["delay_seconds"])
        if config["fail_all"]:
            return jsonify({"error": {"type": "api_error",
                                      "message": "simulated Stripe outage"}}), config["fail_all"]
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer sk_"):
            return jsonify({"error": {"type": "invalid_request_error",
                                      "message": "Invalid API Key provided"}}), 401
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key and not config["forget_idempotency"]:
            with lock:
                if key in idempotent:
                    status, body, sent = idempotent[key]
                    if sent != request.get_data():  # as Stripe: a key is for one request
                        return jsonify({"error": {
                            "type": "idempotency_error",
                            "message": "Keys for idempotent requests can only be used with "
                                       "the same parameters they were first used with."}}), 400
                    resp = jsonify(body)
                    resp.status_code = status
                    resp.headers["Idempotent-Replayed"] = "true"
                    return resp
        return None

    @app.after_request
    def remember(resp):
        key = request.headers.get("Idempotency-Key")
        # Stripe saves the result of a request that began executing — a 500 included — and
        # replays it to every retry with the same key.
        if (request.method == "POST" and key and not request.path.startswith("/_test")
                and resp.is_json):
            with lock:
                idempotent.setdefault(key, (resp.status_code, resp.get_json(),
                                            request.get_data()))
        return resp

    def params() -> dict:
        return unflatten(request.form.items(multi=True)) if request.form else unflatten(
            request.args.items(multi=True))

    # --- customers, products, prices, subscriptions ------------------------------------
    @app.post("/v1/customers")
    def create_customer():
        p = params()
        return jsonify(store("customers", {
            "id": new_id("cus"), "object": "customer", "name": p.get("name"),
            "email": p.get("email"), "metadata": p.get("metadata", {}),
            "created": stamp_now()}))

    @app.delete("/v1/customers/<cid>")
    def delete_customer(cid):
        obj = db["customers"].get(cid)
        if obj is None or obj.get("deleted"):
            return error(404, f"No such customer: '{cid}'", "resource_missing", "id")
        obj["deleted"] = True
        return jsonify({"id": cid, "object": "customer", "deleted": True})

    def live_customer(cid) -> bool:
        obj = db["customers"].get(cid)
        return obj is not None and not obj.get("deleted")

    @app.get("/v1/customers/<cid>")
    def get_customer(cid):
        obj = db["customers"].get(cid)
        return jsonify(obj) if obj else error(404, f"No such customer: '{cid}'",
                                              "resource_missing", "id")

    @app.post("/v1/products")
    def create_product():
        p = params()
        return jsonify(store("products", {"id": p.get("id") or new_id("prod"),
                                          "object": "product", "name": p.get("name"),
                                          "metadata": p.get("metadata", {}), "active": True}))

    @app.post("/v1/prices")
    def create_price():
        p = params()
        lookup = p.get("lookup_key")
        holder = next((x for x in db["prices"].values()
                       if lookup and x.get("lookup_key") == lookup), None)
        if holder is not None and p.get("transfer_lookup_key") != "true":
            return error(400, f"A price with lookup_key {lookup} already exists.",
                         "lookup_key_exists", "lookup_key")
        if holder is not None:  # the new price takes the key over
            holder["lookup_key"] = None
        recurring = p.get("recurring")
        return jsonify(store("prices", {
            "id": new_id("price"), "object": "price", "product": p.get("product"),
            "currency": p.get("currency", "usd"), "lookup_key": lookup,
            "unit_amount": int(p["unit_amount"]) if "unit_amount" in p else None,
            "unit_amount_decimal": p.get("unit_amount_decimal") or p.get("unit_amount"),
            "recurring": recurring, "metadata": p.get("metadata", {}), "active": True}))

    @app.post("/v1/prices/<pid>")
    def update_price(pid):
        """Only what Stripe lets change: `active`, metadata — never the amount."""
        price, p = db["prices"].get(pid), params()
        if price is None:
            return error(404, f"No such price: '{pid}'", "resource_missing", "id")
        if {"unit_amount", "unit_amount_decimal", "currency", "recurring"} & set(p):
            return error(400, "Received unknown parameter: a price's amount cannot change;"
                         " create a new price", "parameter_unknown", sorted(p)[0])
        if "active" in p:
            price["active"] = p["active"] == "true"
        price["metadata"] = {**price.get("metadata", {}), **p.get("metadata", {})}
        return jsonify(price)

    def inactive(prices) -> bool:
        return any(x is not None and not x.get("active", True) for x in prices)

    @app.get("/v1/prices")
    def list_prices():
        keys = params().get("lookup_keys") or []
        keys = keys if isinstance(keys, list) else [keys]
        if len(keys) > 10:
            return error(400, "You may pass at most 10 lookup_keys.", "parameter_invalid_array",
                         "lookup_keys")
        found = [x for x in db["prices"].values() if not keys or x.get("lookup_key") in keys]
        return listing(found, "/v1/prices")

    @app.post("/v1/subscriptions")
    def create_subscription():
        p = params()
        if p.get("customer") not in db["customers"]:
            return error(400, "No such customer", "resource_missing", "customer")
        items = [{"id": new_id("si"), "object": "subscription_item",
                  "price": db["prices"].get(i.get("price"))} for i in p.get("items", [])]
        if any(i["price"] is None for i in items):
            return error(400, "No such price", "resource_missing", "items")
        if inactive(i["price"] for i in items):
            return error(400, "The price specified is inactive. This field only accepts active"
                         " prices.", "resource_missing", "items")
        return jsonify(store("subscriptions", {
            "id": new_id("sub"), "object": "subscription", "customer": p["customer"],
            "status": "active", "items": {"object": "list", "data": items},
            "metadata": p.get("metadata", {}),
            "start_date": int(p.get("backdate_start_date") or stamp_now()),
            "current_period_start": int(p.get("backdate_start_date") or stamp_now())}))

    @app.get("/v1/subscriptions/<sid>")
    def get_subscription(sid):
        sub = db["subscriptions"].get(sid)
        return jsonify(sub) if sub else error(404, f"No such subscription: '{sid}'",
                                              "resource_missing", "id")

    @app.post("/v1/subscriptions/<sid>")
    def update_subscription(sid):
        sub = db["subscriptions"].get(sid)
        if sub is None:
            return error(404, f"No such subscription: '{sid}'", "resource_missing", "id")
        p = params()
        items = {i["id"]: i for i in sub["items"]["data"]}
        for change in p.get("items", []):
            price = db["prices"].get(change.get("price"))
            if change.get("id") not in items or price is None:
                return error(400, "No such subscription item or price", "resource_missing",
                             "items")
            if inactive([price]):
                return error(400, "The price specified is inactive. This field only accepts"
                             " active prices.", "resource_missing", "items")
            item = items[change["id"]]
            item.setdefault("history", []).append(
                {"price": item["price"]["id"], "until": stamp_now()})
            item["price"] = price
        sub["metadata"] = {**sub.get("metadata", {}), **p.get("metadata", {})}
        return jsonify(sub)

    # --- meters --------------------------------------------------------------------------
    @app.post("/v1/billing/meters")
    def create_meter():
        p = params()
        name = p.get("event_name")
        if any(m["event_name"] == name for m in db["meters"].values()):
            return error(400, f"A meter with event_name {name} already exists.",
                         "resource_already_exists", "event_name")
        return jsonify(store("meters", {
            "id": new_id("mtr"), "object": "billing.meter", "event_name": name,
            "display_name": p.get("display_name"), "status": "active",
            "default_aggregation": p.get("default_aggregation", {"formula": "sum"}),
            "customer_mapping": p.get("customer_mapping", {
                "event_payload_key": "stripe_customer_id", "type": "by_id"}),
            "value_settings": p.get("value_settings", {"event_payload_key": "value"})}))

    @app.get("/v1/billing/meters")
    def list_meters():
        return listing(list(db["meters"].values()), "/v1/billing/meters")

    @app.post("/v1/billing/meter_events")
    def create_meter_event():
        p = params()
        meter = next((m for m in db["meters"].values()
                      if m["event_name"] == p.get("event_name")), None)
        if meter is None:
            return error(400, "No active meter for this event_name", "resource_missing")
        payload = p.get("payload") or {}
        ident = p.get("identifier") or new_id("mev")
        now = stamp_now()  # judged by Stripe's clock, as Stripe does
        stamp = int(p.get("timestamp") or now)
        if stamp < now - 35 * 86400 or stamp > now + 300:
            return error(400, "Timestamp must be within the past 35 calendar days or up to 5 "
                         "minutes in the future.", "parameter_invalid_integer", "timestamp")
        if not live_customer(payload.get("stripe_customer_id")):
            return error(400, "No such customer: "
                         f"'{payload.get('stripe_customer_id')}'", "resource_missing",
                         "payload[stripe_customer_id]")
        with lock:
            if ident in identifiers:
                return error(400, f"An event with identifier {ident} already exists.",
                             "resource_already_exists", "identifier")
            identifiers.add(ident)
            event = {"object": "billing.meter_event", "event_name": p["event_name"],
                     "identifier": ident, "payload": payload,
                     "timestamp": stamp,
                     "created": stamp_now(), "livemode": False}
            meter_events.append(event)
        if config["lose_next_meter_event_response"]:
            config["lose_next_meter_event_response"] = False
            return error(500, "simulated: accepted, but the response was lost")
        return jsonify(event)

    @app.get("/v1/billing/meters/<mid>/event_summaries")
    def event_summaries(mid):
        p = params()
        meter = db["meters"].get(mid)
        if meter is None:
            return error(404, "No such meter", "resource_missing")
        start, end = int(p["start_time"]), int(p["end_time"])
        for name, bound in (("start_time", start), ("end_time", end)):
            if bound % 60:
                return error(400, f"{name} must be aligned with minute boundaries.",
                             "parameter_invalid_integer", name)
        # Summaries are eventually consistent: an event is aggregated some time after it
        # was accepted (summary_lag_seconds, by Stripe's clock).
        settled = stamp_now() - config["summary_lag_seconds"]
        value = sum(float(e["payload"].get("value", 0)) for e in meter_events
                    if e["event_name"] == meter["event_name"]
                    and e["payload"].get("stripe_customer_id") == p.get("customer")
                    and start <= e["timestamp"] < end and e["created"] <= settled)
        return listing([{"id": new_id("mtrusg"), "object": "billing.meter_event_summary",
                         "aggregated_value": value, "start_time": start, "end_time": end,
                         "meter": mid}], f"/v1/billing/meters/{mid}/event_summaries")

    # --- checkout ------------------------------------------------------------------------
    @app.post("/v1/checkout/sessions")
    def create_checkout():
        p = params()
        sid = new_id("cs_test")
        amount = 0
        for line in p.get("line_items", []):
            price = db["prices"].get(line.get("price"))
            if price is None:
                return error(400, "No such price", "resource_missing", "line_items")
            amount += int(price["unit_amount"] or 0) * int(line.get("quantity", 1))
        return jsonify(store("checkout_sessions", {
            "id": sid, "object": "checkout.session", "mode": p.get("mode"),
            "amount_total": amount, "currency": "usd", "payment_intent": None,
            "customer": p.get("customer"), "client_reference_id": p.get("client_reference_id"),
            "metadata": p.get("metadata", {}), "line_items": p.get("line_items"),
            "status": "open", "payment_status": "unpaid",
            "success_url": p.get("success_url"), "cancel_url": p.get("cancel_url"),
            "url": f"{request.host_url}pay/{sid}"}))

    @app.post("/v1/invoiceitems")
    def create_invoice_item():
        p = params()
        if not live_customer(p.get("customer")):
            return error(400, "No such customer", "resource_missing", "customer")
        return jsonify(store("invoice_items", {
            "id": new_id("ii"), "object": "invoiceitem", "customer": p["customer"],
            "amount": int(p["amount"]), "currency": p.get("currency", "usd"),
            "description": p.get("description")}))

    # --- invoices ------------------------------------------------------------------------
    def price_at(item: dict, when: int) -> dict:
        """The item's price at a moment (items remember the prices they had)."""
        for change in item.get("history", []):
            if when < change["until"]:
                return db["prices"][change["price"]]
        return item["price"]

    def overage_lines(customer: str) -> list[dict]:
        lines = []
        for sub in db["subscriptions"].values():
            if sub["customer"] != customer:
                continue
            for item in sub["items"]["data"]:
                price = item["price"]
                usage = (price.get("recurring") or {}).get("usage_type")
                if usage != "metered":
                    lines.append({"object": "line_item", "description": price.get("lookup_key"),
                                  "quantity": 1, "amount": int(price["unit_amount"] or 0),
                                  "pricing": {"price_details": {"price": price["id"]}}})
                    continue
                # Usage is priced at the price the item had when it happened.
                meter = db["meters"].get(price["recurring"].get("meter"))
                by_price: dict[str, int] = defaultdict(int)
                for e in meter_events:
                    if (meter and e["event_name"] == meter["event_name"]
                            and e["payload"].get("stripe_customer_id") == customer):
                        by_price[price_at(item, e["timestamp"])["id"]] += int(
                            float(e["payload"].get("value", 0)))
                for price_id, qty in by_price.items():
                    at = db["prices"][price_id]
                    lines.append({"object": "line_item", "description": at.get("lookup_key"),
                                  "quantity": qty,
                                  "amount": round(float(at["unit_amount_decimal"]) * qty),
                                  "pricing": {"price_details": {"price": price_id}}})
        for ii in db["invoice_items"].values():
            if ii["customer"] == customer:
                lines.append({"object": "line_item", "description": ii["description"],
                              "quantity": 1, "amount": ii["amount"]})
        return lines

    def invoice(customer: str, status: str) -> dict:
        lines = overage_lines(customer)
        total = sum(line["amount"] for line in lines)
        return {"id": new_id("in") if status != "draft" else None, "object": "invoice",
                "customer": customer, "status": status, "currency": "usd",
                "amount_due": total, "amount_paid": total if status == "paid" else 0,
                "total": total, "lines": {"object": "list", "data": lines},
                "period_start": stamp_now() - 86400 * 30, "period_end": stamp_now(),
                "hosted_invoice_url": None, "created": stamp_now()}

    @app.post("/v1/invoices/create_preview")
    def preview_invoice():
        customer = params().get("customer")
        if customer not in db["customers"]:
            return error(400, "No such customer", "resource_missing", "customer")
        return jsonify(invoice(customer, "draft"))

    @app.get("/v1/invoices")
    def list_invoices():
        customer = params().get("customer")
        found = [i for i in db["invoices"].values() if not customer or i["customer"] == customer]
        return listing(sorted(found, key=lambda i: -i["created"]), "/v1/invoices")

    # --- webhooks (test-only triggers) ---------------------------------------------------
    def deliver(event_type: str, obj: dict) -> dict:
        event = {"id": new_id("evt"), "object": "event", "type": event_type,
                 "api_version": "2025-01-01", "created": stamp_now(),
                 "data": {"object": obj}, "livemode": False}
        payload = json.dumps(event)
        signature = sign(payload, config["webhook_secret"], timestamp=stamp_now())
        if config["webhook_url"]:
            requests.post(config["webhook_url"], data=payload, timeout=5, headers={
                "Stripe-Signature": signature, "Content-Type": "application/json"})
        return {"event": event, "payload": payload, "signature": signature}

    @app.post("/_test/checkout_sessions/<sid>/complete")
    def complete_checkout(sid):
        session = db["checkout_sessions"].get(sid)
        if session is None:
            return error(404, "No such checkout session", "resource_missing")
        delayed = (request.get_json(silent=True) or {}).get("async", False)
        session.update(status="complete", payment_intent=new_id("pi"),
                       payment_status="unpaid" if delayed else "paid")
        return jsonify(deliver("checkout.session.completed", dict(session)))

    @app.post("/_test/checkout_sessions/<sid>/async_result")
    def async_result(sid):
        session = db["checkout_sessions"].get(sid)
        if session is None:
            return error(404, "No such checkout session", "resource_missing")
        succeeded = (request.get_json(silent=True) or {}).get("succeeded", True)
        session["payment_status"] = "paid" if succeeded else "unpaid"
        kind = "succeeded" if succeeded else "failed"
        return jsonify(deliver(f"checkout.session.async_payment_{kind}", dict(session)))

    def paid_session(intent: str) -> dict | None:
        return next((x for x in db["checkout_sessions"].values()
                     if x.get("payment_intent") == intent), None)

    @app.post("/_test/charges/refund")
    def refund():
        p = request.get_json(force=True)
        session = paid_session(p["payment_intent"])
        if session is None:
            return error(404, "No such payment intent", "resource_missing")
        charge = db["charges"].setdefault(p["payment_intent"], {
            "id": new_id("ch"), "object": "charge", "payment_intent": p["payment_intent"],
            "amount": session["amount_total"], "amount_refunded": 0, "currency": "usd"})
        charge["amount_refunded"] = min(charge["amount"], charge["amount_refunded"] + int(
            p.get("amount", charge["amount"])))
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        return jsonify(deliver("charge.refunded", dict(charge)))

    @app.post("/_test/disputes")
    def dispute():
        p = request.get_json(force=True)
        session = paid_session(p["payment_intent"])
        if session is None:
            return error(404, "No such payment intent", "resource_missing")
        return jsonify(deliver("charge.dispute.closed", {
            "id": new_id("dp"), "object": "dispute", "payment_intent": p["payment_intent"],
            "amount": session["amount_total"], "status": p.get("status", "lost")}))

    @app.post("/_test/invoices")
    def test_invoice():
        p = request.get_json(force=True)
        inv = store("invoices", invoice(p["customer"], "open"))
        out = [deliver("invoice.finalized", dict(inv))]
        if p.get("pay", True):
            inv.update(status="paid", amount_paid=inv["amount_due"])
            out.append(deliver("invoice.paid", dict(inv)))
        else:
            out.append(deliver("invoice.payment_failed", dict(inv)))
        return jsonify(out)

    @app.route("/_test/config", methods=["GET", "POST"])
    def test_config():
        if request.method == "POST":
            config.update(request.get_json(force=True))
        return jsonify(config)

    @app.get("/_test/state")
    def test_state():
        return jsonify({kind: list(objs.values()) for kind, objs in db.items()} |
                       {"meter_events": meter_events})

    return app


class StripeFakeServer(ThreadedServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 now: Callable[[], float] | None = None):
        super().__init__(create_stripe_fake(now), host, port)

    @property
    def now(self) -> Callable[[], float]:
        """The fake's clock (epoch seconds): Stripe's "now"."""
        return self.app.extensions["stripe_fake_clock"]["now"]

    @now.setter
    def now(self, clock: Callable[[], float] | None) -> None:
        """Set Stripe's clock; None is real time again."""
        self.app.extensions["stripe_fake_clock"]["now"] = clock or time.time

    @property
    def config(self) -> dict:
        return self.app.extensions["stripe_fake"][2]

    @property
    def meter_events(self) -> list[dict]:
        return self.app.extensions["stripe_fake"][1]

    def forget_identifiers(self) -> None:
        """What Stripe does after its deduplication window (at least 24 h)."""
        self.app.extensions["stripe_fake"][3].clear()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Stripe API")
    parser.add_argument("--port", type=int, default=12111)
    args = parser.parse_args()
    print(f"fake Stripe on http://127.0.0.1:{args.port}", flush=True)
    make_server("127.0.0.1", args.port, create_stripe_fake(), threaded=True).serve_forever()


if __name__ == "__main__":
    main()
