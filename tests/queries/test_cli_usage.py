"""`keytrail usage …` and `keytrail generate` from the command line, on the embedded default's chDB."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import typer
from typer.testing import CliRunner

from keytrail.console.cli_generate import generate
from keytrail.console.cli_usage import usage_app
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.settings import get_settings
from keytrail.sql.backends import ChdbBackend
from keytrail.sql.migrate import migrate
from tests.queries.conftest import load_fixture
from tests.queries.fixture import AT, T0

runner = CliRunner()
SINCE = (T0 - timedelta(hours=1)).isoformat()
UNTIL = AT.isoformat()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A KeyTrail data directory whose chDB holds the fixture (closed again, as the CLI opens it itself)."""
    monkeypatch.setenv("KEYTRAIL_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("KEYTRAIL_CLICKHOUSE_URL", raising=False)
    monkeypatch.delenv("KEYTRAIL_KEYSTORE_URL", raising=False)
    get_settings.cache_clear()
    backend = ChdbBackend(tmp_path / "chdb")
    try:
        migrate(backend)
        load_fixture(backend)
    finally:
        backend.close()
    yield tmp_path
    get_settings.cache_clear()


def usage(*args: str):
    return runner.invoke(usage_app, list(args), catch_exceptions=False)


def test_top_prints_a_table_and_json(data_dir):
    table = usage("top", "--since", SINCE, "--until", UNTIL)
    assert table.exit_code == 0, table.output
    assert "key_beta" in table.output and table.output.startswith("The busiest keys in a window")
    as_json = usage("top", "--since", SINCE, "--until", UNTIL, "--by", "denials", "--json")
    assert as_json.exit_code == 0
    assert [(r["key_id"], r["total_denials"]) for r in json.loads(as_json.output)] == [
        ("key_beta", 6), ("key_alpha", 1), ("key_gamma", 1)]


def test_project_option_confines_the_answer(data_dir):
    result = usage("top", "--since", SINCE, "--until", UNTIL, "--project", "proj_b", "--json")
    assert {r["project_id"] for r in json.loads(result.output)} == {"proj_b"}


def test_key_commands(data_dir):
    ips = json.loads(usage("ips", "key_alpha", "--since", SINCE, "--until", UNTIL, "--json").output)
    assert [r["ip"] for r in ips][:2] == ["10.1.2.3", "10.1.2.4"]
    timeline = usage("timeline", "key_alpha", "--since", SINCE, "--until", UNTIL, "--outcome", "denied")
    assert timeline.exit_code == 0 and "203.0.113.9" in timeline.output
    hours = usage("hours", "key_alpha", "--since", "2026-10-26", "--until", UNTIL)
    assert hours.exit_code == 0 and "Mon" in hours.output
    for command in ("networks", "routes", "agents", "audit"):
        assert usage(command, "key_gamma", "--since", "2026-10-01", "--until", UNTIL).exit_code == 0, command
    baseline = json.loads(usage("baseline", "key_alpha", "--at", UNTIL, "--baseline-days", "7", "--json").output)
    assert baseline[0]["metric"] == "requests" and baseline[0]["last_24h"] == 5


def test_cross_key_commands(data_dir):
    storms = json.loads(usage("storms", "--since", SINCE, "--until", UNTIL, "--min-denials", "5", "--json").output)
    assert [s["key_id"] for s in storms] == ["key_beta"]
    spread = json.loads(usage("spread", "--since", SINCE, "--until", UNTIL, "--min-networks", "4", "--json").output)
    assert [s["key_id"] for s in spread] == ["key_delta"]
    inactive = json.loads(usage("inactive", "--since", SINCE, "--until", UNTIL, "--json").output)
    assert [r["key_id"] for r in inactive] == ["key_gamma", "key_delta"]
    assert usage("projects", "--since", SINCE, "--until", UNTIL).exit_code == 0


def test_run_any_query_by_name_with_array_parameters(data_dir):
    result = usage("run", "never_used_keys", "-P", "key_ids=key_alpha", "-P", "key_ids=key_zeta",
                   "-P", "created_ats=2026-01-01", "-P", "created_ats=2026-01-02", "-P", f"at={UNTIL}", "--json")
    assert result.exit_code == 0, result.output
    assert [r["key_id"] for r in json.loads(result.output)] == ["key_zeta"]


def test_idle_and_never_used_read_the_key_list_from_the_key_store(data_dir):
    from keytrail.keystore import KeyStore

    settings = get_settings()
    store = KeyStore.open(settings.keystore_url, settings.hashing_secret(), env=settings.key_env)
    created = [store.create_key(f"svc-{i}", "proj_a", actor="test")[0].id for i in range(2)]
    store.close()
    never = json.loads(usage("never-used", "--days", "0", "--json").output)
    assert sorted(r["key_id"] for r in never) == sorted(created)
    assert json.loads(usage("idle", "--days", "1", "--json").output) == []


def test_bad_parameters_and_a_missing_schema_are_one_line_errors(data_dir, tmp_path_factory, monkeypatch):
    bad = runner.invoke(usage_app, ["top", "--by", "latency"])
    assert bad.exit_code == 2
    assert "error[invalid_parameter]: top_keys: parameter 'by' must be one of" in bad.output
    bad_time = runner.invoke(usage_app, ["ips", "key_alpha", "--since", "last tuesday"])
    assert bad_time.exit_code == 2 and "is not a time" in bad_time.output
    monkeypatch.setenv("KEYTRAIL_DATA_DIR", str(tmp_path_factory.mktemp("empty")))
    get_settings.cache_clear()
    missing = runner.invoke(usage_app, ["top"])
    assert missing.exit_code == 1
    assert "error[not_migrated]" in missing.output and "keytrail migrate" in missing.output


def test_queries_lists_every_canned_query(data_dir):
    result = usage("queries", "--json")
    names = [q["name"] for q in json.loads(result.output)]
    assert "key_timeline" in names and "never_used_keys" in names


def test_retention_shows_and_changes_ttl(data_dir):
    shown = usage("retention")
    assert shown.exit_code == 0 and "usage_events" in shown.output and "400" in shown.output
    longer = usage("retention", "--days", "500")
    assert longer.exit_code == 0 and "400 -> 500" in longer.output
    refused = runner.invoke(usage_app, ["retention", "--days", "30"], input="n\n")
    assert refused.exit_code != 0
    assert "500" in usage("retention").output
    assert usage("retention", "--days", "30", "--yes").exit_code == 0


def test_generate_writes_valid_json_lines(tmp_path):
    app = typer.Typer()
    app.command()(generate)
    app.command("noop")(lambda: None)
    target = tmp_path / "events.jsonl"
    summary = tmp_path / "summary.json"
    result = runner.invoke(app, ["generate", "--keys", "10", "--events", "2500", "--days", "2", "--seed", "5",
                                 "--end", "2026-11-02T00:00:00", "--out", str(target), "--summary", str(summary)])
    assert result.exit_code == 0, result.output
    lines = target.read_bytes().splitlines()
    assert len(lines) == 2500
    for line in lines[::100]:
        KeyUsageEvent.model_validate_json(line)
    described = json.loads(summary.read_text())
    assert described["keys"] == 10 and described["events"] == 2500
    again = tmp_path / "again.jsonl"
    runner.invoke(app, ["generate", "--keys", "10", "--events", "2500", "--days", "2", "--seed", "5",
                        "--end", "2026-11-02T00:00:00", "--out", str(again)])
    assert again.read_bytes() == target.read_bytes()
