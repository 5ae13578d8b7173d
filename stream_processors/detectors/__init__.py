"""Anomaly detectors plugged into the core; each owns its slice of the key state.

Every detector is pure and deterministic: it reads only event time (never a wall clock), keeps a
small JSON-serialisable memory in `state.detector_state[detector.name]`, starts quiet (learning),
and raises at most one signal per key and aligned window, with a message that says why.
See docs/detectors.md.
"""

from keytrail.stream_processors.core.aggregate import Detector
from keytrail.stream_processors.detectors.denial_burst import DenialBurstDetector, DenialBurstThresholds
from keytrail.stream_processors.detectors.dormant_key import DormantKeyDetector, DormantKeyThresholds
from keytrail.stream_processors.detectors.inactive_key import InactiveKeyDetector, InactiveKeyThresholds
from keytrail.stream_processors.detectors.many_ips import ManyIpsDetector, ManyIpsThresholds
from keytrail.stream_processors.detectors.new_network import NewNetworkDetector, NewNetworkThresholds
from keytrail.stream_processors.detectors.new_route import NewRouteDetector, NewRouteThresholds
from keytrail.stream_processors.detectors.rate_spike import RateSpikeDetector, RateSpikeThresholds
from keytrail.stream_processors.detectors.unusual_hour import UnusualHourDetector, UnusualHourThresholds

__all__ = [
    "DenialBurstDetector",
    "DenialBurstThresholds",
    "DormantKeyDetector",
    "DormantKeyThresholds",
    "InactiveKeyDetector",
    "InactiveKeyThresholds",
    "ManyIpsDetector",
    "ManyIpsThresholds",
    "NewNetworkDetector",
    "NewNetworkThresholds",
    "NewRouteDetector",
    "NewRouteThresholds",
    "RateSpikeDetector",
    "RateSpikeThresholds",
    "UnusualHourDetector",
    "UnusualHourThresholds",
    "default_detectors",
]


def default_detectors() -> list[Detector]:
    """The detectors enabled by default, with their default thresholds."""
    return [
        InactiveKeyDetector(),
        DormantKeyDetector(),
        NewNetworkDetector(),
        NewRouteDetector(),
        UnusualHourDetector(),
        RateSpikeDetector(),
        ManyIpsDetector(),
        DenialBurstDetector(),
    ]
