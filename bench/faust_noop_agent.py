"""Faust's own ceiling here: an agent that takes batches of the usage topic and does nothing.

Same app settings as the worker (raw serializers, `take` batches, commit cadence); what it
reaches is the most any Faust agent on this machine and broker can consume, before any work.
Run: KEYTRAIL_* settings in the environment, then `python bench/faust_noop_agent.py worker -l warn`.
"""

from __future__ import annotations

import faust

from keytrail.schemas.topics import Topics
from keytrail.settings import get_settings
from keytrail.stream_processors.topics_admin import ensure_topics

settings = get_settings()
ensure_topics(settings.kafka_bootstrap, settings.usage_partitions)
app = faust.App(
    settings.worker_app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    store="memory://",
    topic_partitions=settings.usage_partitions,
    web_enabled=False,
    datadir=str(settings.data_dir / "faust"),
    consumer_auto_offset_reset="earliest",
    broker_commit_every=10_000,
    broker_commit_interval=1.0,
    stream_wait_empty=False,
    key_serializer="raw",
    value_serializer="raw",
)
usage = app.topic(Topics.USAGE.value, key_type=bytes, value_type=bytes, partitions=settings.usage_partitions)


@app.agent(usage, name="noop-usage-agent")
async def take_and_drop(stream: faust.StreamT) -> None:
    async for _batch in stream.take(settings.worker_batch_size, within=settings.worker_batch_seconds):
        pass


if __name__ == "__main__":
    app.main()
