"""Activity at an hour of the week at which the key was never active."""

from datetime import timedelta

from keytrail.schemas.signals import Severity, SignalKind
from keytrail.stream_processors.detectors import UnusualHourDetector
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
    assert "never been active on Wednesdays between 02:00 and 05:00 UTC nor at that time on any other day" in signal.message
    assert "usually active Mon–Fri, 08:00–18:00 UTC" in signal.message


def test_first_weekend_use_of_a_weekday_key_is_low():
    history = steady("key_h", days=19, **OFFICE)
    saturday = event("key_h", START + timedelta(days=19, hours=11))
    signals, _ = run([UnusualHourDetector()], history + [saturday])
    assert [s.severity for s in signals] == [Severity.LOW]
    assert "Saturdays between 10:00 and 13:00 UTC" in signals[0].message


def test_quiet_during_learning():
    history = steady("key_h", days=10, **OFFICE)
    night = event("key_h", START + timedelta(days=10, hours=3))
    assert run([UnusualHourDetector()], history + [night])[0] == []


def test_an_hour_next_to_a_usual_one_is_not_unusual():
    history = steady("key_h", days=21, **OFFICE)
    early = event("key_h", START + timedelta(days=22, hours=7, minutes=40))  # Tuesday 07:40, day starts at 08:00
    assert run([UnusualHourDetector()], history + [early])[0] == []


def test_a_key_whose_hours_keep_wandering_stays_quiet():
    history = steady("key_h", days=21, **OFFICE)
    strays = [event("key_h", START + timedelta(days=day, hours=2 + day % 5)) for day in (9, 16, 22)]
    assert run([UnusualHourDetector()], history + strays)[0] == []


def test_a_whole_night_session_gives_one_signal():
    history = steady("key_h", days=21, **OFFICE)
    night = [event("key_h", START + timedelta(days=23, hours=h, minutes=5)) for h in (0, 1, 2, 3, 4, 5, 6)]
    signals, _ = run([UnusualHourDetector()], history + night)
    assert [s.evidence["hours"] for s in signals] == [["Wednesday 00:00 UTC"]]
