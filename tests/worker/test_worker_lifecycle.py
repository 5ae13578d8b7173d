"""The worker's event-time lifecycle driver: one watch per owned partition, keys by murmur2 (issue 18)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from keytrail.keystore.engine import create_store_engine
from keytrail.keystore.store import KeyStore
from keytrail.schemas.partitioning import partition_for
from keytrail.stream_processors.core import UsageAggregator
from keytrail.stream_processors.core.stream_time import StreamTimes
from keytrail.stream_processors.detectors.key_lifecycle import LifecycleThresholds
from keytrail.stream_processors.state_stores import InMemoryStates
from keytrail.stream_processors.worker_lifecycle import PartitionedLifecycle
from tests.factories import usage_event

PARTITIONS = 4
THRESHOLDS = LifecycleThresholds(idle_days=None, never_used_days=1, expiring_within_days=None)
CREATED = datetime(2026, 10, 1, tzinfo=UTC)


def test_a_key_store_without_tables_does_not_stop_the_worker(tmp_path):
    """Before: the listing raised `no such table: api_keys` and crashed the agent on every batch."""
    watch = PartitionedLifecycle(create_store_engine(f"sqlite:///{tmp_path / 'empty.db'}"), PARTITIONS, THRESHOLDS)
    watch.refresh_if_due({0, 1})
    core, states, stream = UsageAggregator(300), InMemoryStates(), StreamTimes(300)
    result = core.process([usage_event("k", at=CREATED)], states, [(0, 0)], stream=stream)
    assert watch.signals(result, states, stream) == []


def test_never_used_keys_are_flagged_on_their_own_partitions_watermark(tmp_path):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    store = KeyStore.open(url, b"worker-lifecycle-test-secret", clock=lambda: CREATED)
    try:
        keys = [store.create_key(f"never-{i}", "proj_w")[0].id for i in range(12)]
    finally:
        store.close()
    by_partition = {key: partition_for(key, PARTITIONS) for key in keys}
    owned = {by_partition[keys[0]]}
    watch = PartitionedLifecycle(create_store_engine(url), PARTITIONS, THRESHOLDS)
    watch.refresh_if_due(owned)
    core, states, stream = UsageAggregator(300), InMemoryStates(), StreamTimes(300)
    (partition,) = owned
    later = CREATED + timedelta(days=2)
    result = core.process([usage_event("ticker", at=later)], states, [(partition, 0)], stream=stream)
    found = watch.signals(result, states, stream)
    expected = sorted(key for key in keys if by_partition[key] == partition)
    assert sorted(s.key_id for s in found) == expected  # other partitions' keys are another worker's
    assert all(s.kind.value == "never_used" and s.detected_at == CREATED + timedelta(days=1) for s in found)
    again = core.process([usage_event("ticker", at=later, seconds=60)], states, [(partition, 1)], stream=stream)
    assert watch.signals(again, states, stream) == []  # raised once
