"""What leaves the service for the customer's side: webhook URLs refused at registration
(RFC 3986 syntax; no loopback, private, link-local, site-local or embedded-IPv4 forms of
them), a delivery that raises is a failed attempt on the retry schedule, and no CSV cell
written from an answer can become a spreadsheet formula (OWASP CSV injection)."""

from __future__ import annotations

import csv
import ipaddress
import uuid
from dataclasses import replace

import pytest

from enrichment import webhooks


def h(key):
    return {"Authorization": f"Bearer {key}"}


# --- CSV cells -----------------------------------------------------------------------------

# (an answer's text, the cell written for it)
CELLS = [
    ("=HYPERLINK(\"http://evil.example\",\"click\")",
     "'=HYPERLINK(\"http://evil.example\",\"click\")"),
    ("+1 555 0100", "'+1 555 0100"),
    ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
    ("@SUM(1+1)*cmd|' /C calc'!A0", "'@SUM(1+1)*cmd|' /C calc'!A0"),
    ("\t=1+1", "'\t=1+1"),
    ("\r=1+1", "'\r=1+1"),
    ("Acme Inc.", "Acme Inc."),
    ("a=b", "a=b"),
    (" =1", " =1"),
    ("", ""),
    ("'=already quoted", "'=already quoted"),
]


def _neutralisers():
    from enrichment_client import cli

    from enrichment import csvsafe

    return {"service": csvsafe.safe_cell, "client": cli.safe_cell}


@pytest.mark.parametrize("side", ["service", "client"])
@pytest.mark.parametrize(("answer", "written"), CELLS)
def test_a_cell_from_an_answer_never_starts_a_formula(side, answer, written):
    assert _neutralisers()[side](answer) == written


def test_the_client_neutralises_answers_and_writes_the_customers_columns_as_read(tmp_path):
    from enrichment_client import cli

    header = ["CRM id", "E-mail"]
    rows = [["=their own formula", "a@acme.com"], ["-7", "b@acme.com"], ["+3", "c@acme.com"]]
    job = {"job_id": "j1", "status": "succeeded", "match": True, "error": None,
           "result": {"fields": {"company": "=HYPERLINK(\"http://evil.example\",\"x\")",
                                 "title": "@Head of Sales", "phone": "+1 555 0100",
                                 "=field": "x"},
                      "citations": ["=cmd|' /C calc'!A0", "https://acme.com"]}}
    failed = {"job_id": "j2", "status": "failed", "match": None,
              "error": "-provider said =1+1", "result": None}
    refused = {"status": 422, "problem": {"detail": "=bad lead", "errors": []}}
    out = tmp_path / "out.csv"
    cli.write(str(out), header, rows, [{"job": job}, {"job": failed}, refused])
    with open(out, newline="", encoding="utf-8") as fh:
        written = list(csv.DictReader(fh))
    assert [(r["CRM id"], r["E-mail"]) for r in written] == [tuple(r) for r in rows]
    assert written[0]["company"] == "'=HYPERLINK(\"http://evil.example\",\"x\")"
    assert written[0]["title"] == "'@Head of Sales"
    assert written[0]["phone"] == "'+1 555 0100"
    assert written[0]["'=field"] == "x"  # a column named by an answer
    assert written[0]["citations"] == "'=cmd|' /C calc'!A0 | https://acme.com"
    assert (written[1]["status"], written[1]["error"]) == ("failed", "'-provider said =1+1")
    assert (written[2]["status"], written[2]["error"]) == ("rejected", "'=bad lead")


# --- webhook URLs --------------------------------------------------------------------------

# Each resolves without a name server (an address literal), so only the URL's form decides.
UNSENDABLE = [
    "http://127.0.0.1:9/a b",  # a space
    "http://127.0.0.1:9/a%20b c",
    "http://127.0.0.1:9/x\x00",  # control characters
    "http://127.0.0.1:9/x\r\nX-Injected: 1",
    "http://127.0.0.1:9/\tx",
    "http://127.0.0.1:9/x\x7f",
    "http://127.0.0.1:9/caf\u00e9",  # not RFC 3986 (an IRI): percent-encode it
    "http://127.0.0.1:9/x\\y",
    "http://127.0.0.1:9/%zz",  # a broken escape
    "http://127.0.0.1:9/%4",
    "http://127.0.0.1 :9/x",
    "http://127.0.0.1:0/x",  # no port 0
    "http://127.0.0.1:+9/x",
    "http://127.0.0.1:65536/x",
    "http://user@127.0.0.1:9/x",  # credentials
    "http://:pw@127.0.0.1:9/x",
    "http:///x",  # no host
    "http://:9/x",
    "127.0.0.1:9/x",  # not absolute
    "//127.0.0.1:9/x",
    "ftp://127.0.0.1:9/x",
    "http://[::1%25lo]:9/x",  # zone identifiers are not RFC 3986
    "http://[v1.x]:9/x",
    "http://127.0.0.1:9/x#a b",
]


@pytest.mark.parametrize("url", UNSENDABLE)
def test_a_url_that_cannot_be_sent_to_is_refused_even_where_private_ones_are_allowed(url):
    with pytest.raises(webhooks.BadWebhookUrl):
        webhooks.resolve(url, allow_private=True, timeout=2)


def test_registration_answers_422_for_a_url_that_cannot_be_sent_to(client, make_workspace):
    _, key = make_workspace()
    accepted = []
    for url in UNSENDABLE:
        resp = client.post("/api/v1/webhook-endpoints", headers=h(key),
                           json={"url": url, "events": ["job.succeeded"]})
        # A NUL is refused before any field is read: no body holding one is stored (400).
        if resp.status_code != (400 if "\x00" in url else 422):
            accepted.append((url, resp.status_code))
        else:
            assert resp.mimetype == "application/problem+json", url
    assert accepted == []
    for url in ("http://127.0.0.1:9/hooks?a=1&b=%20x#frag", "http://[::1]:9/",
                "http://127.0.0.1:/x", "HTTP://127.0.0.1:9/~user/(x);y=z,*!$'"):
        resp = client.post("/api/v1/webhook-endpoints", headers=h(key),
                           json={"url": url, "events": ["job.succeeded"]})
        assert resp.status_code == 201, (url, resp.get_json())


def _stored_endpoint(db, ws, url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """An endpoint stored as it is (as one registered before the checks was) with one
    message for it: (endpoint id, delivery id)."""
    with db.db.connection() as conn, conn.transaction():
        endpoint_id = conn.execute(
            "INSERT INTO webhook_endpoints (id, workspace_id, url, events, secret)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (uuid.uuid4(), ws.id, url, ["job.succeeded"], webhooks.new_secret())
        ).fetchone()["id"]
        [delivery_id] = webhooks.enqueue(conn, ws.id, "job.succeeded",
                                         {"job_id": "j", "livemode": True},
                                         db.clock())
    return endpoint_id, delivery_id


def _state(db, delivery_id, endpoint_id) -> tuple[dict, dict]:
    with db.db.connection() as conn:
        delivery = conn.execute("SELECT * FROM webhook_deliveries WHERE id = %s",
                                (delivery_id,)).fetchone()
        endpoint = conn.execute("SELECT * FROM webhook_endpoints WHERE id = %s",
                                (endpoint_id,)).fetchone()
    return delivery, endpoint


def test_a_stored_url_that_cannot_be_sent_to_fails_its_attempts_on_the_schedule(
        make_workspace, db):
    ws, _ = make_workspace()
    endpoint_id, delivery_id = _stored_endpoint(db, ws, "http://127.0.0.1:9/a b")
    attempt = webhooks.deliver(db.db, delivery_id, allow_private=True, concurrency=2)
    assert attempt.outcome == "retry", attempt
    delivery, endpoint = _state(db, delivery_id, endpoint_id)
    assert delivery["status"] == "pending" and delivery["lease_token"] is None
    assert delivery["last_error"] and delivery["attempts"] == 1
    assert endpoint["failing_since"] is not None and endpoint["last_failure_at"] is not None


def test_any_error_in_an_attempt_is_a_failed_attempt_never_a_stuck_delivery(
        make_workspace, db, monkeypatch):
    ws, _ = make_workspace()
    endpoint_id, delivery_id = _stored_endpoint(db, ws, "http://127.0.0.1:9/hooks")

    def broken(*_args):
        raise RuntimeError("a bug in the sender")

    monkeypatch.setattr(webhooks, "_post", broken)
    attempt = webhooks.deliver(db.db, delivery_id, allow_private=True, concurrency=2)
    assert attempt.outcome == "retry" and attempt.retry_in is not None, attempt
    delivery, endpoint = _state(db, delivery_id, endpoint_id)
    assert delivery["status"] == "pending" and delivery["last_error"] == "RuntimeError"
    assert endpoint["last_failure_at"] is not None
    # The last attempt of the schedule gives the message up, as any other failure does.
    with db.db.connection() as conn:
        conn.execute("UPDATE webhook_deliveries SET attempts = %s, next_attempt_at = now()"
                     " WHERE id = %s", (len(webhooks.RETRY_DELAYS), delivery_id))
    assert webhooks.deliver(db.db, delivery_id, allow_private=True,
                            concurrency=2).outcome == "failed"
    delivery, _ = _state(db, delivery_id, endpoint_id)
    assert delivery["status"] == "failed" and delivery["lease_until"] is None


# --- the SSRF guard ------------------------------------------------------------------------

NOT_PUBLIC = [
    # IPv4
    "0.0.0.0", "0.1.2.3", "10.0.0.7", "100.64.0.1", "100.127.255.254", "127.0.0.1",
    "127.255.255.255", "169.254.169.254", "172.16.0.1", "172.31.255.255", "192.0.0.8",
    "192.0.0.9", "192.0.0.170", "192.0.2.1", "192.88.99.1", "192.168.1.1", "198.18.0.1",
    "198.19.255.255", "198.51.100.7", "203.0.113.7", "224.0.0.1", "239.255.255.250",
    "240.0.0.1", "255.255.255.255",
    # IPv6
    "::", "::1", "::a00:7", "::8.8.8.8", "::127.0.0.1",  # unspecified, loopback, IPv4-compatible
    "::ffff:10.0.0.7", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:192.0.0.8",
    "64:ff9b::a00:7", "64:ff9b::7f00:1", "64:ff9b::c000:8",  # NAT64 of private IPv4
    "64:ff9b:1::808:808", "64:ff9b:1:ffff::1",  # local-use NAT64
    "100::1", "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:2::1", "2001:10::1",
    "2001:1ff::1", "2001:db8::1", "2002:a00:7::1", "2002:7f00:1::1", "2002:c000:8::1",
    "fc00::1", "fd12:3456::1", "fe80::1", "febf::1", "fec0::1", "feff::1", "ff02::1",
    "ff0e::1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "192.0.1.1", "100.128.0.1", "172.32.0.1",
          "2606:4700:4700::1111", "2a00:1450:4001:82a::200e", "::ffff:8.8.8.8",
          "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_the_guard_refuses_every_special_purpose_address(address):
    assert not webhooks._public(ipaddress.ip_address(address)), address


@pytest.mark.parametrize("address", PUBLIC)
def test_the_guard_allows_public_addresses(address):
    assert webhooks._public(ipaddress.ip_address(address)), address


def test_registration_refuses_special_purpose_addresses_with_a_problem(client, make_workspace,
                                                                        db):
    from api import create_app

    _, key = make_workspace()
    strict = create_app(services=replace(db, settings=replace(
        db.settings, webhooks_allow_private_urls=False))).test_client()
    accepted = []
    for address in NOT_PUBLIC:
        host = f"[{address}]" if ":" in address else address
        resp = strict.post("/api/v1/webhook-endpoints", headers=h(key),
                           json={"url": f"https://{host}/hooks", "events": ["job.succeeded"]})
        if resp.status_code != 422:
            accepted.append((address, resp.status_code))
            continue
        problem = resp.get_json()
        assert resp.mimetype == "application/problem+json", address
        assert [e["field"] for e in problem["errors"]] == ["url"], problem
        assert address not in problem["errors"][0]["message"]  # never names the address
    assert accepted == []
    resp = strict.post("/api/v1/webhook-endpoints", headers=h(key),
                       json={"url": "https://[2606:4700:4700::1111]/hooks",
                             "events": ["job.succeeded"]})
    assert resp.status_code == 201, resp.get_json()
