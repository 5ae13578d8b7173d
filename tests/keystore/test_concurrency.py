"""Concurrent changes to one key: exactly one rotation wins."""

import threading

import pytest
from sqlalchemy import func, select

from keytrail.keystore import KeyAlreadyRotated
from keytrail.keystore.tables import api_keys
from keytrail.schemas.keys import KeyStatus

ROUNDS = 8


def rotate_at_once(stores, key_id):
    """Rotate `key_id` from every store simultaneously; the successes and the refusals."""
    barrier = threading.Barrier(len(stores))
    successes, refusals, failures = [], [], []

    def attempt(store):
        barrier.wait()
        try:
            successes.append(store.rotate(key_id, grace="1h"))
        except KeyAlreadyRotated as refused:
            refusals.append(refused)
        except Exception as error:  # anything else is a bug the test must show
            failures.append(error)

    threads = [threading.Thread(target=attempt, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    return successes, refusals


def active_successors(store, key_id):
    with store.engine.connect() as connection:
        return connection.execute(
            select(func.count())
            .select_from(api_keys)
            .where(api_keys.c.rotated_from == key_id, api_keys.c.status == KeyStatus.ACTIVE.value)
        ).scalar_one()


@pytest.mark.integration
def test_two_rotations_of_one_key_at_once_leave_exactly_one_active_successor_on_postgres(
    open_store, postgres_url, project
):
    first, second = open_store(postgres_url), open_store(postgres_url, migrate=False)
    for _ in range(ROUNDS):
        record, _ = first.create_key("contended", project)
        successes, refusals = rotate_at_once([first, second], record.id)
        assert len(successes) == 1 and len(refusals) == 1
        assert active_successors(first, record.id) == 1
        assert first.get(record.id).grace_until is not None


def test_two_rotations_of_one_key_at_once_leave_exactly_one_active_successor_on_sqlite(
    open_store, sqlite_url, project
):
    first, second = open_store(sqlite_url), open_store(sqlite_url, migrate=False)
    for _ in range(ROUNDS):
        record, _ = first.create_key("contended", project)
        successes, refusals = rotate_at_once([first, second], record.id)
        assert len(successes) == 1 and len(refusals) == 1
        assert active_successors(first, record.id) == 1


@pytest.mark.integration
def test_concurrent_sweeps_expire_each_key_once(open_store, postgres_url, clock, sink, project):
    stores = [open_store(postgres_url)] + [open_store(postgres_url, migrate=False) for _ in range(2)]
    records = [stores[0].create_key(f"k{index}", project, expires_in="1h")[0] for index in range(10)]
    clock.advance(hours=2)
    reports = []
    barrier = threading.Barrier(len(stores))

    def sweep(store):
        barrier.wait()
        reports.append(store.sweep())

    threads = [threading.Thread(target=sweep, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    swept = sorted(key_id for report in reports for key_id in report.expired)
    assert swept == sorted(record.id for record in records)
    assert len([event for event in sink.events if event.action == "expired"]) == len(records)
