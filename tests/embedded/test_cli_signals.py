"""`keytrail signals list` reads the detectors' findings from ClickHouse."""

from __future__ import annotations

import orjson
from typer.testing import CliRunner

from keytrail.console.cli_signals import signals_app
from keytrail.console.embedded import EmbeddedPipeline
from keytrail.schemas.timestamps import utc_now
from keytrail.schemas.usage import Outcome
from keytrail.settings import Settings, get_settings
from tests.factories import usage_event


def test_signals_list_shows_the_use_of_a_revoked_key(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYTRAIL_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("KEYTRAIL_CLICKHOUSE_URL", raising=False)
    get_settings.cache_clear()
    pipeline = EmbeddedPipeline(Settings(data_dir=tmp_path, _env_file=None), alerting=False)
    try:
        record, _ = pipeline.keystore.create_key("leaky", "proj_s")
        quiet, _ = pipeline.keystore.create_key("quiet", "proj_s")
        pipeline.keystore.revoke(record.id, reason="leaked")
        now = utc_now()
        pipeline.ingest([usage_event(record.id, at=now, seconds=-60, outcome=Outcome.REVOKED, status=401,
                                     client_ip="203.0.113.9", project_id="proj_s"),
                         usage_event(quiet.id, at=now, seconds=-60, project_id="proj_s")])
    finally:
        pipeline.close()
    runner = CliRunner()
    listed = runner.invoke(signals_app, ["list", "--json", "--since", "1h"])
    assert listed.exit_code == 0, listed.output
    rows = orjson.loads(listed.output)
    assert [(r["key_id"], r["kind"]) for r in rows] == [(record.id, "use_of_inactive_key")]
    assert "203.0.113.9" in rows[0]["evidence"]["ips"]
    only_quiet = runner.invoke(signals_app, ["list", "--json", "--key", quiet.id])
    assert orjson.loads(only_quiet.output) == []
    table = runner.invoke(signals_app, ["list", "--kind", "use_of_inactive_key"])
    assert table.exit_code == 0 and record.id in table.output
    get_settings.cache_clear()
