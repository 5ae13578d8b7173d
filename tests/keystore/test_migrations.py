"""The Alembic migrations build exactly the tables the code uses, on both backends."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from keytrail.keystore import migrations
from keytrail.keystore.engine import create_store_engine
from keytrail.keystore.tables import metadata


def test_migrations_produce_the_declared_tables(store_url):
    migrations.upgrade(store_url)
    engine = create_store_engine(store_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": migrations.VERSION_TABLE})
            differences = compare_metadata(context, metadata)
        assert differences == []
        assert set(inspect(engine).get_table_names()) >= {"api_keys", "key_lifecycle_events"}
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_reaches_head(store_url):
    migrations.upgrade(store_url)
    migrations.upgrade(store_url)
    head = ScriptDirectory.from_config(migrations.alembic_config()).get_current_head()
    engine = create_store_engine(store_url)
    try:
        assert migrations.current_revision(engine) == head
    finally:
        engine.dispose()


def test_plain_postgresql_urls_use_psycopg_3():
    from keytrail.keystore.engine import normalise_store_url

    assert normalise_store_url("postgresql://u@h:5432/db") == "postgresql+psycopg://u@h:5432/db"
    assert normalise_store_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_store_url("sqlite:///x.db") == "sqlite:///x.db"


def test_an_unsupported_backend_is_refused_with_the_supported_urls():
    import pytest

    from keytrail.keystore import UnsupportedStoreUrl

    with pytest.raises(UnsupportedStoreUrl, match="sqlite:///PATH or postgresql://"):
        create_store_engine("mysql://u@h/db")


def test_a_store_created_at_the_first_revision_upgrades_and_keeps_its_events(store_url, sink, project):
    from keytrail.keystore import KeyStore
    from tests.keystore.conftest import SECRET

    migrations.upgrade(store_url, revision="0001")
    engine = create_store_engine(store_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO key_lifecycle_events (event_id, occurred_at, key_id, project_id, action, payload) "
                "VALUES ('00000000-0000-0000-0000-000000000001', '2026-01-01 00:00:00', 'key_old', 'p', 'created', '{}')"
            )
    finally:
        engine.dispose()
    with KeyStore.open(store_url, SECRET, lifecycle_sink=sink) as store:  # upgrades to head
        record, _ = store.create_key("k", project)
        rotation = store.rotate(record.id)
        assert [event.action for event in store.lifecycle_events(record.id)] == ["created", "rotated"]
        assert store.lifecycle_events(rotation.successor.id)[0].action == "created"
        with store.engine.connect() as connection:
            kept = connection.exec_driver_sql(
                "SELECT key_id FROM key_lifecycle_events ORDER BY sequence"
            ).first()
        assert kept[0] == "key_old"
