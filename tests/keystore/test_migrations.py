"""The Alembic migrations build exactly the tables the code uses, on both backends."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from keystore import migrations
from keystore.engine import create_store_engine
from keystore.tables import metadata


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
    from keystore.engine import normalise_store_url

    assert normalise_store_url("postgresql://u@h:5432/db") == "postgresql+psycopg://u@h:5432/db"
    assert normalise_store_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_store_url("sqlite:///x.db") == "sqlite:///x.db"


def test_an_unsupported_backend_is_refused_with_the_supported_urls():
    import pytest

    from keystore import UnsupportedStoreUrl

    with pytest.raises(UnsupportedStoreUrl, match="sqlite:///PATH or postgresql://"):
        create_store_engine("mysql://u@h/db")
