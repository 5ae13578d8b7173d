"""First use of a key from a network it was never used from (/24 for IPv4, /48 for IPv6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keytrail.schemas.signals import Severity, Signal, SignalKind
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.core.state import KeyState, MinuteAggregate
from keytrail.stream_processors.detectors.dedupe import claim_window
from keytrail.stream_processors.detectors.event_time import (
    DAY_MS,
    EPOCH_ORDINAL,
    MINUTE_MS,
    epoch_day,
    minute_text,
)
from keytrail.stream_processors.detectors.feedback import DetectorFeedback
from keytrail.stream_processors.detectors.networks import (
    is_private,
    network_of,
    network_text,
    parent_of,
    parent_text,
)
from keytrail.stream_processors.detectors.novelty import is_nomadic, least_recent, note_discovery, teach_known
from keytrail.stream_processors.detectors.signal_builder import build_signal, clip
from keytrail.stream_processors.detectors.wording import join_names, plural


@dataclass(frozen=True, slots=True)
class NewNetworkThresholds:
    learning_days: int = 7
    """Networks seen in the key's first week are its own; nothing is reported before."""
    max_networks: int = 64
    """Networks remembered per key; the least recently used is forgotten first."""
    nomad_networks: int = 6
    """A key that met this many new networks within `nomad_days` (not counting its first two days) is
    nomadic — a public client, a mobile app: new networks are normal for it and stay quiet, and it
    remembers only `nomad_max_networks`."""
    nomad_days: int = 28
    nomad_max_networks: int = 16
    window_minutes: int = 60


class NewNetworkDetector:
    """Remembers the networks a key was used from, with the day each was last seen.

    Normal change it tolerates:
    - a new address inside a known /24 (or /48) is not a new network;
    - a new /24 inside a private /16 the key already uses (10.20.31.0/24 next to 10.20.30.0/24) is the
      same internal network renumbered or rescheduled (Kubernetes, autoscaling): learnt silently;
    - a new /24 inside a public /16 (or /48 in a /32) the key already uses is reported at low severity.
    A first use from a public address by a key that was only ever used from private networks is high.
    Nomadic keys (see `novelty`) stay quiet.
    Memory: `f` first day (since the epoch), `n` {network: last day seen}, `k` days of the latest new
    networks (days counted from `f`), `x` end of the last signalled window, `t` networks taught by feedback
    (never forgotten while pinned, see `novelty`).
    """

    name = "new_network"
    kinds = (SignalKind.NEW_NETWORK.value,)
    distinct_events = ("client_ip",)
    """Only the first event of each distinct value per UTC day matters here (later ones are 'seen')."""

    def __init__(self, thresholds: NewNetworkThresholds | None = None) -> None:
        self.thresholds = thresholds or NewNetworkThresholds()
        self._window_ms = self.thresholds.window_minutes * MINUTE_MS

    def observe(
        self,
        key_id: str,
        state: KeyState,
        events: Sequence[KeyUsageEvent],
        closed_minutes: Sequence[tuple[int, MinuteAggregate]],
    ) -> list[Signal]:
        if not events:
            return []
        memory = state.detector_state.get(self.name)
        if memory is None:
            memory = state.detector_state[self.name] = {"f": epoch_day(events[0].occurred_at), "n": {}}
        known: dict[str, int] = memory["n"]
        known_get = known.get
        origin = EPOCH_ORDINAL + memory["f"]
        signals: list[Signal] = []
        # Hot loop: one cached network look-up (`network_of` is memoised) and one dict probe per event.
        for event in events:
            network = network_of(event.client_ip)
            day = event.occurred_at.toordinal() - origin  # days since the key's first day
            seen = known_get(network)
            if seen is not None:
                if day > seen:
                    known[network] = day
                continue
            signal = self._first_use(key_id, state, memory, event, network, day)
            if signal is not None:
                signals.append(signal)
        return signals

    def teach(self, state: KeyState, feedback: DetectorFeedback) -> bool:
        """The signal's networks were expected: they become known for the key and are never forgotten.

        Networks come from the evidence's IPs (exact) and network texts (`203.0.113.0/24`). Idempotent.
        """
        memory = state.detector_state.get(self.name)
        if memory is None or feedback.kind not in self.kinds:
            return False
        networks = _networks_of(feedback.evidence)
        if not networks:
            return False
        day = max(feedback.window_end_ms // DAY_MS - memory["f"], 0)
        limits = self.thresholds
        nomadic = is_nomadic(memory, day, limits.nomad_networks, limits.nomad_days)
        cap = limits.nomad_max_networks if nomadic else limits.max_networks
        return teach_known(memory, "n", networks, day, cap)

    def _first_use(
        self, key_id: str, state: KeyState, memory: dict[str, Any], event: KeyUsageEvent, network: str, day: int
    ) -> Signal | None:
        known: dict[str, int] = memory["n"]
        limits = self.thresholds
        parent = parent_of(network)
        # `in` over a map stops at the first match like `any(...)`, without a Python-level generator.
        private_sibling = is_private(network) and parent in map(parent_of, known)
        signal = None
        if not private_sibling:  # renumbering inside the own private network is neither news nor nomadism
            note_discovery(memory, day, 0, limits.nomad_networks)
            nomadic = is_nomadic(memory, day, limits.nomad_networks, limits.nomad_days)
            if day >= limits.learning_days and known and not nomadic:
                signal = self._judge(key_id, state, memory, event, network, day)
        known[network] = day
        nomadic = is_nomadic(memory, day, limits.nomad_networks, limits.nomad_days)
        cap = limits.nomad_max_networks if nomadic else limits.max_networks
        while len(known) > cap:
            del known[least_recent(known, memory.get("t", ()))]
        return signal

    def _judge(
        self,
        key_id: str,
        state: KeyState,
        memory: dict[str, Any],
        event: KeyUsageEvent,
        network: str,
        history_days: int,
    ) -> Signal | None:
        known: dict[str, int] = memory["n"]
        parent = parent_of(network)
        siblings = sorted(net for net in known if parent_of(net) == parent)
        private = is_private(network)
        at_ms = epoch_ms(event.occurred_at)
        window_start = claim_window(memory, at_ms, self._window_ms)
        if window_start is None:
            return None
        recent = [net for net, _ in sorted(known.items(), key=lambda item: (-item[1], item[0]))]
        recent_texts = [network_text(net) for net in recent]
        route = f"{event.method} {clip(event.route)}"
        new_text = network_text(network)
        message = (
            f"Key {key_id} was used from {new_text} for the first time ({minute_text(at_ms)}, "
            f"{event.client_ip}, {route} on {clip(event.service, 60)}); in {plural(history_days, 'day')} it "
            f"had only been used from {join_names(recent_texts)}."
        )
        if siblings:
            severity, score = Severity.LOW, 1.0
            message += (
                f" The key already uses {join_names([network_text(n) for n in siblings], 3)} in the same "
                f"block {parent_text(network)}, so this is likely the same provider or operator."
            )
        elif not private and all(is_private(net) for net in known):
            severity, score = Severity.HIGH, 3.0
            message += " It is the key's first use from a public address: until now it was only used inside private networks."
        else:
            severity, score = Severity.MEDIUM, 2.0
        return build_signal(
            key_id=key_id,
            project_id=state.project_id,
            kind=SignalKind.NEW_NETWORK,
            severity=severity,
            score=score,
            observed=1.0,
            expected=0.0,
            window_start_ms=window_start,
            window_ms=self._window_ms,
            detected_at_ms=at_ms,
            evidence={
                "ips": [event.client_ip],
                "networks": [new_text],
                "known_networks": recent_texts[:10],
                "routes": [route],
                "services": [event.service],
            },
            message=message,
        )


def _networks_of(evidence: Mapping[str, Sequence[str]]) -> list[str]:
    """The stored networks a signal's evidence names, in order, once each."""
    found: list[str] = []
    for ip in evidence.get("ips", ()):
        if ip and ip not in ("[REDACTED]",):
            found.append(network_of(ip))
    for text in evidence.get("networks", ()):
        address, _, _ = text.partition("/")
        if address:
            found.append(network_of(address.split(" ")[0]))
    return [net for net in dict.fromkeys(found) if net]
