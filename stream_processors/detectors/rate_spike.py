"""A rate spike: more requests in 5, 15, 30 or 60 minutes than the key's own baseline makes plausible.

Each closed minute is judged by the counts of the whole windows ending with it (the current 5-minute
bucket plus the 1, 3, 6 or 11 before it: 6-10, 16-20, 31-35 and 56-60 minutes) against what the
key's baseline expects for those minutes of the week (`rate_baseline`), as a tail probability
(`significance.rate_surprise`): Poisson counting noise, widened by the key's burst size, around a
rate that varies log-normally by the key's learnt hourly spread, a minute-level spread for short
windows and a start-up uncertainty that narrows as days pass. For quiet keys the minutes that saw a
request are judged too (`significance.active_surprise`). A quiet key going from 0.3 to 5 requests a
minute is as improbable as a steady busy key doubling, and both read as the same 0-1 anomaly score.

A window fires when it is improbable enough that the key would see one like it by chance about once
in 10**fire_margin days (and never above p = 1e-6), with a minimum excess and ratio. A spike opens
an episode: one signal, then silence while the windows stay hot; the episode ends after an hour of
calm and its signal is sent again, same id, covering the whole episode. The baseline keeps learning
throughout (a spike's hours teach at most four times the expected level), so a lasting shift to a
higher level fires once and then becomes the new normal. Judging starts after `judge_after_hours`.

Work is per closed key-minute (never per event), so the columnar core can drive it; `score_minute`
is the same scoring as a pure function of (state, minute, requests), `anomaly_scores` the latest
scores per window. Memory (about 450 bytes): the baseline, `f` first minute, `m` last minute
judged, `b` newest bucket, `c` the last twelve 5-minute counts, `p` their busiest minutes and `a`
their active minutes, `x` the latest score per window, `e` the open episode (0 when none), `j` per
hour of the week the weeks it spiked in (2 bits each, 56 chars).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keytrail.schemas.signals import Severity, Signal, SignalKind
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.stream_processors.core.state import OUTCOME_ORDER, KeyState, MinuteAggregate
from keytrail.stream_processors.detectors import rate_baseline
from keytrail.stream_processors.detectors.event_time import MINUTE_MS, WEEKDAYS, hour_of_week, minute_text
from keytrail.stream_processors.detectors.feedback import DetectorFeedback
from keytrail.stream_processors.detectors.networks import networks_with_counts
from keytrail.stream_processors.detectors.signal_builder import build_signal
from keytrail.stream_processors.detectors.significance import (
    MAX_SURPRISE,
    SCORE_SCALE,
    active_surprise,
    chance_text,
    rate_surprise,
    score_of,
)
from keytrail.stream_processors.detectors.week_counts import EMPTY, MAX_WEEKS, count_at, with_count
from keytrail.stream_processors.detectors.wording import count_text, plural

NAME = "rate_spike"
BUCKET_MINUTES = 5
BUCKETS = 12
WINDOWS = (5, 15, 30, 60)
"""Window lengths in minutes; each is the newest 1, 3, 6 or 12 aligned buckets."""
_WINDOW_BUCKETS = ((5, 2), (15, 4), (30, 7), (60, 12))


@dataclass(frozen=True, slots=True)
class RateSpikeThresholds:
    fire_margin: float = 4.0
    """A window fires when its count is improbable enough that the key would see such a window by
    chance about once in 10**fire_margin days: the surprise needed is this margin plus log10 of the
    windows judged a day (three per active minute). A quiet key judges few minutes and needs about
    p <= 1e-6, a busy one judging every minute about p <= 1e-8 ..."""
    min_surprise: float = 6.0
    """... and never less than this (p <= 1e-6): a key judging few windows still sees its baseline
    a little wrong now and then, which no tail model knows about ..."""
    min_excess: int = 8
    """... and the window holds at least this many requests more than expected ..."""
    min_ratio: float = 3.0
    """... and at least this many times the expected count."""
    calm_surprise: float = 3.0
    """An episode stays open while some window is at least this surprising (p <= 1e-3) ..."""
    calm_minutes: int = 60
    """... and ends after this long without such a minute."""
    severe_surprise: float = 16.0
    severe_ratio: float = 5.0
    """High severity: at least this improbable and this many times the expected count."""
    known_after_weeks: int = 1
    """A spike at an hour of the week at which the key spiked before (in this many weeks) opens a
    silent episode: a weekly job fires the first time only."""
    judge_after_hours: int = 24
    min_active_minutes: int = 6
    minute_spread: float = 0.09
    """Dispersion of a single minute's rate around its hour's (a CV of 0.3), shared by `covered` minutes."""
    """Minutes with a request a window needs before they are counted as evidence of their own."""
    startup_dispersion: float = 0.5
    """Extra dispersion on day one (a coefficient of variation of 0.7), shrinking as 1/days²: the
    baseline of a young key is uncertain; from then on the learnt dispersion speaks for itself."""
    unseen_hour_dispersion: float = 0.03
    """Extra dispersion at an hour of the week not seen yet (the hour of day and the overall rate stand in)."""


def burst_surprise(size: int, expected: float, burst: float) -> float:
    """-log10 of the chance that one of the window's bursts (expected / mean burst size of them)
    reaches `size` requests, bursts being geometric with mean `burst` (1: no bursts at all)."""
    follow = 1.0 - 1.0 / burst
    if follow <= 1e-9:
        return MAX_SURPRISE
    chance = expected / burst * follow ** (size - 1)
    return 0.0 if chance >= 1.0 else min(MAX_SURPRISE, -math.log10(chance)) if chance > 0 else MAX_SURPRISE


def fire_surprise(rate: float, thresholds: RateSpikeThresholds) -> float:
    """The surprise a window needs to fire for a key making `rate` requests a minute (see `fire_margin`)."""
    judged_per_day = len(WINDOWS) * 1440 * -math.expm1(-max(rate, 1e-4))
    return max(thresholds.min_surprise, thresholds.fire_margin + math.log10(max(1.0, judged_per_day)))


def new_memory(minute: int) -> dict[str, Any]:
    return rate_baseline.new_baseline(minute // 60) | {"f": minute, "b": minute // BUCKET_MINUTES,
                                                       "c": [0] * BUCKETS, "p": [0] * BUCKETS, "a": [0] * BUCKETS,
                                                       "e": 0, "j": EMPTY}


def _shifted(values: list[int], shift: int, newest: int) -> list[int]:
    if shift >= BUCKETS:
        return [0] * (BUCKETS - 1) + [newest]
    return values[shift:] + [0] * (shift - 1) + [newest]


def _recent(memory: dict[str, Any], minute: int, requests: int) -> tuple[list[int], list[int], list[int]]:
    """The twelve bucket counts, busiest minutes and active minutes ending with `minute`'s bucket,
    `requests` added to it (no mutation)."""
    shift = minute // BUCKET_MINUTES - memory["b"]
    counts, peaks, active = memory["c"], memory["p"], memory["a"]
    if shift <= 0:
        if shift < 0 or not requests:
            return counts, peaks, active
        counts, peaks, active = list(counts), list(peaks), list(active)
        counts[-1] += requests
        active[-1] += 1
        if requests > peaks[-1]:
            peaks[-1] = requests
        return counts, peaks, active
    return (_shifted(counts, shift, requests), _shifted(peaks, shift, requests),
            _shifted(active, shift, 1 if requests else 0))


@dataclass(slots=True)
class WindowJudgement:
    minutes: int
    """The window's length (5, 15, 30 or 60) ..."""
    covered: int
    """... and the minutes of it elapsed (its newest bucket may have just begun)."""
    observed: int
    expected: float
    surprise: float

    @property
    def score(self) -> float:
        return score_of(self.surprise)


def judge(memory: dict[str, Any], minute: int, recent: tuple[list[int], list[int]],
          thresholds: RateSpikeThresholds) -> list[WindowJudgement]:
    """The windows ending with `minute` judged against the baseline (empty while still learning).

    A window whose busiest minute holds a third of it is judged both without that minute (replaced by
    the expected one) and by that minute as a single burst: a spike lasts or floods, while one burst
    of retries or a page load within seconds is no change of rate.
    """
    history_hours = (minute - memory["f"]) / 60
    if history_hours < thresholds.judge_after_hours:
        return []
    hour = minute // 60
    rate_now, seen = rate_baseline.expected_rate(memory, hour, history_hours)
    rate_before, _ = rate_baseline.expected_rate(memory, hour - 1, history_hours)
    base = rate_baseline.dispersion(memory)
    index = rate_baseline.burst_index(memory)
    burst = memory["k"]
    concentrated = rate_baseline.concentration(memory, hour)
    young = 24.0 / max(24.0, history_hours)
    # The key's learnt spread (measured against this same baseline, so its errors are in it) and
    # a young key's wider uncertainty.
    spread = base + thresholds.startup_dispersion * young * young
    if not seen:
        spread += thresholds.unseen_hour_dispersion
    in_bucket = minute % BUCKET_MINUTES + 1
    into_hour = minute % 60 + 1
    min_active, minute_spread = thresholds.min_active_minutes, thresholds.minute_spread
    judged = []
    observed = 0
    busiest = 0
    taken = 0
    counts, peaks, actives = recent
    active = 0
    for length, buckets in _WINDOW_BUCKETS:
        while taken < buckets:
            taken += 1
            observed += counts[-taken]
            active += actives[-taken]
            if peaks[-taken] > busiest:
                busiest = peaks[-taken]
        covered = (buckets - 1) * BUCKET_MINUTES + in_bucket
        if covered <= into_hour:
            expected = rate_now * covered
        else:
            expected = rate_now * into_hour + rate_before * (covered - into_hour)
        if length < 60:
            expected *= concentrated
        # Minutes vary around their hour too (the learnt spread is of whole hours): a short window
        # is judged with that added.
        plain = 0.0
        judging_active = active >= min_active
        if observed > expected or judging_active:
            log_spread = math.sqrt(math.log1p(spread + minute_spread / covered))
            plain = rate_surprise(observed, expected, index, log_spread)
        if plain > 0.0 and 3 * busiest > observed:
            # One minute holds a third of the window: judge the rest as a rate, and that minute as
            # one burst of the key's usual geometric burst sizes (a page load, retries).
            rest = rate_surprise(observed - busiest + min(busiest, rate_now), expected, index, log_spread)
            plain = max(rest, min(plain, burst_surprise(busiest, expected, burst)))
        if judging_active:
            # Bursts (a page load, retries within seconds) swell counts but not the minutes that
            # saw a request: a quiet key whose requests now arrive minute after minute is judged
            # by those minutes too, unblurred by its burst size.
            plain = max(plain, active_surprise(active, covered, (expected / concentrated if length < 60
                                                                 else expected) / covered, burst, log_spread))
        judged.append(WindowJudgement(length, covered, observed, expected, plain))
    return judged


def score_minute(state: KeyState, minute_start_s: int, requests: int,
                 thresholds: RateSpikeThresholds | None = None) -> float:
    """The 0–1 anomaly score of a closed minute with `requests` (the highest of its three windows).

    Pure: reads `state.detector_state["rate_spike"]`, changes nothing. A minute the detector has
    already folded in is not counted twice. 0 while the key is still learning.
    """
    memory = state.detector_state.get(NAME)
    if memory is None:
        return 0.0
    minute = minute_start_s // 60
    folded = minute <= memory.get("m", -1)
    recent = _recent(memory, minute, 0 if folded else requests)
    judged = judge(memory, minute, recent, thresholds or RateSpikeThresholds())
    return max((j.score for j in judged), default=0.0)


class RateSpikeDetector:
    """Significance of 5/15/30/60-minute counts against the key's hour-of-week baseline; one signal
    per episode, updated when it ends; teachable (see `feedback`)."""

    name = NAME
    kinds = (SignalKind.RATE_SPIKE.value,)

    def __init__(self, thresholds: RateSpikeThresholds | None = None) -> None:
        self.thresholds = thresholds or RateSpikeThresholds()

    def observe(
        self,
        key_id: str,
        state: KeyState,
        events: Sequence[KeyUsageEvent],
        closed_minutes: Sequence[tuple[int, MinuteAggregate]],
    ) -> list[Signal]:
        if not closed_minutes:
            return []
        memory = state.detector_state.get(self.name)
        if memory is None:
            memory = state.detector_state[self.name] = new_memory(closed_minutes[0][0] // 60)
        limits = self.thresholds
        first_hour = memory["f"] // 60
        signals: list[Signal] = []
        for minute_s, aggregate in closed_minutes:
            minute = minute_s // 60
            if minute < memory.get("m", -1):
                continue  # older than what was judged already (closed minutes arrive in order)
            requests = aggregate.requests
            episode = memory["e"]
            if episode and minute - episode[1] > limits.calm_minutes:
                if episode[4]:
                    signals.append(self._episode_signal(key_id, state, episode))
                episode = memory["e"] = 0
            if episode:
                episode[3] += requests
            rate_baseline.advance(memory, minute // 60, first_hour)
            recent = _recent(memory, minute, requests)
            rate_baseline.add_minute(memory, requests, recent[0][-1])
            memory["c"], memory["p"], memory["a"] = recent
            memory["b"], memory["m"] = max(memory["b"], minute // BUCKET_MINUTES), minute
            judged = judge(memory, minute, recent, limits)
            if not judged:
                continue
            surprises = [j.surprise for j in judged]
            memory["x"] = [round(min(1.0, value / SCORE_SCALE), 3) for value in surprises]
            if max(surprises) < limits.calm_surprise:
                continue
            hottest = max(judged, key=lambda j: j.surprise)
            rate_baseline.mark_hot(memory)
            slot = hour_of_week(minute // 60)
            known = memory["j"]
            if episode:
                episode[1] = minute
                if episode[4] and hottest.score * 1000 > episode[5]:
                    episode[5] = round(hottest.score * 1000)
                if not count_at(known, slot):
                    memory["j"] = with_count(known, slot, 1)
                continue
            needed = fire_surprise(memory["g"], limits)
            firing = [j for j in judged if j.surprise >= needed
                      and j.observed - j.expected >= limits.min_excess
                      and j.observed >= limits.min_ratio * j.expected]
            if not firing:
                continue
            fired = max(firing, key=lambda j: j.surprise)
            start = minute + 1 - fired.covered
            # [first hot minute, last hot minute, window start, requests since, 1 if signalled,
            #  peak score x 1000, expected per minute x 1000]
            memory["e"] = [minute, minute, start, fired.observed, 0, round(fired.score * 1000),
                           round(1000 * fired.expected / fired.covered)]
            if count_at(known, slot) >= limits.known_after_weeks:
                # the key spiked at this hour of the week before: a weekly job, not news
                memory["j"] = with_count(known, slot, min(MAX_WEEKS, count_at(known, slot) + 1))
                continue
            memory["j"] = with_count(known, slot, min(MAX_WEEKS, count_at(known, slot) + 1))
            memory["e"][4] = 1
            signals.append(self._signal(key_id, state, minute, aggregate, fired, judged))
        return signals

    def _signal(self, key_id: str, state: KeyState, minute: int, aggregate: MinuteAggregate,
                fired: WindowJudgement, judged: list[WindowJudgement]) -> Signal:
        limits = self.thresholds
        ratio = fired.observed / fired.expected if fired.expected > 0 else float("inf")
        severe = fired.surprise >= limits.severe_surprise and ratio >= limits.severe_ratio
        minute_ms = minute * MINUTE_MS
        end_ms = minute_ms + MINUTE_MS
        start_ms = end_ms - fired.covered * MINUTE_MS
        weekday, hour_of_day = divmod(hour_of_week(minute // 60), 24)
        ips = sorted(aggregate.ips)
        times = f"{ratio:.0f}×" if ratio < 1000 else "over 1,000×"
        message = (
            f"Key {key_id} made {count_text(fired.observed)} requests in the {plural(fired.covered, 'minute')} to "
            f"{minute_text(end_ms)} where its own baseline for {WEEKDAYS[weekday]}s around {hour_of_day:02d}:00 UTC "
            f"expects about {count_text(round(fired.expected, 1))} ({times} that; {chance_text(fired.surprise)} under its "
            f"normal variation, anomaly score {fired.score:.2f}), the last minute from {len(ips)} IP "
            f"address{'es' if len(ips) != 1 else ''}; further minutes of this spike are folded into this signal."
        )
        return build_signal(
            key_id=key_id,
            project_id=state.project_id,
            kind=SignalKind.RATE_SPIKE,
            severity=Severity.HIGH if severe else Severity.MEDIUM,
            score=fired.score,
            observed=float(fired.observed),
            expected=fired.expected,
            window_start_ms=start_ms,
            window_ms=fired.covered * MINUTE_MS,
            detected_at_ms=end_ms,
            evidence={
                "minutes": [minute_text(minute_ms)],
                "windows": [f"{j.minutes} min: {j.observed} vs {j.expected:.1f} expected, score {j.score:.2f}"
                            for j in judged],
                "anomaly_score": [f"{fired.score:.3f}"],
                "rate_per_minute": [f"{fired.observed / fired.covered:.4g}"],
                "ips": ips[:10],
                "networks": networks_with_counts(ips, 5),
                "outcomes": [f"{outcome.value}={n}" for outcome, n in zip(OUTCOME_ORDER, aggregate.outcomes,
                                                                           strict=True) if n],
            },
            message=message,
        )

    def _episode_signal(self, key_id: str, state: KeyState, episode: list[int]) -> Signal:
        """The episode's signal again (same id: same key, kind and window start), now covering the
        whole spike: a sink or alert that keeps signals by id updates, nothing new is raised."""
        first, last, start, observed, _, peak, expected_milli = episode
        minutes = last + 1 - start
        expected = expected_milli / 1000 * minutes
        score = peak / 1000
        end_ms = (last + 1) * MINUTE_MS
        message = (
            f"Key {key_id} ran above its own baseline for {plural(minutes, 'minute')}, from "
            f"{minute_text(start * MINUTE_MS)} to {minute_text(end_ms)}: {count_text(observed)} requests where "
            f"about {count_text(round(expected, 1))} were expected (peak anomaly score {score:.2f}); the spike "
            f"has ended (an hour without a surprising minute)."
        )
        return build_signal(
            key_id=key_id,
            project_id=state.project_id,
            kind=SignalKind.RATE_SPIKE,
            severity=Severity.HIGH if score >= self.thresholds.severe_surprise / SCORE_SCALE else Severity.MEDIUM,
            score=score,
            observed=float(observed),
            expected=expected,
            window_start_ms=start * MINUTE_MS,
            window_ms=minutes * MINUTE_MS,
            detected_at_ms=end_ms + self.thresholds.calm_minutes * MINUTE_MS,
            evidence={
                "minutes": [minute_text(first * MINUTE_MS), minute_text(last * MINUTE_MS)],
                "hours": _hours_of_week(start, last),
                "anomaly_score": [f"{score:.3f}"],
                "rate_per_minute": [f"{observed / minutes:.4g}"],
            },
            message=message,
        )

    def teach(self, state: KeyState, feedback: DetectorFeedback) -> bool:
        """Feedback: the rate the signal saw is normal for this key now.

        The key's overall level is raised so that the signal's hour expects that rate (its rhythm
        over the week is kept), and an open episode ends. Idempotent: taught again, the rate is
        already expected and nothing moves. Returns whether anything changed.
        """
        if feedback.kind not in self.kinds:
            return False
        memory = state.detector_state.get(self.name)
        if memory is None:
            return False
        rate = _taught_rate(feedback)
        if rate is None:
            return False
        end_minute = feedback.window_end_ms // MINUTE_MS
        history_hours = (end_minute - memory["f"]) / 60
        changed = rate_baseline.raise_level(memory, max(end_minute - 1, 0) // 60, history_hours, rate)
        if memory["e"]:
            memory["e"] = 0
            changed = True
        return changed


def _taught_rate(feedback: DetectorFeedback) -> float | None:
    """Requests a minute of the marked signal, from its evidence (`rate_per_minute`, or the
    observed count of its first window line over the window's length)."""
    minutes = max(1.0, (feedback.window_end_ms - feedback.window_start_ms) / MINUTE_MS)
    for text in feedback.evidence.get("rate_per_minute", ()):
        try:
            return float(text)
        except ValueError:
            continue
    for text in feedback.evidence.get("observed", ()):
        try:
            return float(text) / minutes
        except ValueError:
            continue
    return None


def anomaly_scores(state: KeyState) -> dict[int, float]:
    """The key's latest 0–1 anomaly score per window length (5, 15, 30, 60 minutes), as judged on
    its newest closed minute; empty while the key is still learning."""
    memory = state.detector_state.get(NAME)
    if not memory or "x" not in memory:
        return {}
    return dict(zip(WINDOWS, memory["x"], strict=True))


def _hours_of_week(first_minute: int, last_minute: int, most: int = 6) -> list[str]:
    """The hours of the week an episode spans ("Tuesday 01:00 UTC", ...), its first `most` of them:
    the closing signal replaces the first by id, so it names where in the key's week it happened."""
    hours = range(first_minute // 60, last_minute // 60 + 1)
    return [f"{WEEKDAYS[hour_of_week(h) // 24]} {hour_of_week(h) % 24:02d}:00 UTC" for h in hours][:most]
