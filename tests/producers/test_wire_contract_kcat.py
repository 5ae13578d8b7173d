"""The wire contract from another language: kcat (librdkafka's CLI) produces hand-written JSON
events; they decode as KeyUsageEvent v1 and the pipeline's core accepts them."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from keytrail.schemas.codec import decode_usage_event
from keytrail.stream_processors.core.aggregate import UsageAggregator
from keytrail.stream_processors.state_stores import InMemoryStates
from tests.producers.conftest import PARTITIONS, java_murmur2_partition, read_topic

pytestmark = pytest.mark.integration

KCAT = shutil.which("kcat") or shutil.which("kafkacat")

# What a Go or shell producer would write by hand: field order and spacing of its own.
TEMPLATE = (
    '{{"schema_version": 1, "event_id": "{event_id}", "occurred_at": "{occurred_at}", "key_id": "{key_id}", '
    '"project_id": "proj_kcat", "service": "gateway", "method": "POST", "route": "/v2/payments/{{id}}", '
    '"status": {status}, "outcome": "{outcome}", "latency_ms": 7, "request_bytes": 512, "response_bytes": 64, '
    '"client_ip": "2001:db8::{n:x}", "user_agent": "nginx-lua/1.0", "request_id": "gw-{n}"}}'
)


@pytest.mark.skipif(
    KCAT is None, reason="kcat is not installed (Debian package kcat; infra/install-test-deps.sh)"
)
def test_events_produced_with_kcat_decode_and_are_accepted_by_the_core(kafka_bootstrap, usage_topic):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    lines = []
    for n in range(30):
        key_id = f"key_kcat{n % 4}"
        body = TEMPLATE.format(
            event_id=uuid.uuid4(),
            occurred_at=(start + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            key_id=key_id,
            status=200 if n % 5 else 403,
            outcome="ok" if n % 5 else "denied",
            n=n,
        )
        lines.append(f"{key_id}\t{body}")
    subprocess.run(
        [
            KCAT,
            "-P",
            "-b",
            kafka_bootstrap,
            "-t",
            usage_topic,
            "-K",
            "\t",
            "-X",
            "partitioner=murmur2_random",
        ],
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
        timeout=60,
        capture_output=True,
    )
    messages = read_topic(kafka_bootstrap, usage_topic)
    assert len(messages) == 30
    events = [decode_usage_event(m.value()) for m in messages]
    for message, event in zip(messages, events, strict=True):
        assert message.key() == event.key_id.encode()
        assert message.partition() == java_murmur2_partition(message.key(), PARTITIONS), (
            "with partitioner=murmur2_random, kcat places keys where the worker expects them"
        )
    assert {e.client_ip for e in events} >= {"2001:db8::1"}
    result = UsageAggregator(300, []).process(sorted(events, key=lambda e: e.occurred_at), InMemoryStates())
    assert len(result.accepted) == 30 and result.duplicates == 0
    assert {u.key_id for u in result.last_used} == {f"key_kcat{i}" for i in range(4)}
