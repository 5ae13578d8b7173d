"""Key-store fixtures: a store on SQLite and on real PostgreSQL, a controllable clock, a sink."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from keytrail.keystore import InMemoryLifecycleSink, KeyStore
from keytrail.schemas.timestamps import to_utc_millis

SECRET = b"test-hashing-secret-0123456789abcdef"


class FakeClock:
    """A clock the test moves by hand; starts at a fixed UTC instant."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = to_utc_millis(start or datetime(2026, 3, 1, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now = to_utc_millis(self.now + timedelta(**delta))
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sink() -> InMemoryLifecycleSink:
    return InMemoryLifecycleSink()


@pytest.fixture
def project() -> str:
    """A project id unique to the test, so tests never see each other's keys on a shared database."""
    return f"proj-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'keys.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def store_url(request, tmp_path) -> str:
    """The same test on SQLite (file) and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keys.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def open_store(clock, sink) -> Iterator[Callable[..., KeyStore]]:
    """Open stores on a URL with the test clock and sink; all are closed at the end."""
    opened: list[KeyStore] = []

    def _open(url: str, **options) -> KeyStore:
        options.setdefault("clock", clock)
        options.setdefault("lifecycle_sink", sink)
        secret = options.pop("secret", SECRET)
        store = KeyStore.open(url, secret, **options)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store, store_url) -> KeyStore:
    return open_store(store_url)
