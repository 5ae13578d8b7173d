"""Build the KeyTrail Grafana dashboard from the SQL the API runs, so there is one source of truth.

    python infra/grafana/build_dashboard.py          # rewrite infra/grafana/dashboards/keytrail.json
    python infra/grafana/build_dashboard.py --check  # exit 1 when the committed JSON is out of date

Each panel names a SQL file the API uses (sql/queries/*.sql, console/api/sql/*.sql) or, where the
API's query needs input Grafana cannot give (idle_keys.sql takes the key store's key list), a view
from the migrations with a few lines of SQL here. The file's server-side placeholders
`{name:Type}` are replaced by `CAST(<expression> AS Type)`, where the expression is what Grafana
interpolates:

- a dashboard variable (project, key, ...) becomes `decodeURLComponent('${var:percentencode}')`.
  Grafana percent-encodes the value (encodeURIComponent plus ! ' ( ) *), so what lands between
  the quotes is only `A-Za-z0-9-_.~%` and stays one string literal whatever the value holds;
  ClickHouse decodes it back to the exact bytes. Grafana's `sqlstring` format is not used: it
  doubles `'` but leaves `\\` alone, and ClickHouse reads `\\` as an escape, so a value ending
  in a backslash (or holding `\\'`) would end the literal early (tests/deploy/test_grafana.py
  shows it on chDB).
- the time range becomes `fromUnixTimestamp64Milli(toInt64(${__from}), 'UTC')` (and `__to`),
  numbers Grafana computes from the dashboard's range.
- a fixed choice (`by = 'denials'`, `limit = 20`) becomes a literal written here.

Every placeholder of a file must be bound and every binding used, so when a query gains or
renames a parameter, building fails and says which panel to update. Reads only text files:
nothing from KeyTrail is imported (the generator runs without the package installed).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DASHBOARD_PATH = HERE / "dashboards" / "keytrail.json"
DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "keytrail-clickhouse"}
"""The data source provisioned by provisioning/datasources/clickhouse.yaml (same uid)."""
DASHBOARD_UID = "keytrail-overview"
DASHBOARD_TITLE = "KeyTrail"

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):([^{}]+)\}")
"""ClickHouse's server-side parameter syntax, as the query specs read it."""


def variable(name: str) -> str:
    """A dashboard variable as one string literal, whatever its value (see the module docstring)."""
    return f"decodeURLComponent('${{{name}:percentencode}}')"


def number_variable(name: str) -> str:
    """A numeric dashboard variable; a value that is not a whole number reads as 0."""
    return f"toUInt32OrZero({variable(name)})"


FROM = "fromUnixTimestamp64Milli(toInt64(${__from}), 'UTC')"
TO = "fromUnixTimestamp64Milli(toInt64(${__to}), 'UTC')"
BUCKET_SECONDS = "greatest(60, intDiv(toUInt64(${__interval_ms}), 1000))"
"""Grafana's interval for the panel width, at least the one-minute grain of key_usage_minute."""


def literal(value: str | int) -> str:
    """A fixed value written into a panel's SQL; only plain words and numbers are allowed here."""
    if isinstance(value, int):
        return str(value)
    if not re.fullmatch(r"[A-Za-z0-9_]*", value):
        raise ValueError(f"literal {value!r}: only letters, digits and _ (use a variable for anything else)")
    return f"'{value}'"


@dataclass(frozen=True)
class Panel:
    """One dashboard panel: where its SQL comes from and what each of the SQL's parameters is bound to."""

    title: str
    source: str
    """Repository path of the SQL file, or `view:<name>` for a view from sql/clickhouse/."""
    bindings: dict[str, str]
    kind: str = "table"
    grid: tuple[int, int, int, int] = (0, 0, 12, 8)
    """x, y, width, height on Grafana's 24-column grid."""
    description: str = ""
    sql: str | None = None
    """The panel's SQL over a view (only for `view:` sources); files are read from `source`."""
    options: dict = field(default_factory=dict)

    def template(self) -> str:
        """The SQL with its `{name:Type}` placeholders, as the API runs it."""
        if self.source.startswith("view:"):
            if self.sql is None:
                raise ValueError(f"panel {self.title!r}: a view panel needs its SQL")
            return self.sql
        return (REPO / self.source).read_text()

    def panel_sql(self) -> str:
        """The SQL Grafana sends: placeholders replaced by typed Grafana expressions, comment lines dropped."""
        template = self.template()
        body = "\n".join(line for line in template.splitlines() if not line.lstrip().startswith("--")).strip()
        used = {name for name, _ in PLACEHOLDER.findall(body)}
        missing = sorted(used - set(self.bindings))
        if missing:
            raise ValueError(f"panel {self.title!r}: {self.source} binds {', '.join(missing)}; add them to its bindings")
        unused = sorted(set(self.bindings) - used)
        if unused:
            raise ValueError(f"panel {self.title!r}: {self.source} has no parameter {', '.join(unused)}")

        def bound(match: re.Match) -> str:
            return f"CAST({self.bindings[match.group(1)]} AS {match.group(2).strip()})"

        header = f"-- {DASHBOARD_TITLE} panel from {self.source} (generated by infra/grafana/build_dashboard.py)"
        return header + "\n" + PLACEHOLDER.sub(bound, body)


WINDOW = {"since": FROM, "until": TO}
PROJECT = {"project": variable("project")}
KEY_LAST_USE_COLUMNS = "key_id, last_used_at, last_used_ip, last_service, last_route"

PANELS: list[Panel] = [
    Panel(
        "Requests and denials", "sql/queries/project_usage.sql", {**WINDOW, **PROJECT}, kind="stat",
        grid=(0, 0, 24, 5), description="Requests, errors, denials and active keys of the project in the time range.",
        options={"fields": "/^(total_requests|total_errors|total_denials|denial_rate|active_keys)$/"},
    ),
    Panel(
        "Requests and denials per hour", "view:usage_hourly", {**WINDOW, **PROJECT}, kind="timeseries",
        grid=(0, 5, 24, 8), description="The project's requests, errors and denials per hour (the rollup the "
        "canned queries read; whole hours, exact at any moment).",
        sql=(
            "SELECT hour, sum(requests) AS requests, sum(errors) AS errors, sum(denials) AS denials\n"
            "FROM usage_hourly\n"
            "WHERE hour >= toStartOfHour({since:DateTime64(3, 'UTC')})\n"
            "  AND hour < {until:DateTime64(3, 'UTC')}\n"
            "  AND project_id = {project:String}\n"
            "GROUP BY hour\n"
            "ORDER BY hour"
        ),
    ),
    Panel(
        "Busiest keys", "sql/queries/top_keys.sql",
        {**WINDOW, **PROJECT, "by": literal("requests"), "limit": literal(20)}, grid=(0, 13, 12, 8),
        description="The keys that carry the project's traffic.",
    ),
    Panel(
        "Most refused keys", "sql/queries/top_keys.sql",
        {**WINDOW, **PROJECT, "by": literal("denials"), "limit": literal(20)}, grid=(12, 13, 12, 8),
        description="Keys whose requests were refused the most (denied, invalid, expired, revoked, disabled, rate limited).",
    ),
    Panel(
        "Denial storms", "sql/queries/denial_storms.sql",
        {**WINDOW, **PROJECT, "min_denials": number_variable("min_denials"), "bucket_minutes": literal(5),
         "limit": literal(50)},
        grid=(0, 21, 24, 8),
        description="Bursts of refused requests: at least $min_denials denials for one key in five minutes.",
    ),
    Panel(
        "Idle keys", "view:key_last_use", {"project": variable("project"), "at": TO,
                                           "idle_days": number_variable("idle_days")},
        grid=(0, 29, 12, 8),
        description="Keys used before but not in the last $idle_days days (as of the end of the time range). "
        "Keys never used at all are only known to the key store: `keytrail usage never-used`.",
        sql=(
            f"SELECT {KEY_LAST_USE_COLUMNS}, dateDiff('day', last_used_at, {{at:DateTime64(3, 'UTC')}}) AS idle_days\n"
            "FROM key_last_use\n"
            "WHERE project_id = {project:String}\n"
            "  AND last_used_at < {at:DateTime64(3, 'UTC')} - toIntervalDay({idle_days:UInt32})\n"
            "ORDER BY last_used_at, key_id\n"
            "LIMIT 1000"
        ),
    ),
    Panel(
        "Signals in the project", "console/api/sql/signals.sql",
        {"since": FROM, **PROJECT, "key_id": literal(""), "kind": literal(""), "limit": literal(200)},
        grid=(12, 29, 12, 8), description="Detector findings for any key of the project, newest first.",
    ),
    Panel(
        "Requests of $key", "console/api/sql/key_usage_series.sql",
        {"since": FROM, **PROJECT, "key_id": variable("key"), "bucket": BUCKET_SECONDS}, kind="timeseries",
        grid=(0, 37, 16, 8), description="Requests, errors and denials of the selected key over time.",
    ),
    Panel(
        "Last used: $key", "view:key_last_use", {"project": variable("project"), "key_id": variable("key")},
        kind="table", grid=(16, 37, 8, 8), description="The newest use of the selected key, by event time.",
        sql=(
            f"SELECT {KEY_LAST_USE_COLUMNS}\n"
            "FROM key_last_use\n"
            "WHERE project_id = {project:String} AND key_id = {key_id:String}"
        ),
    ),
    Panel(
        "Signals of $key", "console/api/sql/signals.sql",
        {"since": FROM, **PROJECT, "key_id": variable("key"), "kind": literal(""), "limit": literal(200)},
        grid=(0, 45, 12, 8), description="Detector findings for the selected key, newest first.",
    ),
    Panel(
        "Changes to $key", "sql/queries/key_audit.sql",
        {"since": literal(0), "until": TO, **PROJECT, "key_id": variable("key"), "limit": literal(100)},
        grid=(12, 45, 12, 8), description="Who created, rotated, disabled or revoked the selected key, and when.",
    ),
]

VARIABLE_QUERIES = {
    "project": "SELECT DISTINCT project_id FROM key_last_use ORDER BY project_id",
    "key": f"SELECT key_id FROM key_last_use WHERE project_id = {variable('project')} ORDER BY key_id",
}
"""The template variables read from ClickHouse (the keys and projects it has seen used)."""
CUSTOM_VARIABLES = {
    "idle_days": ("Idle for (days)", ["7", "30", "90", "180"], "30"),
    "min_denials": ("Storm threshold (denials in 5 min)", ["5", "20", "100"], "20"),
}


def _target(panel: Panel) -> dict:
    timeseries = panel.kind == "timeseries"
    return {
        "refId": "A",
        "datasource": DATASOURCE,
        "editorType": "sql",
        "queryType": "timeseries" if timeseries else "table",
        "format": 0 if timeseries else 1,
        "rawSql": panel.panel_sql(),
    }


def _panel_json(number: int, panel: Panel) -> dict:
    x, y, w, h = panel.grid
    source = panel.source.replace("view:", "the view ")
    body: dict = {
        "id": number,
        "type": panel.kind,
        "title": panel.title,
        "description": f"{panel.description} Source: {source}.".strip(),
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [_target(panel)],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    }
    if panel.kind == "stat":
        body["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": panel.options["fields"], "values": False},
                           "textMode": "value_and_name", "colorMode": "none"}
    if panel.kind == "table":
        body["options"] = {"showHeader": True}
    return body


def _query_variable(name: str, label: str, query: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 1,
        "sort": 0,
        "multi": False,
        "includeAll": False,
        "current": {},
        "options": [],
    }


def _custom_variable(name: str, label: str, values: list[str], default: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "custom",
        "query": ",".join(values),
        "multi": False,
        "includeAll": False,
        "current": {"text": default, "value": default, "selected": True},
        "options": [{"text": v, "value": v, "selected": v == default} for v in values],
    }


def build() -> dict:
    """The dashboard JSON model (Grafana's provisioning format)."""
    variables = [
        _query_variable("project", "Project", VARIABLE_QUERIES["project"]),
        _query_variable("key", "Key", VARIABLE_QUERIES["key"]),
        *(_custom_variable(name, *spec) for name, spec in CUSTOM_VARIABLES.items()),
    ]
    return {
        "uid": DASHBOARD_UID,
        "title": DASHBOARD_TITLE,
        "description": "API-key usage, refusals, idleness and detector signals per project and per key. "
        "Generated by infra/grafana/build_dashboard.py from the SQL the KeyTrail API runs; edit that, not this file.",
        "tags": ["keytrail"],
        "timezone": "utc",
        "editable": False,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "annotations": {"list": []},
        "templating": {"list": variables},
        "panels": [_panel_json(number, panel) for number, panel in enumerate(PANELS, start=1)],
    }


def render() -> str:
    """The dashboard as the committed file holds it."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed dashboard is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DASHBOARD_PATH.read_text() if DASHBOARD_PATH.exists() else ""
        if current != text:
            print(f"{DASHBOARD_PATH.relative_to(REPO)} is out of date: run python infra/grafana/build_dashboard.py",
                  file=sys.stderr)
            return 1
        return 0
    DASHBOARD_PATH.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_PATH.write_text(text)
    print(f"wrote {DASHBOARD_PATH.relative_to(REPO)} ({len(PANELS)} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
