"""The scheduled expiry sweep, as a thread and as an asyncio task."""

import asyncio
import time

import pytest

from keytrail.keystore import ExpirySweeper, sweep_forever
from keytrail.schemas.keys import KeyStatus


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_the_sweeper_thread_expires_due_keys_and_keeps_running(store, clock, project):
    record, _ = store.create_key("k", project, expires_in="1h")
    clock.advance(hours=2)
    with ExpirySweeper(store, interval_seconds=0.05) as sweeper:
        assert wait_for(lambda: store.get(record.id).status is KeyStatus.EXPIRED)
        assert wait_for(lambda: sweeper.runs >= 2)


def test_a_failing_sweep_does_not_stop_the_schedule():
    class BrokenStore:
        calls = 0

        def sweep(self):
            BrokenStore.calls += 1
            raise RuntimeError("database down")

    with ExpirySweeper(BrokenStore(), interval_seconds=0.01):
        assert wait_for(lambda: BrokenStore.calls >= 3)


def test_the_sweep_interval_must_be_positive(store):
    with pytest.raises(ValueError):
        ExpirySweeper(store, interval_seconds=0)


def test_the_async_sweeper_expires_due_keys(store, clock, project):
    record, _ = store.create_key("k", project, expires_in="1h")
    clock.advance(hours=2)

    async def run_briefly():
        task = asyncio.create_task(sweep_forever(store, interval_seconds=0.05))
        for _ in range(200):
            await asyncio.sleep(0.02)
            if store.get(record.id).status is KeyStatus.EXPIRED:
                break
        task.cancel()

    asyncio.run(run_briefly())
    assert store.get(record.id).status is KeyStatus.EXPIRED
