"""Backends loaded with the hand-written fixture: chDB always, a ClickHouse server when one is reachable."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlparse, urlunparse

import pytest

from keytrail.sql.backends import ChdbBackend, ClickHouseBackend, ServerBackend
from keytrail.sql.migrate import migrate
from keytrail.sql.queries.rollups import refresh_rollups
from keytrail.stream_processors.core.aggregate import UsageAggregator
from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink
from tests.queries import fixture


def load_fixture(backend: ClickHouseBackend, events=None) -> ClickHouseSink:
    """Write the fixture through the real pipeline core and sink, plus the lifecycle audit rows."""
    sink = ClickHouseSink(backend)
    result = UsageAggregator().process(events or fixture.EVENTS, {})
    sink.write_batch(result)
    backend.insert_json_rows("key_lifecycle_events", fixture.lifecycle_rows(fixture.LIFECYCLE))
    refresh_rollups(backend)
    return sink


def server_database_url(base_url: str) -> str:
    """The server URL with a fresh database of its own (dropped after the tests)."""
    parsed = urlparse(base_url)
    return urlunparse(parsed._replace(path=f"/kt_queries_{uuid.uuid4().hex[:10]}"))


@pytest.fixture(scope="session")
def server_url(request) -> str:
    """A reachable ClickHouse server, or a skip that says why there is none."""
    try:
        return request.getfixturevalue("clickhouse_server_url")
    except (ImportError, ModuleNotFoundError) as exc:  # the infra helper may not exist yet
        pytest.skip(f"no ClickHouse server helper: {exc}")


def open_backend(kind: str, request, path_factory) -> ClickHouseBackend:
    if kind == "chdb":
        return ChdbBackend(path_factory.mktemp("chdb"))
    url = server_database_url(request.getfixturevalue("server_url"))
    return ServerBackend(url)


def drop_server_database(backend: ClickHouseBackend) -> None:
    if getattr(backend, "kind", "") == "server":
        backend.command(f"DROP DATABASE IF EXISTS `{backend.database}`")


@pytest.fixture(scope="module", params=["chdb", "server"])
def loaded(request, tmp_path_factory) -> Iterator[ClickHouseBackend]:
    """A backend with the fixture loaded once per test module (chDB allows one data directory per process)."""
    backend = open_backend(request.param, request, tmp_path_factory)
    try:
        migrate(backend)
        load_fixture(backend)
        yield backend
    finally:
        drop_server_database(backend)
        backend.close()


@pytest.fixture(params=["chdb", "server"])
def empty(request, tmp_path_factory) -> Iterator[ClickHouseBackend]:
    """A migrated, empty backend for one test."""
    backend = open_backend(request.param, request, tmp_path_factory)
    try:
        migrate(backend)
        yield backend
    finally:
        drop_server_database(backend)
        backend.close()
