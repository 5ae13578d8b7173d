"""Activity outside the weekly band in which a key has shown a stable working-hours pattern."""

from datetime import timedelta

from keytrail.schemas.signals import Severity, SignalKind
from keytrail.stream_processors.core import KeyState
from keytrail.stream_processors.detectors import UnusualHourDetector
from keytrail.stream_processors.detectors.feedback import DetectorFeedback, TeachableDetector
from keytrail.stream_processors.detectors.signal_builder import explanation_of
from keytrail.stream_processors.state_stores import InMemoryStates
from tests.detectors.scenarios import START, event, run, steady

OFFICE = {"hours": range(8, 18), "weekdays": range(5), "every_s": 900}
"""Mon–Fri 08:00–18:00 UTC."""


def test_use_at_night_by_an_office_hours_key_is_medium_and_explained():
    history = steady("key_h", days=21, **OFFICE)
    night = event("key_h", START + timedelta(days=23, hours=3, minutes=14), ip="203.0.113.7")  # Wednesday
    signals, _ = run([UnusualHourDetector()], history + [night])
    (signal,) = signals
    assert signal.kind is SignalKind.UNUSUAL_HOUR and signal.severity is Severity.MEDIUM
    assert signal.evidence["hours"] == ["Wednesday 03:00 UTC"] and signal.evidence["ips"] == ["203.0.113.7"]
    assert signal.evidence["usual_days"] == ["Mon–Fri"] and signal.evidence["usual_hours"] == ["08:00–18:00 UTC"]
    assert "Key key_h was used on Wednesday 2026-03-25 03:14 UTC from 203.0.113.7" in signal.message
    assert "outside its usual hours: in 24 days (15 active days) it was usually active Mon–Fri, 08:00–18:00 UTC" in signal.message
    assert "(100% of its 150 active hours), and none of its 180 hours outside that band had been active" in signal.message
    # Observed vs expected: one active hour where the evidence put the chance at (0 + 1/2) / (180 + 1).
    assert signal.observed == 1.0 and signal.expected == round(0.5 / 181, 3)
    assert explanation_of(signal.message).startswith(
        "Observed 1 active hour outside the key's usual weekly band vs 0.003 expected in 2026-03-25 00:00–06:00 UTC")


def test_first_weekend_use_of_a_weekday_key_is_low():
    history = steady("key_h", days=19, **OFFICE)
    saturday = event("key_h", START + timedelta(days=19, hours=11))
    signals, _ = run([UnusualHourDetector()], history + [saturday])
    assert [s.severity for s in signals] == [Severity.LOW]
    assert "a day it does not work" in signals[0].message and "never on Saturdays and Sundays" in signals[0].message
    assert signals[0].expected == 0.1  # four weekend days went by unused: (0 + 1/2) / (4 + 1)


def test_quiet_while_the_key_has_fewer_than_five_active_days():
    """Deliberately changed from "quiet for 14 days": four active days are not yet a pattern, five are."""
    night_after = {4: START + timedelta(days=4, hours=3), 5: START + timedelta(days=5, hours=3)}
    for active_days, night in night_after.items():
        history = steady("key_h", days=active_days, **OFFICE)
        signals, _ = run([UnusualHourDetector()], history + [event("key_h", night)])
        assert len(signals) == (1 if active_days >= 5 else 0), active_days


def test_a_weekday_the_key_never_used_needs_one_to_have_gone_by():
    """A Monday-start key: its first Saturday is no news (no Saturday has gone by yet); its Sunday after a
    quiet Saturday is."""
    history = steady("key_h", days=5, **OFFICE)
    saturday = event("key_h", START + timedelta(days=5, hours=11))
    assert run([UnusualHourDetector()], history + [saturday])[0] == []
    sunday = event("key_h", START + timedelta(days=6, hours=11))
    (signal,) = run([UnusualHourDetector()], history + [sunday])[0]
    assert signal.severity is Severity.LOW and signal.evidence["hours"] == ["Sunday 11:00 UTC"]


def test_an_hour_next_to_a_usual_one_is_not_unusual():
    history = steady("key_h", days=21, **OFFICE)
    early = event("key_h", START + timedelta(days=22, hours=7, minutes=40))  # Tuesday 07:40, day starts at 08:00
    late = event("key_h", START + timedelta(days=22, hours=18, minutes=50))  # Tuesday 18:50, day ends at 18:00
    assert run([UnusualHourDetector()], history + [early, late])[0] == []


def test_a_lunch_break_is_not_a_night():
    history = steady("key_h", days=14, hours=[8, 9, 10, 14, 15, 16], weekdays=range(5), every_s=900)
    lunch = event("key_h", START + timedelta(days=15, hours=12, minutes=20))  # between 11:00 and 13:00 (±1 h)
    assert run([UnusualHourDetector()], history + [lunch])[0] == []


def test_a_key_whose_hours_keep_wandering_stays_quiet_after_its_first_stray():
    """Deliberately changed: the first stray of a clean office key is news (it used to wait 28 days
    without surprises); strays every other day make its nights no longer quiet, so the rest are not."""
    history = steady("key_h", days=28, **OFFICE)
    stray_days = (9, 11, 14, 16, 18, 21, 23, 25)  # weekdays
    strays = [event("key_h", START + timedelta(days=day, hours=(2 + 5 * day) % 7)) for day in stray_days]
    signals, _ = run([UnusualHourDetector()], history + strays)
    assert [s.detected_at for s in signals] == [strays[0].occurred_at]


def test_a_key_used_around_the_clock_is_never_flagged():
    history = steady("key_h", days=21, every_s=1800)
    odd = [event("key_h", START + timedelta(days=22, hours=3, minutes=m)) for m in (1, 7)]
    assert run([UnusualHourDetector()], history + odd)[0] == []


def test_a_whole_night_session_gives_one_signal():
    history = steady("key_h", days=21, **OFFICE)
    night = [event("key_h", START + timedelta(days=23, hours=h, minutes=5)) for h in (0, 1, 2, 3, 4, 5, 6)]
    signals, _ = run([UnusualHourDetector()], history + night)
    assert [s.evidence["hours"] for s in signals] == [["Wednesday 00:00 UTC"]]


def test_teach_makes_that_hour_band_known_idempotently_and_touches_only_its_own_memory():
    detector = UnusualHourDetector()
    assert isinstance(detector, TeachableDetector) and detector.kinds == ("unusual_hour",)
    history = steady("key_h", days=21, **OFFICE)
    night = event("key_h", START + timedelta(days=23, hours=3, minutes=14))
    (signal,), states = run([detector], history + [night])
    state = states.get("key_h")
    state.detector_state["other_detector"] = {"kept": [1, 2]}
    feedback = DetectorFeedback(key_id="key_h", project_id="proj_a", kind=signal.kind.value,
                                signal_id=signal.signal_id, window_start_ms=int(signal.window_start.timestamp() * 1000),
                                window_end_ms=int(signal.window_end.timestamp() * 1000), evidence=signal.evidence)
    before = KeyState.from_bytes(state.to_bytes())
    assert detector.teach(state, feedback) is True
    taught = KeyState.from_bytes(state.to_bytes())
    assert detector.teach(state, feedback) is False and state == taught  # taught twice = taught once
    assert {k: v for k, v in taught.detector_state.items() if k != "unusual_hour"} == {
        k: v for k, v in before.detector_state.items() if k != "unusual_hour"}
    assert (taught.watermark_ms, taught.open_minutes, taught.total_requests) == (
        before.watermark_ms, before.open_minutes, before.total_requests)
    # A week of office days later the same hour (±1 h) is known; another night hour is still news.
    week = steady("key_h", days=8, start=START + timedelta(days=24), **OFFICE)
    again = [event("key_h", START + timedelta(days=31, hours=2, minutes=50)),
             event("key_h", START + timedelta(days=31, hours=4, minutes=10))]
    untaught = InMemoryStates({"key_h": before})
    assert [s.evidence["hours"] for s in run([detector], week + again, states=untaught)[0]] == [["Thursday 02:00 UTC"]]
    assert run([detector], week + again, states=states)[0] == []
    other = event("key_h", START + timedelta(days=31, hours=23, minutes=30))
    assert [s.evidence["hours"] for s in run([detector], [other], states=states)[0]] == [["Thursday 23:00 UTC"]]


def test_teaching_a_weekend_signal_makes_that_day_known():
    detector = UnusualHourDetector()
    history = steady("key_h", days=19, **OFFICE)
    (signal,), states = run([detector], history + [event("key_h", START + timedelta(days=19, hours=11))])
    feedback = DetectorFeedback(key_id="key_h", project_id="proj_a", kind="unusual_hour", signal_id=signal.signal_id,
                                window_start_ms=0, window_end_ms=0, evidence=signal.evidence)
    assert detector.teach(states.get("key_h"), feedback) is True
    next_saturday = event("key_h", START + timedelta(days=26, hours=10))
    assert run([detector], [next_saturday], states=states)[0] == []


def test_teach_ignores_feedback_on_other_kinds_and_falls_back_to_the_window():
    detector = UnusualHourDetector()
    state = KeyState(project_id="proj_a")
    other = DetectorFeedback(key_id="key_h", project_id="proj_a", kind="new_route", signal_id="s",
                             window_start_ms=0, window_end_ms=3_600_000)
    assert detector.teach(state, other) is False and state.detector_state == {}
    window = DetectorFeedback(key_id="key_h", project_id="proj_a", kind="unusual_hour", signal_id="s",
                              window_start_ms=2 * 3_600_000, window_end_ms=4 * 3_600_000)  # Thursday 02:00–04:00
    assert detector.teach(state, window) is True
    memory = state.detector_state["unusual_hour"]
    assert memory["t"] == 0b1100 and memory["u"] == 1 << 3


def test_a_memory_written_by_the_previous_version_keeps_what_it_had_learnt():
    """States in a Faust table outlive a deploy: the old layout (weeks active per hour of the week) is
    carried over, not dropped, so an office-hours key does not start learning again."""
    from keytrail.stream_processors.detectors.week_counts import write_counts

    weeks = [3 if d < 5 and 8 <= h < 18 else 0 for d in range(7) for h in range(24)]
    last_hour = int((START + timedelta(days=25, hours=17)).timestamp()) // 3600  # Friday of week 4, 17:00
    old = {"f": int(START.timestamp()) // 86400, "p": write_counts(weeks), "n": 190, "a": [last_hour - 1, last_hour],
           "s": -1, "x": 0}
    states = InMemoryStates({"key_h": KeyState(project_id="proj_a", detector_state={"unusual_hour": old})})
    night = event("key_h", START + timedelta(days=29, hours=2, minutes=30))  # Tuesday 02:30
    (signal,) = run([UnusualHourDetector()], [night], states=states)[0]
    assert signal.severity is Severity.MEDIUM and signal.evidence["usual_hours"] == ["08:00–18:00 UTC"]
    memory = states.get("key_h").detector_state["unusual_hour"]
    assert memory["c"][8:18] == "F" * 10 and memory["n"] == 191  # 5 weekdays x 3 weeks at each office hour


def test_a_weekly_job_of_an_office_key_is_news_once_not_every_week():
    history = steady("key_h", days=35, **OFFICE)
    jobs = [event("key_h", START + timedelta(days=day, hours=3, minutes=5 + m)) for day in (13, 20, 27, 34) for m in range(20)]
    signals, _ = run([UnusualHourDetector()], history + jobs)
    assert [s.evidence["hours"] for s in signals] == [["Sunday 03:00 UTC"]]
    assert signals[0].detected_at == jobs[0].occurred_at


def test_a_key_busy_at_any_hour_is_not_judged_by_the_day_either():
    """Found by the 100-key false-alert run: a key active at any hour on weekdays and Sundays, never yet on
    a Saturday, used one Saturday evening. Without quiet nights it has no working-hours pattern to break."""
    history = steady("key_h", days=21, every_s=1800, weekdays=(0, 1, 2, 3, 4, 6))
    saturday = event("key_h", START + timedelta(days=26, hours=20, minutes=56))
    assert run([UnusualHourDetector()], history + [saturday])[0] == []
