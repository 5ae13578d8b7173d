"""Anomaly detectors plugged into the core; each owns its slice of the key state."""

from stream_processors.core.aggregate import Detector


def default_detectors() -> list[Detector]:
    """The detectors enabled by default (filled in by the stream-processing issue)."""
    return []
