"""A small stateful fake of the Stripe API for tests and development: the real `stripe`
library talks to it through STRIPE_API_BASE. (stripe-mock and localstripe do not know meters,
meter events or credit grants.)

What it keeps: customers, products, prices (lookup keys), subscriptions, billing meters and
meter events (identifier dedup, event summaries), checkout sessions, invoices and their preview,
and webhooks signed like Stripe's. Form-encoded bodies with bracket keys, `object` fields, list
envelopes, Stripe's error shape, and Idempotency-Key replay.

Test-only endpoints:
  POST /_test/checkout_sessions/<id>/complete   → the signed `checkout.session.completed`
                                                  event (also delivered to webhook_url if set)
  POST /_test/invoices                          → finalize/pay an invoice, signed events back
  POST /_test/config {"lose_next_meter_event_response": true, "forget_idempotency": true,
                      "webhook_url": …, "webhook_secret": …}
  GET  /_test/state                             → everything it holds
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


def create_stripe_fake() -> Flask:
    app = Flask(__name__)
    lock = threading.RLock()
    db: dict[str, dict] = defaultdict(dict)  # kind -> id -> object
    meter_events: list[dict] = []
    identifiers: set[str] = set()
    idempotent: dict[str, tuple[int, dict]] = {}
    config = {"lose_next_meter_event_response": False, "forget_idempotency": False,
              "webhook_url": None, "webhook_secret": "whsec_test", "requests": 0}
    app.extensions["stripe_fake"] = (db, meter_events, config)

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
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer sk_"):
            return jsonify({"error": {"type": "invalid_request_error",
                                      "message": "Invalid API Key provided"}}), 401
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key and not config["forget_idempotency"]:
            with lock:
                if key in idempotent:
                    status, body = idempotent[key]
                    resp = jsonify(body)
                    resp.status_code = status
                    resp.headers["Idempotent-Replayed"] = "true"
                    return resp
        return None

    @app.after_request
    def remember(resp):
        key = request.headers.get("Idempotency-Key")
        if (request.method == "POST" and key and not request.path.startswith("/_test")
                and resp.status_code < 500 and resp.is_json):
            with lock:
                idempotent.setdefault(key, (resp.status_code, resp.get_json()))
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
            "created": int(time.time())}))

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
        if lookup and any(x.get("lookup_key") == lookup for x in db["prices"].values()):
            return error(400, f"A price with lookup_key {lookup} already exists.",
                         "lookup_key_exists", "lookup_key")
        recurring = p.get("recurring")
        return jsonify(store("prices", {
            "id": new_id("price"), "object": "price", "product": p.get("product"),
            "currency": p.get("currency", "usd"), "lookup_key": lookup,
            "unit_amount": int(p["unit_amount"]) if "unit_amount" in p else None,
            "unit_amount_decimal": p.get("unit_amount_decimal") or p.get("unit_amount"),
            "recurring": recurring, "metadata": p.get("metadata", {}), "active": True}))

    @app.get("/v1/prices")
    def list_prices():
        keys = params().get("lookup_keys") or []
        keys = keys if isinstance(keys, list) else [keys]
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
        return jsonify(store("subscriptions", {
            "id": new_id("sub"), "object": "subscription", "customer": p["customer"],
            "status": "active", "items": {"object": "list", "data": items},
            "metadata": p.get("metadata", {}), "current_period_start": int(time.time())}))

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
        with lock:
            if ident in identifiers:
                return error(400, f"An event with identifier {ident} already exists.",
                             "resource_already_exists", "identifier")
            identifiers.add(ident)
            event = {"object": "billing.meter_event", "event_name": p["event_name"],
                     "identifier": ident, "payload": payload,
                     "timestamp": int(p.get("timestamp") or time.time()),
                     "created": int(time.time()), "livemode": False}
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
        value = sum(float(e["payload"].get("value", 0)) for e in meter_events
                    if e["event_name"] == meter["event_name"]
                    and e["payload"].get("stripe_customer_id") == p.get("customer")
                    and start <= e["timestamp"] < end)
        return listing([{"id": new_id("mtrusg"), "object": "billing.meter_event_summary",
                         "aggregated_value": value, "start_time": start, "end_time": end,
                         "meter": mid}], f"/v1/billing/meters/{mid}/event_summaries")

    # --- checkout ------------------------------------------------------------------------
    @app.post("/v1/checkout/sessions")
    def create_checkout():
        p = params()
        sid = new_id("cs_test")
        return jsonify(store("checkout_sessions", {
            "id": sid, "object": "checkout.session", "mode": p.get("mode"),
            "customer": p.get("customer"), "client_reference_id": p.get("client_reference_id"),
            "metadata": p.get("metadata", {}), "line_items": p.get("line_items"),
            "status": "open", "payment_status": "unpaid",
            "success_url": p.get("success_url"), "cancel_url": p.get("cancel_url"),
            "url": f"{request.host_url}pay/{sid}"}))

    # --- invoices ------------------------------------------------------------------------
    def overage_lines(customer: str) -> list[dict]:
        lines = []
        for sub in db["subscriptions"].values():
            if sub["customer"] != customer:
                continue
            for item in sub["items"]["data"]:
                price = item["price"]
                usage = (price.get("recurring") or {}).get("usage_type")
                if usage == "metered":
                    meter = db["meters"].get(price["recurring"].get("meter"))
                    qty = sum(int(float(e["payload"].get("value", 0))) for e in meter_events
                              if meter and e["event_name"] == meter["event_name"]
                              and e["payload"].get("stripe_customer_id") == customer)
                    cents = float(price["unit_amount_decimal"]) * qty
                else:
                    qty, cents = 1, float(price["unit_amount"] or 0)
                lines.append({"object": "line_item", "description": price.get("lookup_key"),
                              "quantity": qty, "amount": round(cents),
                              "pricing": {"price_details": {"price": price["id"]}}})
        return lines

    def invoice(customer: str, status: str) -> dict:
        lines = overage_lines(customer)
        total = sum(line["amount"] for line in lines)
        return {"id": new_id("in") if status != "draft" else None, "object": "invoice",
                "customer": customer, "status": status, "currency": "usd",
                "amount_due": total, "amount_paid": total if status == "paid" else 0,
                "total": total, "lines": {"object": "list", "data": lines},
                "period_start": int(time.time()) - 86400 * 30, "period_end": int(time.time()),
                "hosted_invoice_url": None, "created": int(time.time())}

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
                 "api_version": "2025-01-01", "created": int(time.time()),
                 "data": {"object": obj}, "livemode": False}
        payload = json.dumps(event)
        signature = sign(payload, config["webhook_secret"])
        if config["webhook_url"]:
            requests.post(config["webhook_url"], data=payload, timeout=5, headers={
                "Stripe-Signature": signature, "Content-Type": "application/json"})
        return {"event": event, "payload": payload, "signature": signature}

    @app.post("/_test/checkout_sessions/<sid>/complete")
    def complete_checkout(sid):
        session = db["checkout_sessions"].get(sid)
        if session is None:
            return error(404, "No such checkout session", "resource_missing")
        session.update(status="complete", payment_status="paid")
        return jsonify(deliver("checkout.session.completed", session))

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
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(create_stripe_fake(), host, port)

    @property
    def config(self) -> dict:
        return self.app.extensions["stripe_fake"][2]

    @property
    def meter_events(self) -> list[dict]:
        return self.app.extensions["stripe_fake"][1]


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Stripe API")
    parser.add_argument("--port", type=int, default=12111)
    args = parser.parse_args()
    print(f"fake Stripe on http://127.0.0.1:{args.port}", flush=True)
    make_server("127.0.0.1", args.port, create_stripe_fake(), threaded=True).serve_forever()


if __name__ == "__main__":
    main()
