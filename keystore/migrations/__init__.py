"""Alembic migrations of the key store, runnable from code: `upgrade(engine_or_url)`."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from keytrail.keystore.engine import WRITE_OPTION, create_store_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent
VERSION_TABLE = "keystore_alembic_version"
"""The key store's own Alembic version table, so it can share a database with other schemas."""

_POSTGRES_MIGRATION_LOCK = 0x6B657973746F7265  # "keystore": one migrator at a time per database


def alembic_config() -> Config:
    """An Alembic config pointing at this package (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(engine_or_url: Engine | str, revision: str = "head") -> None:
    """Bring the key store schema up to `revision`; safe to call on every start, from many processes."""
    engine = engine_or_url if isinstance(engine_or_url, Engine) else create_store_engine(engine_or_url)
    try:
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection:
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": _POSTGRES_MIGRATION_LOCK}
                    )
                config = alembic_config()
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
    finally:
        if engine is not engine_or_url:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()
