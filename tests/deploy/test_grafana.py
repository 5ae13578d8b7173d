"""The Grafana dashboard (infra/grafana/): built from the API's SQL, runs on chDB, variables cannot inject SQL.

No Grafana runs here (no Docker engine). What Grafana does to a panel's SQL before the ClickHouse
data source sends it is string interpolation of `$var` / `${var:format}`; `grafana_interpolate`
below does the same for the formats the dashboard uses, following Grafana's own format registry
(percentencode = encodeURIComponent plus ! ' ( ) *, sqlstring = ' doubled and " as \\"), and the
SQL it gives is run on chDB with the migrations applied and the query fixture loaded. Each panel's
answer is compared with the API's: the same SQL file run with the same values bound server-side.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from keytrail.sql.backends import ClickHouseError, open_clickhouse
from keytrail.sql.migrate import migrate
from tests.queries import fixture
from tests.queries.conftest import load_fixture

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "infra" / "grafana"


def _load_builder():
    spec = importlib.util.spec_from_file_location("keytrail_grafana_build", GRAFANA / "build_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


builder = _load_builder()

# Grafana's variable syntax (templateSrv): $name, [[name:format]], ${name.field:format}.
GRAFANA_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
GLOBALS = {"__from", "__to", "__interval_ms"}


def _percentencode(value: str) -> str:
    """Grafana's encodeURIComponentStrict: everything but A-Z a-z 0-9 - _ . ~ as UTF-8 %XX."""
    return quote(value, safe="")


def _sqlstring(value: str) -> str:
    """Grafana's sqlStringFormatter for one value."""
    return "'" + re.sub(r"'|\"", lambda m: "''" if m.group(0) == "'" else '\\"', value) + "'"


FORMATS = {None: str, "percentencode": _percentencode, "sqlstring": _sqlstring}


def grafana_interpolate(sql: str, values: dict[str, object]) -> str:
    """What Grafana's template service makes of `sql` with these variable values (one pass, like Grafana)."""

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name not in values:
            raise AssertionError(f"the SQL refers to ${name}, which the dashboard does not define")
        return FORMATS[fmt](str(values[name]))

    return GRAFANA_VARIABLE.sub(replace, sql)


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


SAMPLE = {
    "__from": _millis(fixture.WINDOW["since"]),
    "__to": _millis(fixture.AT),
    "__interval_ms": 300_000,
    "project": "proj_a",
    "key": "key_alpha",
    "idle_days": "30",
    "min_denials": "5",
}
"""Variable values as Grafana would hold them: the fixture's window, proj_a and its key key_alpha."""

HOSTILE = [
    "x\\",
    "\\' OR 1 = 1 --",
    "' OR 1 = 1 --",
    "proj_a' OR '1' = '1",
    "\\\\'); DROP TABLE key_last_used; --",
    "tab\tnew\nline\rnul\x00end",
    "ünïcødé ☃ 𝄞 проект",
    '"double" `back` $dollar ${__from} {project:String}',
    "%27%5C percent already",
    "a+b c&d=e",
    "",
]


def _signal_rows() -> bytes:
    """Two signals: one for proj_a's key_alpha, one for proj_b's key_gamma (which proj_a must not see)."""
    rows = []
    for key, project in (("key_alpha", "proj_a"), ("key_gamma", "proj_b")):
        start = fixture.T0
        rows.append({
            "signal_id": str(uuid.uuid5(uuid.NAMESPACE_URL, key)), "key_id": key, "project_id": project,
            "kind": "new_network", "severity": "medium", "score": 0.75, "observed": 3.0, "expected": 1.0,
            "window_start": start.isoformat(), "window_end": (start + timedelta(minutes=1)).isoformat(),
            "detected_at": (start + timedelta(minutes=2)).isoformat(),
            "evidence": '{"networks": ["203.0.113.0"]}', "message": f"{key} used from a new network",
        })
    return b"\n".join(orjson.dumps(row) for row in rows)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """chDB with the migrations applied and the query fixture (plus two signals) loaded."""
    backend = open_clickhouse(f"chdb://{tmp_path_factory.mktemp('grafana-chdb')}")
    try:
        migrate(backend)
        load_fixture(backend)
        backend.insert_json_rows("signals", _signal_rows())
        yield backend
    finally:
        backend.close()


def _server_side_params(store, panel, values) -> dict[str, object]:
    """The values the API would bind: each of the panel's bindings evaluated by ClickHouse under `values`."""
    types = dict(builder.PLACEHOLDER.findall(panel.template()))
    params = {}
    for name, expression in panel.bindings.items():
        ch_type = types[name].strip()
        cast = f"CAST({grafana_interpolate(expression, values)} AS {ch_type})"
        shown = f"toString({cast})" if ch_type.startswith("DateTime") else cast
        (row,) = store.query(f"SELECT {shown} AS v")
        params[name] = row["v"]
    return params


def _api_rows(store, panel, values):
    return store.query(panel.template(), _server_side_params(store, panel, values))


def _panel_rows(store, panel, values):
    return store.query(grafana_interpolate(panel.panel_sql(), values))


# (a) the committed JSON, its panels and their sources


def test_committed_dashboard_is_what_the_generator_builds_from_the_current_sql():
    committed = builder.DASHBOARD_PATH.read_text()
    assert committed == builder.render(), "run: python infra/grafana/build_dashboard.py"
    assert builder.main(["--check"]) == 0


def test_the_generator_refuses_a_query_parameter_it_does_not_bind(tmp_path, monkeypatch):
    sql = tmp_path / "new.sql"
    sql.write_text("-- new: a query that gained a parameter\nSELECT 1 WHERE {project:String} = {fresh:String}\n")
    panel = builder.Panel("New", str(sql), {"project": builder.variable("project")})
    with pytest.raises(ValueError, match="binds fresh"):
        panel.panel_sql()
    stale = builder.Panel("Stale", str(sql), {"project": "''", "fresh": "''", "gone": "''"})
    with pytest.raises(ValueError, match="no parameter gone"):
        stale.panel_sql()


def _views_in_migrations() -> set[str]:
    text = "\n".join(p.read_text() for p in (REPO / "sql" / "clickhouse").glob("*.sql"))
    return set(re.findall(r"CREATE VIEW IF NOT EXISTS (\w+)", text))


def test_dashboard_json_is_valid_and_every_panel_names_an_existing_source():
    dashboard = json.loads(builder.DASHBOARD_PATH.read_text())
    assert dashboard["uid"] and dashboard["title"] == "KeyTrail"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels) == len(builder.PANELS)
    views = _views_in_migrations()
    for panel, spec in zip(panels, builder.PANELS, strict=True):
        assert panel["title"] == spec.title
        (target,) = panel["targets"]
        assert target["datasource"] == builder.DATASOURCE == panel["datasource"]
        assert target["rawSql"] == spec.panel_sql()
        assert f"from {spec.source} " in target["rawSql"].splitlines()[0]
        if spec.source.startswith("view:"):
            view = spec.source.removeprefix("view:")
            assert view in views, f"{panel['title']}: no migration creates the view {view}"
            assert re.search(rf"\bFROM {view}\b", target["rawSql"])
        else:
            assert (REPO / spec.source).is_file(), spec.source
            assert spec.source.startswith(("sql/queries/", "console/api/sql/"))
        without_grafana_variables = GRAFANA_VARIABLE.sub("", target["rawSql"])
        assert not builder.PLACEHOLDER.search(without_grafana_variables), "a server-side placeholder was left unbound"
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert {"project", "key"} <= set(names)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == builder.DATASOURCE and variable["query"].startswith("SELECT")


def test_panels_only_use_known_variables_and_only_percent_encoded():
    """Every `$…` Grafana would touch is a dashboard variable (percentencode) or a numeric global."""
    dashboard = json.loads(builder.DASHBOARD_PATH.read_text())
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    queries = [t["rawSql"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    seen = set()
    for sql in queries:
        for match in GRAFANA_VARIABLE.finditer(sql):
            name = match.group(1) or match.group(2) or match.group(4)
            fmt = match.group(3) or match.group(6)
            seen.add(name)
            if name in GLOBALS:
                assert fmt is None, match.group(0)
            else:
                assert name in defined, f"{match.group(0)} is not a dashboard variable"
                assert fmt == "percentencode" and match.group(0) == f"${{{name}:percentencode}}", match.group(0)
                start = match.start()
                assert sql[start - len("decodeURLComponent('"):start] == "decodeURLComponent('"
                assert sql[match.end()] == "'"
    assert {"project", "key", "__from", "__to"} <= seen


# (b) every panel runs on chDB and answers what the API answers


@pytest.mark.parametrize("panel", builder.PANELS, ids=lambda p: p.title)
def test_each_panel_runs_on_chdb_and_matches_the_api(store, panel):
    rows = _panel_rows(store, panel, SAMPLE)
    assert rows, f"{panel.title}: the sample should return rows"
    assert rows == _api_rows(store, panel, SAMPLE)
    if not panel.source.startswith("view:"):
        # the columns are the file's own (the shared source), not something the generator made up
        expected = store.query(panel.template(), _server_side_params(store, panel, SAMPLE))[0].keys()
        assert list(rows[0]) == list(expected)


def test_project_panels_show_only_the_chosen_project(store):
    for panel in builder.PANELS:
        for row in _panel_rows(store, panel, SAMPLE):
            if "project_id" in row:
                assert row["project_id"] == "proj_a", (panel.title, row)
            if "key_id" in row:
                assert fixture.PROJECT[row["key_id"]] == "proj_a", (panel.title, row)


def test_a_key_of_another_project_shows_nothing_in_the_key_panels(store):
    """proj_b's key_gamma has usage, a signal and a revocation; chosen under proj_a, its panels stay empty."""
    other = {**SAMPLE, "key": "key_gamma"}
    (changes,) = [p for p in builder.PANELS if p.source == "sql/queries/key_audit.sql"]
    assert _panel_rows(store, changes, {**other, "project": "proj_b"}), "key_gamma has audit rows in its own project"
    for panel in builder.PANELS:
        if "key_id" in panel.bindings and panel.bindings["key_id"] == builder.variable("key"):
            assert _panel_rows(store, panel, other) == [], panel.title


def test_variable_queries_run_and_list_the_projects_and_their_keys(store):
    projects = [r["project_id"] for r in store.query(grafana_interpolate(builder.VARIABLE_QUERIES["project"], SAMPLE))]
    assert projects == sorted(set(fixture.PROJECT[k] for k in ("key_alpha", "key_beta", "key_gamma", "key_delta")))
    keys = [r["key_id"] for r in store.query(grafana_interpolate(builder.VARIABLE_QUERIES["key"], SAMPLE))]
    assert keys == ["key_alpha", "key_beta", "key_idle"]


def test_idle_keys_panel_agrees_with_the_canned_idle_keys_query(store):
    """The view-based panel gives the keys idle_keys.sql finds for proj_a's key list (the key store's view)."""
    from keytrail.sql.queries.runner import run_query

    keys = [k for k in fixture.KEY_LIST if fixture.PROJECT[k] == "proj_a"]
    canned = run_query(store, "idle_keys", key_ids=keys, created_ats=[fixture.CREATED[k] for k in keys],
                       idle_days=30, at=fixture.AT, project="proj_a")
    (panel,) = [p for p in builder.PANELS if p.title == "Idle keys"]
    rows = _panel_rows(store, panel, SAMPLE)
    assert [r["key_id"] for r in rows] == [r["key_id"] for r in canned] == ["key_idle"]
    for mine, theirs in zip(rows, canned, strict=True):
        for column in ("last_used_at", "last_used_ip", "last_service", "last_route", "idle_days"):
            assert mine[column] == theirs[column], column


def test_the_hourly_series_adds_up_to_the_project_totals(store):
    panels = {p.title: p for p in builder.PANELS}
    series = _panel_rows(store, panels["Requests and denials per hour"], SAMPLE)
    (totals,) = _panel_rows(store, panels["Requests and denials"], SAMPLE)
    assert len(series) > 1
    for column in ("requests", "errors", "denials"):
        assert sum(row[column] for row in series) == totals[f"total_{column}"], column


# injection: hostile variable values stay data


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_a_hostile_value_reaches_clickhouse_as_exactly_one_string(store, value):
    sql = grafana_interpolate(f"SELECT {builder.variable('project')} AS v, 1 AS after", {"project": value})
    assert store.query(sql) == [{"v": value, "after": 1}]


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_every_panel_with_hostile_project_and_key_answers_like_the_api(store, value):
    values = {**SAMPLE, "project": value, "key": value, "idle_days": value, "min_denials": value}
    for panel in builder.PANELS:
        assert _panel_rows(store, panel, values) == _api_rows(store, panel, values), panel.title
    for name, query in builder.VARIABLE_QUERIES.items():
        rows = store.query(grafana_interpolate(query, values))
        assert name == "project" or rows == [], (name, rows)


def test_grafana_sqlstring_would_not_keep_a_backslash_value_inside_the_literal(store):
    """Why the dashboard does not use ${var:sqlstring}: ClickHouse reads \\ as an escape, sqlstring does not escape it."""
    value = "\\' OR 1 = 1 --"
    template = "SELECT count() AS n FROM key_last_use WHERE project_id = {}"
    leaked = store.query(grafana_interpolate(template.format("${project:sqlstring}"), {"project": value}))
    assert leaked == [{"n": 5}], "with sqlstring the value's OR 1 = 1 became SQL and every project's keys counted"
    safe = store.query(grafana_interpolate(template.format(builder.variable("project")), {"project": value}))
    assert safe == [{"n": 0}]
    with pytest.raises(ClickHouseError):  # a value ending in a backslash leaves the literal unterminated
        store.query(grafana_interpolate("SELECT ${project:sqlstring} AS v", {"project": "x\\"}))
