"""A backfill through `keytrail ingest`: idle, never-used and expiring keys flagged in EVENT time (issue 18).

Twelve days of history from March 2026 are ingested in December 2026 (the wall clock). Keys that
stop during the history are flagged idle at the event time they went idle, a key of the key store
that never sent anything is flagged never used, a key that expires inside the history is flagged
expiring at the right event time; a key that stops too close to the end of the data is not. A
quiet key's last minute is closed (its row final) by the watermark. Ingesting the same file again
changes nothing.
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from keytrail.console.cli_ingest import ingest as ingest_command
from keytrail.console.cli_replay import replay as replay_command
from keytrail.keystore.store import KeyStore
from keytrail.settings import Settings, get_settings
from keytrail.sql.backends import open_clickhouse
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.state_stores import SqliteStates
from tests.detectors.traffic import SIM_START, KeyTraffic, events_for_day

app = typer.Typer()
app.command()(ingest_command)  # `keytrail ingest`, as the console script mounts it
app.command("replay")(replay_command)

DAYS = 12
LATENESS_S = 300


@pytest.fixture(scope="module")
def backfill(tmp_path_factory):
    """Keys created in the past (as a new installation importing its logs would have them), the
    history written to a file, and `keytrail ingest --direct FILE` run on it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _backfill(tmp_path_factory.mktemp("backfill"), monkeypatch)


def _backfill(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYTRAIL_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("KEYTRAIL_CLICKHOUSE_URL", raising=False)
    monkeypatch.delenv("KEYTRAIL_KEYSTORE_URL", raising=False)
    monkeypatch.setenv("KEYTRAIL_ALERT_IDLE_DAYS", "3")
    monkeypatch.setenv("KEYTRAIL_ALERT_NEVER_USED_DAYS", "2")
    monkeypatch.setenv("KEYTRAIL_ALERT_EXPIRING_WITHIN_DAYS", "2")
    get_settings.cache_clear()
    settings = Settings(data_dir=tmp_path, _env_file=None)
    created_at = SIM_START - timedelta(days=1)
    store = KeyStore.open(settings.keystore_url, settings.hashing_secret(), env=settings.key_env,
                          clock=lambda: created_at)
    try:
        ids = {name: store.create_key(name, "proj_bf")[0].id for name in ("steady", "stops", "stops_late", "never")}
        ids["expiring"] = store.create_key("expiring", "proj_bf", expires_at=SIM_START + timedelta(days=8))[0].id
    finally:
        store.close()
    last_day = {"steady": DAYS, "stops": 4, "stops_late": 11, "expiring": DAYS}
    events = []
    for name, days in last_day.items():
        traffic = KeyTraffic(ids[name], daily_requests=300, rhythm="flat", project_id="proj_bf")
        rng = random.Random(name)
        for day in range(days):
            events.extend(events_for_day(traffic, day, rng))
    events.sort(key=lambda event: event.occurred_at)
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"\n".join(event.model_dump_json().encode() for event in events) + b"\n")
    ingest = CliRunner().invoke(app, ["ingest", "--direct", str(history)])
    assert ingest.exit_code == 0, ingest.output
    yield {"ids": ids, "events": events, "file": history, "settings": settings, "created_at": created_at}
    get_settings.cache_clear()


def _lifecycle_signals(settings: Settings) -> list[dict]:
    clickhouse = open_clickhouse(settings.clickhouse_url)
    try:
        return clickhouse.query(
            "SELECT toString(signal_id) AS id, key_id, kind, toUnixTimestamp64Milli(window_start) AS start_ms, "
            "toUnixTimestamp64Milli(detected_at) AS at_ms, message, count() OVER (PARTITION BY signal_id) AS copies "
            "FROM signals WHERE kind IN ('idle', 'never_used', 'expiring_soon') ORDER BY key_id, kind")
    finally:
        clickhouse.close()


def _last_use_ms(events, key_id: str) -> int:
    return max(epoch_ms(e.occurred_at) for e in events if e.key_id == key_id)


def test_keys_that_stop_never_start_or_expire_are_flagged_at_their_event_time(backfill):
    ids, events = backfill["ids"], backfill["events"]
    found = {(row["key_id"], row["kind"]): row for row in _lifecycle_signals(backfill["settings"])}
    day = 86_400_000
    stops_last = _last_use_ms(events, ids["stops"])
    assert set(found) == {(ids["stops"], "idle"), (ids["never"], "never_used"), (ids["expiring"], "expiring_soon")}
    idle = found[(ids["stops"], "idle")]
    assert (idle["start_ms"], idle["at_ms"]) == (stops_last, stops_last + 3 * day)  # event time, not wall time
    never = found[(ids["never"], "never_used")]
    assert (never["start_ms"], never["at_ms"]) == (epoch_ms(backfill["created_at"]), epoch_ms(backfill["created_at"]) + 2 * day)
    expiring = found[(ids["expiring"], "expiring_soon")]
    assert expiring["at_ms"] == epoch_ms(SIM_START + timedelta(days=6))
    assert "has not been used for 3 days" in idle["message"]


def test_the_existing_rules_turn_them_into_alerts(backfill):
    ids = backfill["ids"]
    clickhouse = open_clickhouse(backfill["settings"].clickhouse_url)
    try:
        rows = clickhouse.query("SELECT key_id, rule FROM alerts FINAL WHERE status != 'resolved'")
    finally:
        clickhouse.close()
    opened = {(row["key_id"], row["rule"]) for row in rows}
    assert {(ids["stops"], "idle"), (ids["never"], "never_used"), (ids["expiring"], "expiring_soon")} <= opened
    assert (ids["steady"], "idle") not in opened and (ids["stops_late"], "idle") not in opened


def test_a_key_that_goes_quiet_has_its_last_minute_closed_by_the_watermark(backfill):
    ids, events, settings = backfill["ids"], backfill["events"], backfill["settings"]
    last_ms = _last_use_ms(events, ids["stops"])
    last_minute_s = last_ms // 60_000 * 60
    in_last_minute = sum(1 for e in events if e.key_id == ids["stops"] and epoch_ms(e.occurred_at) // 60_000 * 60 == last_minute_s)
    states = SqliteStates(Path(settings.data_dir) / "core-state.db")
    try:
        state = states.get(ids["stops"])
        assert state.open_minutes == {} and state.closed_through_s == last_minute_s
        # The newest key's last minutes are within the allowed lateness of the end: still open.
        assert states.get(ids["steady"]).open_minutes
    finally:
        states.close()
    clickhouse = open_clickhouse(settings.clickhouse_url)
    try:
        (row,) = clickhouse.query(
            "SELECT requests FROM key_usage_minute FINAL WHERE key_id = {k:String} AND minute = toDateTime({m:UInt32})",
            {"k": ids["stops"], "m": last_minute_s})
    finally:
        clickhouse.close()
    assert int(row["requests"]) == in_last_minute


def test_ingesting_the_same_history_again_gives_identical_signals_and_no_duplicates(backfill):
    before = _lifecycle_signals(backfill["settings"])
    again = CliRunner().invoke(app, ["ingest", "--direct", str(backfill["file"])])
    assert again.exit_code == 0, again.output
    after = _lifecycle_signals(backfill["settings"])
    assert [(r["id"], r["message"]) for r in after] == [(r["id"], r["message"]) for r in before]
    assert all(row["copies"] == 1 for row in after)


def test_the_wall_clock_scanner_raises_the_same_signals(backfill):
    """One evaluation, two drivers: scanning at the event time the watermark reached gives the same ids."""
    from keytrail.stream_processors.alerting.decide import scan_signals
    from keytrail.stream_processors.alerting.rules import load_alert_rules

    settings, events = backfill["settings"], backfill["events"]
    store = KeyStore.open(settings.keystore_url, settings.hashing_secret(), env=settings.key_env)
    try:
        keys = store.list_keys()
    finally:
        store.close()
    end = max(e.occurred_at for e in events) - timedelta(seconds=LATENESS_S)
    scanned = {s.signal_id: s.message for found in scan_signals(keys, end, load_alert_rules()).values() for s in found}
    streamed = {row["id"]: row["message"] for row in _lifecycle_signals(settings)}
    # What still holds at the end (the expiry window is over by then): same ids, same words.
    ids = backfill["ids"]
    held = {row["id"] for row in _lifecycle_signals(settings) if row["key_id"] in (ids["stops"], ids["never"])}
    assert set(scanned) == held and all(streamed[signal_id] == message for signal_id, message in scanned.items())


def test_keytrail_replay_rebuilds_the_same_lifecycle_signals(backfill):
    """`keytrail replay` recomputes the signals table from the raw log: the watermark at the log's end
    evaluates the key store again, and the idle / never-used / expiring signals come back identical."""
    before = _lifecycle_signals(backfill["settings"])
    replayed = CliRunner().invoke(app, ["replay", "--yes"])
    assert replayed.exit_code == 0, replayed.output
    after = _lifecycle_signals(backfill["settings"])
    assert [(r["id"], r["message"], r["at_ms"]) for r in after] == [(r["id"], r["message"], r["at_ms"]) for r in before]
