"""Run a canned query by name: validate its parameters against its header, bind them, return rows.

Independent of the CLI and the HTTP API, which both call `run_query`; neither ever formats a
user's value into SQL.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from keytrail.sql.backends import ClickHouseBackend
from keytrail.sql.queries.spec import QuerySpec, UnknownQuery

CANNED_QUERIES = (
    "key_timeline",
    "key_ips",
    "key_networks",
    "key_routes",
    "key_user_agents",
    "key_hours_of_week",
    "key_baseline",
    "key_audit",
    "top_keys",
    "project_usage",
    "keys_many_networks",
    "denial_storms",
    "inactive_key_use",
    "idle_keys",
    "never_used_keys",
)
"""The security team's queries, exposed through the CLI and the HTTP API. Other files in
sql/queries/ (e.g. `replay_usage_events`) are internal to the pipeline and never exposed."""


@cache
def query_specs() -> dict[str, QuerySpec]:
    """Every canned query, by name, in the order above."""
    folder = resources.files("keytrail.sql") / "queries"
    return {name: QuerySpec.parse(name, (folder / f"{name}.sql").read_text()) for name in CANNED_QUERIES}


def query_spec(name: str) -> QuerySpec:
    """The spec of one canned query; UnknownQuery lists the known names."""
    specs = query_specs()
    if name not in specs:
        raise UnknownQuery(f"no canned query named {name!r}; known: {', '.join(specs)}")
    return specs[name]


def run_query(backend: ClickHouseBackend, name: str, *, now: datetime | None = None, **params: Any) -> list[dict[str, Any]]:
    """Rows of canned query `name` with `params` (checked against its header; defaults filled in).

    Times may be datetimes, ISO 8601 text or durations back from `now` (`24h`, `7d`). Pass
    `project` to confine the answer to one project's keys.
    """
    spec = query_spec(name)
    return backend.query(spec.sql, spec.bind(params, now))
