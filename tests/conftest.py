"""Session fixtures for the real services: Kafka, PostgreSQL, chDB and (when reachable) a ClickHouse server.

Choice per service: an address in the environment, then testcontainers where a Docker
engine answers, else a local process (Kafka from the official jars, Debian's PostgreSQL).
Every server started here is stopped at the end of the session, even on failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="session")
def kafka_service() -> Iterator[object]:
    """A running Kafka broker; `.bootstrap` is its address; `.stop()`/`.start()` when local."""
    from tests.infra.selection import kafka_service as choose_kafka

    with choose_kafka() as service:
        yield service


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_service) -> str:
    return kafka_service.bootstrap


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[object]:
    """A running PostgreSQL; `.url` is a SQLAlchemy URL; `.stop()`/`.start()` when local."""
    from tests.infra.selection import postgres_service as choose_postgres

    with choose_postgres() as service:
        yield service


@pytest.fixture
def postgres_url(postgres_service) -> str:
    """A fresh, empty database for one test."""
    return postgres_service.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def clickhouse_server_url() -> str:
    """A ClickHouse server's URL, or the test is skipped with the reason none is reachable."""
    from tests.infra.clickhouse import clickhouse_server_url as find_server

    url, reason = find_server()
    if url is None:
        pytest.skip(reason)
    return url


@pytest.fixture
def chdb_path(tmp_path) -> Path:
    """A fresh chDB data directory."""
    return tmp_path / "chdb"


@pytest.fixture
def unique() -> str:
    """A short unique token to keep ids of one test apart from others on shared topics."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_report_header(config) -> list[str]:
    chosen = [f"{name}={os.environ[name]}" for name in (
        "KEYTRAIL_TEST_KAFKA_BOOTSTRAP", "KEYTRAIL_TEST_POSTGRES_URL", "KEYTRAIL_TEST_CLICKHOUSE_URL") if name in os.environ]
    return ["keytrail services from environment: " + (", ".join(chosen) or "none (local processes)")]
