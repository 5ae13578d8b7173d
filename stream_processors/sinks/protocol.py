"""The sink protocol every output backend implements."""

from typing import Protocol

from keytrail.stream_processors.core.aggregate import BatchResult


class Sink(Protocol):
    """Writes the core's outputs somewhere durable. Re-writing the same batch changes no answer."""

    def write_batch(self, result: BatchResult) -> None:
        """Write one batch; blocks (retrying) until it is durable, never drops."""

    def flush(self) -> None:
        """Make everything written so far durable."""

    def close(self) -> None:
        """Flush and release resources."""
