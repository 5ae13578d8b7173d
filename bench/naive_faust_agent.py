"""The baseline the worker is measured against: a one-event-at-a-time Faust agent doing the same work.

Same decode, same core, same Faust table for state, same ClickHouse tables — but no batching:
every event is decoded, folded, written to ClickHouse and to the table on its own.
Run: KEYTRAIL_* settings in the environment, then `python bench/naive_faust_agent.py worker`.
"""

from __future__ import annotations

import asyncio

import faust

from keytrail.schemas.codec import InvalidEvent, decode_usage_event
from keytrail.schemas.topics import Topics
from keytrail.settings import get_settings
from keytrail.sql.backends import open_clickhouse
from keytrail.sql.migrate import migrate
from keytrail.stream_processors.core.aggregate import UsageAggregator
from keytrail.stream_processors.detectors import default_detectors
from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink
from keytrail.stream_processors.state_stores import SerializedStateOverlay
from keytrail.stream_processors.topics_admin import ensure_topics

settings = get_settings()
ensure_topics(settings.kafka_bootstrap, settings.usage_partitions)
app = faust.App(
    settings.worker_app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    store="memory://",
    topic_partitions=settings.usage_partitions,
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    key_serializer="raw",
    value_serializer="raw",
)
usage = app.topic(Topics.USAGE.value, key_type=bytes, value_type=bytes, partitions=settings.usage_partitions)
last_used_topic = app.topic(Topics.LAST_USED.value, key_type=bytes, value_type=bytes)
states = app.Table("naive-key-state", default=None, key_type=bytes, value_type=bytes,
                   partitions=settings.usage_partitions, use_partitioner=True)
aggregator = UsageAggregator(settings.allowed_lateness_seconds, default_detectors())
backend = open_clickhouse(settings.clickhouse_url)
migrate(backend)
sink = ClickHouseSink(backend)


@app.agent(usage, name="naive-usage-aggregator")
async def aggregate_one_at_a_time(stream: faust.StreamT) -> None:
    loop = asyncio.get_running_loop()
    async for payload in stream:
        try:
            event = decode_usage_event(payload)
        except InvalidEvent:
            continue
        overlay = SerializedStateOverlay(states)
        result = aggregator.process([event], overlay)
        await loop.run_in_executor(None, sink.write_batch, result)
        for record in result.last_used:
            await last_used_topic.send(key=record.key_id.encode(), value=record.model_dump_json().encode())
        overlay.commit()


if __name__ == "__main__":
    app.main()
