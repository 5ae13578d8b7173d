"""The compact encodings behind the detectors' memory: log-scale levels, week counts, decaying peaks."""

from hypothesis import given
from hypothesis import strategies as st

from keytrail.stream_processors.detectors.levels import (
    CEILING,
    level_of,
    lowered,
    peak_level,
    raise_peak,
    read_levels,
    with_level,
    write_levels,
)
from keytrail.stream_processors.detectors.networks import is_private, network_of, network_text
from keytrail.stream_processors.detectors.week_counts import count_at, read_counts, with_count, write_counts
from keytrail.stream_processors.detectors.wording import hour_ranges, weekday_ranges

levels_168 = st.lists(st.integers(0, 63), min_size=168, max_size=168)
counts_168 = st.lists(st.integers(0, 3), min_size=168, max_size=168)


@given(st.integers(0, 10**6))
def test_a_level_ceiling_is_never_below_the_value_and_at_most_25_percent_above(value):
    ceiling = CEILING[level_of(value)]
    assert value <= ceiling <= max(1.25, value * 1.25 + 1e-9)


@given(levels_168, st.integers(0, 167), st.integers(0, 400), st.integers(0, 70))
def test_lowering_a_wrapping_range_of_levels(levels, start, length, steps):
    expected = list(levels)
    for offset in range(min(length, 168)):
        slot = (start + offset) % 168
        expected[slot] = max(0, expected[slot] - steps)
    assert read_levels(lowered(write_levels(levels), start, length, steps)) == expected


@given(levels_168, st.integers(0, 167), st.integers(0, 63))
def test_replacing_one_level(levels, index, level):
    assert read_levels(with_level(write_levels(levels), index, level)) == levels[:index] + [level] + levels[index + 1:]


@given(counts_168, st.integers(0, 167), st.integers(0, 3))
def test_week_counts_pack_three_hours_per_character(counts, slot, count):
    packed = write_counts(counts)
    assert len(packed) == 56 and read_counts(packed) == counts
    assert [count_at(packed, i) for i in range(168)] == counts
    assert read_counts(with_count(packed, slot, count)) == counts[:slot] + [count] + counts[slot + 1:]


def test_a_remembered_peak_drops_one_level_per_period_and_rises_at_once():
    peak = [0, 0]
    raise_peak(peak, 100, hour=0, decay_hours=24)
    assert peak_level(peak, 23, 24) == level_of(100) and peak_level(peak, 72, 24) == level_of(100) - 3
    raise_peak(peak, 5, hour=72, decay_hours=24)
    assert peak_level(peak, 72, 24) == level_of(100) - 3
    raise_peak(peak, 1000, hour=80, decay_hours=24)
    assert peak == [level_of(1000), 80]


def test_networks_are_slash24_and_slash48_and_private_space_is_recognised():
    assert network_of("10.20.30.44") == "10.20.30" and network_text("10.20.30") == "10.20.30.0/24"
    assert network_text(network_of("2001:db8:1:2::7")) == "2001:db8:1::/48"
    assert network_of("::ffff:198.51.100.7") == "198.51.100"
    assert [is_private(network_of(ip)) for ip in ("10.1.2.3", "172.20.1.1", "192.168.1.1", "100.64.0.1",
                                                  "fd00:1::1", "8.8.8.8", "172.32.0.1", "2001:db8::1")] == [
        True, True, True, True, True, False, False, False]


def test_hours_and_days_read_as_ranges():
    assert hour_ranges(range(8, 18)) == "08:00–18:00 UTC"
    assert hour_ranges([22, 23, 0, 1]) == "22:00–02:00 UTC"
    assert hour_ranges([1, 9, 10]) == "01:00–02:00 and 09:00–11:00 UTC"
    assert weekday_ranges(range(5)) == "Mon–Fri" and weekday_ranges([0, 2, 5, 6]) == "Mon, Wed and Sat–Sun"
