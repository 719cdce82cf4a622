"""Where the failed-authentication throttle meets the key cache (ADR-20): a key that
authenticated successfully in the last hour is never refused by the throttle, however many
bad keys share its public prefix — whether its last success came from the database or from
the key cache.

No test sleeps an hour: an hour passing is the known-key mark expiring (it is deleted, or
given a short TTL), and the key cache's five minutes passing is its entry being deleted."""

from __future__ import annotations

import time

from enrichment.authguard import KeyCache


def h(key):
    return {"Authorization": f"Bearer {key}"}


def prefix_of(key: str) -> str:
    return key.split("_")[1]


def known_mark(db, prefix: str) -> str:
    return f"{db.auth_guard.prefix}:ok:{prefix}"


def flood(client, db, prefix: str, net: str) -> list[int]:
    """More bad keys with this public prefix than the throttle allows, each from its own
    address (so only the per-prefix count can refuse the real key afterwards). Started clear
    of a minute's end, so the flood and the owner's request share the throttle's window."""
    if time.time() % 60 > 57:
        time.sleep(60.05 - time.time() % 60)
    return [client.get("/api/v1/templates", environ_base={"REMOTE_ADDR": f"{net}.{i}"},
                       headers=h(f"lek_{prefix}_guess{i}")).status_code
            for i in range(db.settings.auth_fails_per_key + 5)]


def owner(client, key: str):
    return client.get("/api/v1/templates", environ_base={"REMOTE_ADDR": "10.200.0.1"},
                      headers=h(key))


def test_a_key_used_from_the_cache_past_the_hour_is_not_locked_out_by_a_prefix_flood(
        client, make_workspace, db):
    _, key = make_workspace()
    prefix = prefix_of(key)
    assert client.get("/api/v1/templates", headers=h(key)).status_code == 200  # database
    # An hour passes since that database lookup, the key in use all along: every request in
    # the last five minutes was answered from the key cache.
    db.redis.delete(known_mark(db, prefix))
    assert db.redis.type(KeyCache._key(prefix)) == b"hash"
    assert client.get("/api/v1/templates", headers=h(key)).status_code == 200  # cache
    db.redis.delete(KeyCache._key(prefix))  # the cache entry's five minutes are up
    statuses = flood(client, db, prefix, "10.1.0")
    assert statuses[-5:] == [429] * 5  # the flood itself is throttled
    resp = owner(client, key)
    assert resp.status_code == 200, (resp.status_code, resp.get_json())


def test_a_key_known_from_the_database_keeps_its_mark_fresh(client, make_workspace, db):
    _, key = make_workspace()
    prefix = prefix_of(key)
    assert client.get("/api/v1/templates", headers=h(key)).status_code == 200
    # Almost an hour later: the mark has 100 ms left; the cache entry expired, so the next
    # request is decided by the database (as a known key) — and authenticates successfully.
    db.redis.pexpire(known_mark(db, prefix), 100)
    db.redis.delete(KeyCache._key(prefix))
    assert client.get("/api/v1/templates", headers=h(key)).status_code == 200
    assert db.redis.pttl(known_mark(db, prefix)) > 3_000_000  # a new hour, not what was left
    db.redis.delete(KeyCache._key(prefix))
    statuses = flood(client, db, prefix, "10.2.0")
    assert statuses[-5:] == [429] * 5
    resp = owner(client, key)
    assert resp.status_code == 200, (resp.status_code, resp.get_json())


def test_every_cached_success_refreshes_the_mark_for_another_hour(client, make_workspace, db):
    _, key = make_workspace()
    prefix = prefix_of(key)
    assert client.get("/api/v1/templates", headers=h(key)).status_code == 200
    db.redis.pexpire(known_mark(db, prefix), 5_000)
    for _ in range(3):
        assert client.get("/api/v1/templates", headers=h(key)).status_code == 200  # cache
    assert db.redis.pttl(known_mark(db, prefix)) > 3_000_000


def test_a_key_idle_for_over_an_hour_is_throttled_like_any_other(client, make_workspace, db):
    """The contract's other edge: the mark is not eternal, a flood still holds an idle key's
    prefix for the rest of the minute."""
    _, key = make_workspace()
    prefix = prefix_of(key)
    assert client.get("/api/v1/templates", headers=h(key)).status_code == 200
    db.redis.delete(known_mark(db, prefix), KeyCache._key(prefix))  # an idle hour
    flood(client, db, prefix, "10.3.0")
    resp = owner(client, key)
    assert resp.status_code == 429 and resp.get_json()["type"].endswith(
        "authentication-throttled")


def test_a_revoked_key_with_a_fresh_mark_is_still_refused(client, make_workspace, db):
    """The mark only lets a key past the throttle: the database still decides."""
    from enrichment.workspaces import revoke_api_key

    _, key = make_workspace()
    assert client.get("/api/v1/templates", headers=h(key)).status_code == 200
    with db.db.connection() as conn:
        assert revoke_api_key(conn, db.key_cache, prefix_of(key))
    resp = client.get("/api/v1/templates", headers=h(key))
    assert resp.status_code == 401
