"""Rates on a log scale, one character per value, so per-key rate memories stay a few hundred bytes.

Level 0 means "nothing"; level l >= 1 covers [1.25**(l-1), 1.25**l). Detectors compare against the
upper end of a level (`CEILING`), so quantisation only ever makes them more tolerant (by < 25 %).
A remembered peak "decays" by dropping one level (20 %) per period in which it was not matched.
"""

from __future__ import annotations

import math

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"
"""64 JSON-safe characters: level i is written as ALPHABET[i]."""
TOP = len(ALPHABET) - 1
STEP = 1.25
CEILING: tuple[float, ...] = (0.0,) + tuple(STEP**level for level in range(1, TOP + 1))
"""Upper end of each level: level 63 is about 1.27 million (per minute)."""
_INDEX = {char: index for index, char in enumerate(ALPHABET)}
_LOG_STEP = math.log(STEP)


def _level_slow(value: float) -> int:
    if value <= 0:
        return 0
    if value < 1:
        return 1
    return min(TOP, 1 + int(math.log(value) / _LOG_STEP))


_SMALL = tuple(_level_slow(count) for count in range(4096))


def level_of(value: float) -> int:
    """The level whose range holds `value`."""
    if isinstance(value, int) and 0 <= value < 4096:
        return _SMALL[value]
    return _level_slow(value)


def read_levels(text: str) -> list[int]:
    """Decode a profile string into levels."""
    return [_INDEX[char] for char in text]


def write_levels(levels: list[int]) -> str:
    """Encode levels into a profile string."""
    return "".join(ALPHABET[level] for level in levels)


def level_at(text: str, index: int) -> int:
    """One level of a profile string without decoding the rest."""
    return _INDEX[text[index]]


def with_level(text: str, index: int, level: int) -> str:
    """The profile string with one level replaced."""
    return text[:index] + ALPHABET[level] + text[index + 1 :]


_LOWER = [str.maketrans(ALPHABET, ALPHABET[0] * min(steps, TOP + 1) + ALPHABET[: max(0, TOP + 1 - steps)])
          for steps in range(TOP + 2)]
"""Translation tables lowering every level by `steps` (floored at 0)."""


def lowered(text: str, start: int, length: int, steps: int) -> str:
    """The profile string with `length` slots from `start` (wrapping round) lowered by `steps` levels."""
    if steps <= 0 or length <= 0:
        return text
    table = _LOWER[min(steps, TOP + 1)]
    size = len(text)
    if length >= size:
        return text.translate(table)
    end = start + length
    if end <= size:
        return text[:start] + text[start:end].translate(table) + text[end:]
    end -= size
    return text[:end].translate(table) + text[end:start] + text[start:].translate(table)


def peak_level(peak: list[int], hour: int, decay_hours: int) -> int:
    """A remembered peak `[level, since_hour]`, decayed by one level per `decay_hours` since then."""
    level, since = peak
    if hour <= since:
        return level
    return max(0, level - (hour - since) // decay_hours)


def raise_peak(peak: list[int], value: float, hour: int, decay_hours: int) -> None:
    """Fold one observation into a remembered peak, in place."""
    current = peak_level(peak, hour, decay_hours)
    observed = level_of(value)
    if observed >= current:
        peak[0], peak[1] = observed, max(hour, peak[1])
    elif hour > peak[1]:
        peak[0] = current
        peak[1] += (hour - peak[1]) // decay_hours * decay_hours
