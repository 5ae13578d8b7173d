"""How many weeks a key was active in each of the 168 hours of the week: 2 bits per hour, 56 characters."""

from __future__ import annotations

from keytrail.stream_processors.detectors.event_time import WEEK_HOURS
from keytrail.stream_processors.detectors.levels import ALPHABET

MAX_WEEKS = 3
"""Counts saturate here: 'seen in three or more weeks' is as normal as it gets."""
EMPTY = ALPHABET[0] * (WEEK_HOURS // 3)
_INDEX = {char: index for index, char in enumerate(ALPHABET)}


def read_counts(text: str) -> list[int]:
    """168 counts (0..3), hour 0 = Monday 00:00 UTC."""
    counts: list[int] = []
    for char in text:
        value = _INDEX[char]
        counts.extend((value & 3, (value >> 2) & 3, value >> 4))
    return counts


def write_counts(counts: list[int]) -> str:
    return "".join(
        ALPHABET[counts[i] | counts[i + 1] << 2 | counts[i + 2] << 4] for i in range(0, WEEK_HOURS, 3)
    )


def count_at(text: str, slot: int) -> int:
    """One hour's count without decoding the rest."""
    return (_INDEX[text[slot // 3]] >> (2 * (slot % 3))) & 3


def with_count(text: str, slot: int, count: int) -> str:
    """The packed string with one hour's count replaced."""
    index, shift = divmod(slot, 3)
    value = _INDEX[text[index]] & ~(3 << (2 * shift)) | count << (2 * shift)
    return text[:index] + ALPHABET[value] + text[index + 1 :]
