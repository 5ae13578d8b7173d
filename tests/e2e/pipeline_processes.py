"""KeyTrail's own services (worker, projector) as real subprocesses, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition


class KeytrailProcess:
    """`python -m keytrail.console.cli <command>` with KEYTRAIL_* settings; stopped on exit, even on failure."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> KeytrailProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keytrail.console.cli", self.command],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def kill_hard(self) -> None:
        """kill -9: no chance to flush or commit anything."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> KeytrailProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def wait_until(condition: Callable[[], Any], timeout: float, what: str, on_timeout: Callable[[], str] = str) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` and diagnostics."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{on_timeout()}")
        time.sleep(0.25)


def group_positions(bootstrap: str, group_id: str, topic: str) -> dict[int, tuple[int, int]] | None:
    """Per partition of `topic`: (committed offset of the group, high watermark); None while unknown."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        try:
            committed = consumer.committed(partitions, timeout=10)
        except KafkaException:  # e.g. NOT_COORDINATOR while the group coordinator moves or starts
            return None
        positions = {}
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            positions[tp.partition] = (tp.offset, high)
        return positions
    finally:
        consumer.close()


def group_caught_up(bootstrap: str, group_id: str, topic: str) -> bool:
    """Whether the consumer group has committed the end of every partition of `topic`."""
    positions = group_positions(bootstrap, group_id, topic)
    return positions is not None and all(high == 0 or committed >= high for committed, high in positions.values())


def describe_group_positions(bootstrap: str, group_id: str, topic: str) -> str:
    """A line per partition (committed, high watermark, lag) for timeout diagnostics."""
    positions = group_positions(bootstrap, group_id, topic)
    if positions is None:
        return f"group {group_id}: committed offsets unknown (coordinator not ready)"
    return "\n".join(f"{topic}[{partition}]: committed={committed} high={high} lag={high - max(committed, 0)}"
                     for partition, (committed, high) in sorted(positions.items()))


def consume_all(bootstrap: str, topic: str, *, idle_seconds: float = 2.0, max_seconds: float = 30.0) -> list:
    """Every message currently on `topic`, read from the beginning by a throwaway group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"keytrail-test-reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages = []
    started = last = time.monotonic()
    try:
        while time.monotonic() - last < idle_seconds and time.monotonic() - started < max_seconds:
            batch = consumer.consume(500, timeout=0.5)
            good = [m for m in batch if m.error() is None]
            if good:
                messages.extend(good)
                last = time.monotonic()
    finally:
        consumer.close()
    return messages


def start_group_at_the_end(bootstrap: str, group_id: str, topic: str, partitions: int) -> int:
    """Commit `topic`'s current end for `group_id`, so its consumer reads only what is produced next
    (the session's topic holds other tests' records); returns the sum of those offsets."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False})
    try:
        def watermark(partition: int) -> int | None:
            try:
                return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
            except KafkaException:  # a topic just created: no leader elected yet
                return None

        ends = [TopicPartition(topic, p, wait_until(lambda p=p: _found(watermark(p)), 60, f"a leader for {topic}[{p}]")[0])
                for p in range(partitions)]
        consumer.commit(offsets=ends, asynchronous=False)
        return sum(tp.offset for tp in ends)
    finally:
        consumer.close()


def _found(value: int | None) -> tuple[int] | None:
    """`value` in a truthy box (an offset of 0 is found too), for `wait_until`."""
    return None if value is None else (value,)
