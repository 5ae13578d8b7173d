"""Where integration tests find a ClickHouse server, if anywhere.

There is no local ClickHouse server process here (the embedded mode's chDB
needs none); a server comes from the environment or from a Docker engine.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

from .docker_engine import docker_engine, testcontainers_module
from .processes import track, untrack

URL_ENV = "KEYTRAIL_TEST_CLICKHOUSE_URL"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.8"
HTTP_PORT = 8123


class ClickHouseTarget(NamedTuple):
    """A ClickHouse server's HTTP URL (``http://user:password@host:port/database``), or None and why."""

    url: str | None
    reason: str


class _Container:
    """A testcontainers ClickHouse, stopped at exit by the cleanup guards."""

    def __init__(self, container: object) -> None:
        self.container = container

    def close(self) -> None:
        untrack(self)
        self.container.stop()  # type: ignore[attr-defined]


@functools.cache
def clickhouse_server_url() -> ClickHouseTarget:
    """``$KEYTRAIL_TEST_CLICKHOUSE_URL``; else a testcontainers ClickHouse if Docker answers; else None.

    The container, if one is started, serves the whole test run (this function
    is cached) and is stopped at interpreter exit.
    """
    url = os.environ.get(URL_ENV)
    if url:
        return ClickHouseTarget(url, f"from {URL_ENV}")
    engine, why = docker_engine()
    if not engine:
        return ClickHouseTarget(None, f"no ClickHouse server: {URL_ENV} is unset and {why}")
    module = testcontainers_module("clickhouse")
    if module is None:
        return ClickHouseTarget(
            None, f"no ClickHouse server: {URL_ENV} is unset and testcontainers is not installed"
        )
    container = module.ClickHouseContainer(CLICKHOUSE_IMAGE)
    container.start()
    track(_Container(container))
    host = container.get_container_host_ip()
    port = container.get_exposed_port(HTTP_PORT)
    return ClickHouseTarget(
        f"http://{container.username}:{container.password}@{host}:{port}/{container.dbname}",
        f"testcontainers {CLICKHOUSE_IMAGE}",
    )
