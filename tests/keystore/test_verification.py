"""verify(): checksum pre-check, caches, revocation bound, IP allowlist and scopes."""

import time
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from keytrail.keystore import KeyStore
from keytrail.keystore.key_format import generate_key
from keytrail.schemas.usage import Outcome


@contextmanager
def counting_queries(store):
    """Collect the SELECT statements the store sends while the block runs."""
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(store.engine, "before_cursor_execute", count)


def test_a_mistyped_key_is_rejected_without_touching_the_database(store, project):
    _, secret = store.create_key("k", project)
    typo = secret[:12] + ("a" if secret[12] != "a" else "b") + secret[13:]
    with counting_queries(store) as statements:
        verdict = store.verify(typo)
        store.verify("not a key at all")
    assert verdict.outcome is Outcome.INVALID and verdict.key_id is None
    assert statements == []


def test_a_cached_verification_needs_no_query(store, project):
    record, secret = store.create_key("k", project)
    assert store.verify(secret).key_id == record.id
    with counting_queries(store) as statements:
        for _ in range(5):
            assert store.verify(secret).outcome is Outcome.OK
    assert statements == []


def test_an_unknown_well_formed_key_is_looked_up_once_then_negatively_cached(store):
    unknown = generate_key("live")
    with counting_queries(store) as statements:
        assert store.verify(unknown).outcome is Outcome.INVALID
        assert store.verify(unknown).outcome is Outcome.INVALID
    assert len(statements) == 1


def test_a_key_hashed_with_another_secret_does_not_verify(open_store, store_url, project):
    _, secret = open_store(store_url).create_key("k", project)
    same_secret = open_store(store_url, migrate=False)
    other_secret = open_store(store_url, migrate=False, secret=b"a-different-server-secret-123456")
    assert same_secret.verify(secret).outcome is Outcome.OK
    assert other_secret.verify(secret).outcome is Outcome.INVALID


def test_revocation_is_immediate_in_the_revoking_process_despite_a_warm_cache(store, project):
    record, secret = store.create_key("k", project)
    assert store.verify(secret).outcome is Outcome.OK  # now cached
    store.revoke(record.id)
    assert store.verify(secret).outcome is Outcome.REVOKED


def test_another_process_sees_a_revocation_once_its_cache_ttl_has_passed(open_store, store_url, project):
    admin = open_store(store_url)
    service = open_store(store_url, migrate=False, cache_ttl_seconds=0.3)
    record, secret = admin.create_key("k", project)
    assert service.verify(secret).outcome is Outcome.OK  # cached in the service
    admin.revoke(record.id)
    assert service.verify(secret).outcome is Outcome.OK  # within the stated bound: still the cached verdict
    time.sleep(0.4)
    assert service.verify(secret).outcome is Outcome.REVOKED


def test_a_key_past_its_expiry_is_expired_even_before_the_sweep(store, clock, project):
    _, secret = store.create_key("k", project, expires_in="1h")
    assert store.verify(secret).outcome is Outcome.OK
    clock.advance(hours=1)
    assert store.verify(secret).outcome is Outcome.EXPIRED  # the cached entry is re-evaluated at each call


def test_ip_allowlist(store, project):
    _, secret = store.create_key("k", project, ip_allowlist=["203.0.113.0/24", "2001:db8::/32"])
    assert store.verify(secret, client_ip="203.0.113.77").outcome is Outcome.OK
    assert store.verify(secret, client_ip="2001:db8::1").outcome is Outcome.OK
    refused = store.verify(secret, client_ip="198.51.100.1")
    assert refused.outcome is Outcome.DENIED and "allowlist" in refused.reason
    assert store.verify(secret, client_ip=None).outcome is Outcome.DENIED
    assert store.verify(secret, client_ip="not-an-ip").outcome is Outcome.DENIED


def test_a_key_without_allowlist_accepts_any_address(store, project):
    _, secret = store.create_key("k", project)
    assert store.verify(secret, client_ip="198.51.100.1").outcome is Outcome.OK


def test_scopes(store, project):
    _, reader = store.create_key("reader", project, scopes=["orders:read"])
    _, anything = store.create_key("all", project, scopes=["*"])
    _, unscoped = store.create_key("none", project)
    assert store.verify(reader, scope="orders:read").outcome is Outcome.OK
    assert store.verify(reader, scope="orders:write").outcome is Outcome.DENIED
    assert store.verify(anything, scope="orders:write").outcome is Outcome.OK
    assert store.verify(unscoped, scope="orders:read").outcome is Outcome.DENIED
    assert store.verify(unscoped).outcome is Outcome.OK


def test_status_outcomes_win_over_allowlist_and_scope_checks(store, project):
    record, secret = store.create_key("k", project, scopes=["a"], ip_allowlist=["10.0.0.0/8"])
    store.disable(record.id)
    assert store.verify(secret, scope="b", client_ip="192.0.2.1").outcome is Outcome.DISABLED


def test_a_rotated_key_in_grace_keeps_verifying_and_reports_its_own_id(store, clock, project):
    record, secret = store.create_key("k", project)
    rotation = store.rotate(record.id, grace="10m")
    assert store.verify(secret).key_id == record.id
    assert store.verify(rotation.secret).key_id == rotation.successor.id
    clock.advance(minutes=10)
    assert store.verify(secret).outcome is Outcome.REVOKED


def test_a_short_hashing_secret_is_refused_at_open(store_url):
    with pytest.raises(ValueError, match="KEYTRAIL_SECRET"):
        KeyStore.open(store_url, b"short")


def test_a_database_failure_during_verify_is_an_error_outcome_not_an_exception(store, project):
    _, secret = store.create_key("k", project)
    with store.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE api_keys RENAME TO api_keys_gone")
    verdict = store.verify(secret)
    assert verdict.outcome is Outcome.ERROR and not verdict.ok
    with store.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE api_keys_gone RENAME TO api_keys")
    assert store.verify(secret).outcome is Outcome.OK  # the failure was not cached


@pytest.mark.integration
def test_verify_recovers_by_itself_after_the_database_restarts(open_store, project):
    from tests.infra.postgres import PostgresServer

    with PostgresServer() as server:  # its own server: restarting the shared one would disturb other tests
        store = open_store(server.create_database("restart"), cache_ttl_seconds=0)
        _, secret = store.create_key("k", project)
        assert store.verify(secret).outcome is Outcome.OK  # a pooled connection now exists
        server.stop()
        assert store.verify(secret).outcome is Outcome.ERROR  # down: fail closed, no exception
        server.start()
        assert store.verify(secret).outcome is Outcome.OK  # stale connection dropped, retried once
