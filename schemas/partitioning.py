"""The one partitioner of `keytrail.usage.v1`: Java-compatible murmur2 of the `key_id`.

The SDK computes each event's partition itself (to group events per partition into envelopes);
single-event producers in any language get the same partition from their client's default
Java-compatible partitioner (librdkafka: `partitioner=murmur2_random`). The worker's state table
is partitioned the same way, so a key's state lives beside its events.
"""

from __future__ import annotations

from functools import lru_cache

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's `Utils.murmur2`), as a signed 32-bit int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    end = length - (length % 4)
    for i in range(0, end, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length % 4
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@lru_cache(maxsize=65_536)
def partition_for(key_id: str, partitions: int) -> int:
    """The partition of a key: `toPositive(murmur2(key)) % partitions`, as the Java client computes it."""
    return (murmur2(key_id.encode()) & 0x7FFFFFFF) % partitions
