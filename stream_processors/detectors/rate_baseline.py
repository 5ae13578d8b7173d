"""A key's expected request rate for every hour of the week, learnt hour by hour in event time.

The rate expected at an hour is the key's overall rate `g` (requests per minute, an average over
about two days, so a lasting change of level is learnt within a day or two) times a shape factor:
the hour of the week's own ratio (`w`, 168 slots, remembered over about two weeks), shrunk toward
the hour of the day's ratio (`d`, 24 slots, about four days), itself shrunk toward 1 (the overall
rate). An hour never seen yet contributes nothing but the shrinkage, so a new key starts with its
overall rate everywhere and sharpens as days and weeks pass.

How far real counts stray from that expectation (beyond Poisson noise) is learnt too, as the
dispersion of hourly counts (`s`: decayed sums, method of moments), and feeds the significance of
a window (see `significance`). Hours marked hot (a surprising window in them) do not teach it.

Empty hours are observations too (of zero): they are folded in when the next active minute closes.
Requests also come in bursts (a page load, a retry within seconds): the mean burst size `k`,
learnt from how many minutes of an hour were active, widens short windows (`burst_index`).

Memory (about 330 bytes): `g`, `d` (48 chars), `w` (168 chars), `q` (56 chars), `s` [S1, S2],
`k`, `h` [hour, requests, active minutes, 1 if hot, busiest bucket].
"""

from __future__ import annotations

import math
from typing import Any

from keytrail.stream_processors.detectors.event_time import WEEK_HOURS, hour_of_week
from keytrail.stream_processors.detectors.levels import ALPHABET
from keytrail.stream_processors.detectors.week_counts import EMPTY, count_at, with_count

WEEK_STEP = 1.3
"""Hour-of-week ratios on a log scale, one character each: level l >= 1 is 1.3**(l - 32)."""
_WEEK_CENTER = 32
DAY_STEP = 1.02
"""Hour-of-day ratios, two characters each (4,095 levels): finer, they move by small steps."""
_DAY_CENTER = 2048
_INDEX = {char: index for index, char in enumerate(ALPHABET)}
WEEK_RATIO: tuple[float, ...] = (1.0,) + tuple(WEEK_STEP ** (level - _WEEK_CENTER) for level in range(1, 64))
_LOG_WEEK = math.log(WEEK_STEP)
_LOG_DAY = math.log(DAY_STEP)

ALPHA_LEVEL_HOURS = 168
"""The overall rate averages over about a week: slower, it would follow the weekly rhythm itself
(a weekend would lower Monday's expectations); a lasting shift is still learnt within days."""
ALPHA_DAY = 0.25
DAY_PRIOR = 0.25
"""Weight (in days) of the overall rate in an hour of the day's expectation: strong on day one,
a fifth by day four. An hour never seen at all is expected at the overall rate."""
ALPHA_WEEK_UP, ALPHA_WEEK_DOWN = 0.8, 0.3
"""An hour of the week learns a rise fast (a weekly job is known after one or two occurrences) and
forgets slowly."""
WEEK_PRIOR = 1.0
"""Weight (in weeks) of the hour of the day in an hour of the week's expectation."""
EVIDENCE_PRIOR = 15.0
"""Requests' worth of weight the broader expectation keeps against a shape factor (see `expected_rate`)."""
CONCENTRATION = (1.0, 2.0, 4.0, 8.0)
"""Levels of `q`, 2 bits per hour of the week: the busiest five minutes of the hour beyond Poisson
noise, as a multiple of the hour's mean; a level is kept for weeks (it drops one step each time
the hour comes round less concentrated)."""
ALPHA_BURST = 0.05
"""The burst size averages over about twenty active hours."""
DISPERSION_DECAY = 1 / 336
"""The dispersion sums forget with a two-week horizon."""
PRIOR_DISPERSION = 0.1
"""Dispersion assumed before the key's own hours say otherwise (a coefficient of variation of 0.3)."""
MIN_DISPERSION, MAX_DISPERSION = 0.05, 1.0
"""No key's hours are steadier than ±22 %: a busy hour, a busy day, a baseline learnt from a few weeks."""
PRIOR_HOURS = 48.0
QUIET_PRIOR_REQUESTS = 2000.0
"""The prior dispersion weighs as PRIOR_HOURS hours plus QUIET_PRIOR_REQUESTS / (requests an hour): a
quiet key's hours are mostly counting noise and say little about its spread, a busy key's say much."""
WINSOR = 4.0
"""An hour teaches the overall rate at most this many times it (a spike or a weekly job cannot drag
the level up; a lasting shift still lifts it by up to 6 % an hour)."""
MAX_EMPTY_HOURS = 2 * WEEK_HOURS
"""Beyond two weeks of silence everything has been forgotten anyway: older empty hours only decay `g`."""


def new_baseline(hour: int) -> dict[str, Any]:
    return {"g": 0.0, "d": "00" * 24, "w": "0" * WEEK_HOURS, "q": EMPTY, "s": [0.0, 0.0], "k": 1.0,
            "h": [hour, 0, 0, 0, 0]}


def concentration(memory: dict[str, Any], hour: int) -> float:
    """How many times the hour's mean rate its busiest five minutes usually run at (1, 2, 4 or 8):
    a weekly job of twenty minutes inside an hour of the week, say."""
    return CONCENTRATION[count_at(memory["q"], hour_of_week(hour))]


def _day_ratio(text: str, hour_of_day: int) -> float | None:
    level = _INDEX[text[2 * hour_of_day]] * 64 + _INDEX[text[2 * hour_of_day + 1]]
    return None if level == 0 else DAY_STEP ** (level - _DAY_CENTER)


def _with_day_ratio(text: str, hour_of_day: int, ratio: float) -> str:
    level = 1 if ratio <= 0 else min(4095, max(1, round(math.log(ratio) / _LOG_DAY) + _DAY_CENTER))
    return text[: 2 * hour_of_day] + ALPHABET[level >> 6] + ALPHABET[level & 63] + text[2 * hour_of_day + 2 :]


def _week_ratio(text: str, slot: int) -> float | None:
    level = _INDEX[text[slot]]
    return None if level == 0 else WEEK_RATIO[level]


def _with_week_ratio(text: str, slot: int, ratio: float) -> str:
    level = 1 if ratio <= 0 else min(63, max(1, round(math.log(ratio) / _LOG_WEEK) + _WEEK_CENTER))
    return text[:slot] + ALPHABET[level] + text[slot + 1 :]


def expected_rate(memory: dict[str, Any], hour: int, history_hours: float) -> tuple[float, bool]:
    """(requests per minute expected in epoch hour `hour`, whether that hour of the week was seen).

    Each shape factor is trusted by the requests it was learnt from: an hour of the day seen on
    four days of a key making 3 requests an hour rests on about 12 requests, and counts for
    12 / (12 + EVIDENCE_PRIOR) against the overall rate; a busy key's hours speak for themselves.
    A quiet key's hour that happened to be empty once is not expected to stay empty.
    """
    g = memory["g"]
    per_hour = 60.0 * g
    day = _day_ratio(memory["d"], hour % 24)
    if day is None:
        shape = 1.0
    else:
        seen_days = min(4.0, max(1.0, history_hours // 24))
        weight = seen_days * per_hour
        shape = (weight * day + EVIDENCE_PRIOR) / (weight + EVIDENCE_PRIOR)
    week = _week_ratio(memory["w"], hour_of_week(hour))
    if week is None:
        return g * shape, False
    seen_weeks = min(3.0, max(1.0, history_hours // WEEK_HOURS))
    weight = seen_weeks * per_hour
    return g * (weight * week + WEEK_PRIOR * EVIDENCE_PRIOR * shape) / (weight + WEEK_PRIOR * EVIDENCE_PRIOR), True


def dispersion(memory: dict[str, Any]) -> float:
    """The learnt extra-Poisson dispersion of the key's hourly counts (clamped)."""
    s1, s2 = memory["s"]
    hourly = 60.0 * memory["g"]
    prior_weight = (PRIOR_HOURS + QUIET_PRIOR_REQUESTS / max(hourly, 1.0)) * hourly * hourly + 1e-9
    value = (s1 + PRIOR_DISPERSION * prior_weight) / (s2 + prior_weight)
    return MIN_DISPERSION if value < MIN_DISPERSION else MAX_DISPERSION if value > MAX_DISPERSION else value


def burst_index(memory: dict[str, Any]) -> float:
    """How many times its mean a count varies at minute scale (1 = Poisson): requests come in bursts
    (a page load, a retry) of `k` on average, geometric sizes giving an index of 2k - 1."""
    return 2.0 * memory["k"] - 1.0


def add_minute(memory: dict[str, Any], requests: int, bucket_count: int) -> None:
    """One closed active minute of the hour being filled; `bucket_count` is its 5-minute bucket so far."""
    filling = memory["h"]
    filling[1] += requests
    filling[2] += 1
    if bucket_count > filling[4]:
        filling[4] = bucket_count


def mark_hot(memory: dict[str, Any]) -> None:
    """The hour being filled holds an anomaly: it will teach the level and shape, not the spread."""
    memory["h"][3] = 1


def advance(memory: dict[str, Any], hour: int, first_hour: int) -> None:
    """Close the hour being filled and the empty hours before `hour`; start filling `hour`."""
    filling, count, active, hot, peak = memory["h"]
    if hour <= filling:
        return
    if not hot:
        _learn_bursts(memory, count, active)
    _learn_concentration(memory, filling, count, peak)
    _learn_hour(memory, filling, count, first_hour, teach_dispersion=not hot)
    empty_from = filling + 1
    if hour - empty_from > MAX_EMPTY_HOURS:
        skipped = hour - empty_from - MAX_EMPTY_HOURS
        memory["g"] *= (1.0 - 1.0 / ALPHA_LEVEL_HOURS) ** skipped
        empty_from += skipped
    for empty in range(empty_from, hour):
        _learn_hour(memory, empty, 0, first_hour, teach_dispersion=True)
    memory["h"] = [hour, 0, 0, 0, 0]


def _learn_concentration(memory: dict[str, Any], hour: int, count: int, peak: int) -> None:
    slot = hour_of_week(hour)
    old = count_at(memory["q"], slot)
    level = 0
    mean = count / 12.0
    if count >= 10 and peak - mean > 3.0 * math.sqrt(peak):  # beyond Poisson noise
        level = min(3, max(0, round(math.log2(peak / mean))))
    level = max(level, old - 1)
    if level != old:
        memory["q"] = with_count(memory["q"], slot, level)


def _learn_bursts(memory: dict[str, Any], count: int, active: int) -> None:
    """Requests per burst from an hour's requests and active minutes: with bursts arriving as a
    Poisson process, `active` of 60 minutes saying `-60 ln(1 - active/60)` bursts arrived."""
    if active < 2 or active >= 60 or count <= active:
        return
    bursts = -60.0 * math.log1p(-active / 60.0)
    size = min(20.0, count / bursts)
    memory["k"] = _short(max(1.0, memory["k"] + ALPHA_BURST * (size - memory["k"])))


def _learn_hour(memory: dict[str, Any], hour: int, count: int, first_hour: int, teach_dispersion: bool) -> None:
    history_hours = hour - first_hour + 1
    expected, _ = expected_rate(memory, hour, history_hours)
    g = memory["g"]
    rate = count / 60.0
    cap = WINSOR * g + 0.05
    taught = rate if rate < cap or history_hours <= 24 else cap  # the first day teaches as it is
    if teach_dispersion and history_hours > 24:
        mu = 60.0 * expected
        s1, s2 = memory["s"]
        keep = 1.0 - DISPERSION_DECAY
        # Upward deviations only, twice their square less the Poisson part (unbiased for symmetric
        # noise): a spike is judged against how far the key strays upward, and hours the baseline
        # over-predicts (a quiet night still shrunk toward the day) must not widen it.
        excess = min(count - mu, mu + 3.0 * math.sqrt(mu))  # one odd hour cannot blow it up
        upward = 2.0 * excess * excess if count > mu else 0.0
        memory["s"] = [_short(s1 * keep + upward - mu), _short(s2 * keep + mu * mu)]
    alpha = max(1.0 / history_hours, 1.0 / ALPHA_LEVEL_HOURS)
    g = g + alpha * (taught - g)
    memory["g"] = _short(g)
    ratio = taught / g if g > 1e-9 else 1.0
    hour_of_day, slot = hour % 24, hour_of_week(hour)
    day = _day_ratio(memory["d"], hour_of_day)
    memory["d"] = _with_day_ratio(memory["d"], hour_of_day, ratio if day is None else day + ALPHA_DAY * (ratio - day))
    # The hour of the week learns the rate as it was, a spike included: a weekly job must be known
    # after an occurrence or two (the level and the hour of the day stay robust to it).
    raw = rate / g if g > 1e-9 else 1.0
    week = _week_ratio(memory["w"], slot)
    if week is not None:
        raw = week + (ALPHA_WEEK_UP if raw > week else ALPHA_WEEK_DOWN) * (raw - week)
    memory["w"] = _with_week_ratio(memory["w"], slot, raw)


def raise_level(memory: dict[str, Any], hour: int, history_hours: float, observed_rate: float) -> bool:
    """Feedback: `observed_rate` at `hour` is normal now; scale the overall level so it is expected.

    Returns whether the level moved: a rate already expected (within 1 %) changes nothing, so the
    same feedback taught twice is taught once.
    """
    expected, _ = expected_rate(memory, hour, history_hours)
    if observed_rate <= expected * 1.01:
        return False
    for _ in range(8):  # the shape's weights grow with the level: settle on the fixed point
        memory["g"] = _short(memory["g"] * observed_rate / expected) if expected > 0 else _short(observed_rate)
        expected, _ = expected_rate(memory, hour, history_hours)
        if observed_rate <= expected * 1.002:
            break
    return True


def _short(value: float) -> float:
    """Six significant digits: the memory stays short in JSON and identical on replay."""
    return float(f"{value:.6g}")
