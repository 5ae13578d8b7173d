"""A key store another session holds locked answers `KeyStoreBusy` within the bounded wait, on
SQLite (another process's write lock) and on PostgreSQL (a row held FOR UPDATE)."""

from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy import create_engine, text

from keytrail.keystore.engine import normalise_store_url
from keytrail.keystore.errors import KeyStoreBusy
from keytrail.keystore.store import KeyStore

SECRET = b"busy-test-secret-0123456789abcdef"


def test_a_sqlite_store_locked_elsewhere_is_busy_within_the_bounded_wait(tmp_path):
    path = tmp_path / "keys.db"
    with KeyStore.open(f"sqlite:///{path}", SECRET) as store:
        record, _ = store.create_key("k", "p")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(KeyStoreBusy):
                store.revoke(record.id)
            assert time.monotonic() - started < 2.0
            assert store.get(record.id).status.value == "active"  # reads still answer (WAL)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert store.revoke(record.id).status.value == "revoked"


@pytest.mark.integration
def test_a_postgres_row_held_for_update_is_busy_within_the_bounded_wait(postgres_url):
    with KeyStore.open(postgres_url, SECRET) as store:
        record, _ = store.create_key("k", "p")
        other = create_engine(normalise_store_url(postgres_url).replace("postgresql://", "postgresql+psycopg://"))
        with other.connect() as holder:
            holder.execute(text("SELECT id FROM api_keys WHERE id = :id FOR UPDATE"), {"id": record.id})
            started = time.monotonic()
            with pytest.raises(KeyStoreBusy):
                store.revoke(record.id)
            assert time.monotonic() - started < 2.0
            holder.rollback()
        other.dispose()
        assert store.revoke(record.id).status.value == "revoked"
