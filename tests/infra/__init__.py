"""Real services for the integration tests, with or without a Docker engine.

``kafka_service()`` and ``postgres_service()`` pick an address from the
environment, a testcontainers container, or a local process (``KafkaBroker``,
``PostgresServer``); ``clickhouse_server_url()`` finds a ClickHouse server if
there is one. See ``selection`` for the order of choice.
"""

from .clickhouse import ClickHouseTarget, clickhouse_server_url
from .docker_engine import docker_engine
from .kafka import KafkaBroker, KafkaStartupError, ensure_kafka_jars
from .postgres import PostgresServer, PostgresStartupError
from .selection import KafkaService, PostgresService, kafka_service, postgres_service

__all__ = [
    "ClickHouseTarget",
    "KafkaBroker",
    "KafkaService",
    "KafkaStartupError",
    "PostgresServer",
    "PostgresService",
    "PostgresStartupError",
    "clickhouse_server_url",
    "docker_engine",
    "ensure_kafka_jars",
    "kafka_service",
    "postgres_service",
]
