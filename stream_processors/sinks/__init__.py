"""Sinks: one short protocol (`write_batch`, `flush`, `close`), one class per real backend."""

from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink
from keytrail.stream_processors.sinks.protocol import Sink

__all__ = ["ClickHouseSink", "Sink"]
