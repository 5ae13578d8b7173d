"""Which Kafka and Postgres the integration tests use.

In order of choice:

1. an address from the environment: ``KEYTRAIL_TEST_KAFKA_BOOTSTRAP``,
   ``KEYTRAIL_TEST_POSTGRES_URL``;
2. a testcontainers container, where a Docker engine answers and
   testcontainers is installed;
3. a local process: ``KafkaBroker`` (official jars from Maven Central) and
   ``PostgresServer`` (Debian's binaries).

Only local processes can be stopped and started again (outage tests); the
others raise ``NotImplementedError`` and say ``restartable = False``, so such
tests skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Protocol

from .docker_engine import docker_engine, testcontainers_module
from .kafka import KafkaBroker
from .postgres import PostgresServer, create_database, libpq_dsn, sqlalchemy_url

KAFKA_ENV = "KEYTRAIL_TEST_KAFKA_BOOTSTRAP"
POSTGRES_ENV = "KEYTRAIL_TEST_POSTGRES_URL"
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
POSTGRES_IMAGE = "postgres:16-alpine"


class KafkaService(Protocol):
    """What tests get from ``kafka_service()``."""

    origin: str
    restartable: bool

    @property
    def bootstrap(self) -> str: ...
    def stop(self) -> None: ...
    def start(self) -> None: ...


class PostgresService(Protocol):
    """What tests get from ``postgres_service()``."""

    origin: str
    restartable: bool

    @property
    def url(self) -> str: ...
    @property
    def dsn(self) -> str: ...
    def create_database(self, name: str) -> str: ...
    def stop(self) -> None: ...
    def start(self) -> None: ...


class _NotRestartable:
    restartable = False
    origin: str

    def stop(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} from {self.origin} cannot be stopped by the tests")

    def start(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} from {self.origin} cannot be started by the tests")


class RemoteKafka(_NotRestartable):
    """A Kafka the tests did not start: from the environment or a container."""

    def __init__(self, bootstrap: str, origin: str) -> None:
        self.bootstrap = bootstrap
        self.origin = origin


class RemotePostgres(_NotRestartable):
    """A Postgres the tests did not start: from the environment or a container."""

    def __init__(self, url: str, origin: str) -> None:
        self.url = sqlalchemy_url(url)
        self.dsn = libpq_dsn(url)
        self.origin = origin

    def create_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; its SQLAlchemy URL."""
        return sqlalchemy_url(create_database(self.dsn, name))


@contextmanager
def kafka_service() -> Iterator[KafkaService]:
    """Yield a Kafka broker (``.bootstrap``), chosen as the module doc says, and release it after."""
    with ExitStack() as stack:
        yield _choose_kafka(stack)


@contextmanager
def postgres_service() -> Iterator[PostgresService]:
    """Yield a Postgres server (``.url``, ``.dsn``), chosen as the module doc says, and release it after."""
    with ExitStack() as stack:
        yield _choose_postgres(stack)


def _choose_kafka(stack: ExitStack) -> KafkaService:
    bootstrap = os.environ.get(KAFKA_ENV)
    if bootstrap:
        return RemoteKafka(bootstrap, origin=KAFKA_ENV)
    module = testcontainers_module("kafka") if docker_engine()[0] else None
    if module is not None:
        container = stack.enter_context(module.KafkaContainer(KAFKA_IMAGE).with_kraft())
        return RemoteKafka(container.get_bootstrap_server(), origin=f"testcontainers {KAFKA_IMAGE}")
    return stack.enter_context(KafkaBroker())


def _choose_postgres(stack: ExitStack) -> PostgresService:
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return RemotePostgres(url, origin=POSTGRES_ENV)
    module = testcontainers_module("postgres") if docker_engine()[0] else None
    if module is not None:
        container = stack.enter_context(module.PostgresContainer(POSTGRES_IMAGE, driver="psycopg"))
        return RemotePostgres(container.get_connection_url(), origin=f"testcontainers {POSTGRES_IMAGE}")
    return stack.enter_context(PostgresServer())
