"""The canned queries' headers are their contract: parsed, checked against the SQL, enforced on every call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keytrail.sql.queries import (
    InvalidParameter,
    QuerySpec,
    UnknownQuery,
    parse_time,
    query_spec,
    query_specs,
    run_query,
)
from keytrail.sql.queries.runner import CANNED_QUERIES

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def test_every_canned_query_parses_and_binds_only_what_it_declares():
    specs = query_specs()
    assert list(specs) == list(CANNED_QUERIES)
    for spec in specs.values():
        assert spec.title and spec.answers, spec.name
        spec.check_placeholders()
        assert all(p.doc for p in spec.params), spec.name


def test_every_canned_query_can_be_confined_to_a_project():
    for spec in query_specs().values():
        assert spec.param_by_name["project"].base_type == "Project"
        assert spec.param_by_name["project"].default == ""
        assert "{project:String}" in spec.sql


def test_pipeline_internal_queries_are_not_canned():
    with pytest.raises(UnknownQuery, match="known: key_timeline"):
        query_spec("replay_usage_events")


def test_unknown_query_lists_the_known_ones():
    with pytest.raises(UnknownQuery) as error:
        run_query(None, "who_used_it")  # type: ignore[arg-type]
    assert "top_keys" in str(error.value)


def test_defaults_are_filled_and_times_resolved_against_now():
    bound = query_spec("key_ips").bind({"key_id": "key_a"}, now=NOW)
    assert bound == {
        "key_id": "key_a",
        "since": "2026-10-26 12:00:00.000",
        "until": "2026-11-02 12:00:00.000",
        "project": "",
        "limit": 100,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("90m", NOW - timedelta(minutes=90)),
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("2w", NOW - timedelta(weeks=2)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("2026-11-01T08:00:00Z", datetime(2026, 11, 1, 8, tzinfo=UTC)),
        ("2026-11-01T10:00:00+02:00", datetime(2026, 11, 1, 8, tzinfo=UTC)),
        ("2026-11-01 08:00", datetime(2026, 11, 1, 8, tzinfo=UTC)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
    ],
)
def test_times_can_be_relative_or_iso(text, expected):
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("key_ips", {}, "'key_id' is required"),
        ("key_ips", {"key_id": "k", "bogus": 1}, "'bogus' is not a parameter of key_ips"),
        ("key_ips", {"key_id": 7}, "must be a string"),
        ("key_ips", {"key_id": "k", "since": "yesterday"}, "is not a time"),
        ("key_ips", {"key_id": "k", "since": datetime(2026, 1, 1)}, "needs a timezone"),
        ("key_ips", {"key_id": "k", "since": "1h", "until": "2h"}, "must be before until"),
        ("key_ips", {"key_id": "k", "limit": 0}, "between 1 and 10000"),
        ("key_ips", {"key_id": "k", "limit": 10001}, "between 1 and 10000"),
        ("key_ips", {"key_id": "k", "limit": True}, "whole number"),
        ("key_ips", {"key_id": "x" * 1001}, "longer than 1000"),
        ("top_keys", {"by": "latency"}, "must be one of 'requests', 'errors', 'denials'"),
        ("key_timeline", {"key_id": "k", "outcome": "weird"}, "must be one of"),
        ("key_hours_of_week", {"key_id": "k", "timezone": "Mars/Olympus"}, "not an IANA time zone"),
        ("idle_keys", {"key_ids": "key_a", "created_ats": []}, "must be a list"),
        ("idle_keys", {"key_ids": ["a", "b"], "created_ats": ["2026-01-01"]}, "as many elements as key_ids"),
        ("idle_keys", {"key_ids": ["a"], "created_ats": ["someday"]}, "is not a time"),
        ("idle_keys", {"key_ids": [1], "created_ats": ["2026-01-01"]}, "must hold strings"),
    ],
)
def test_bad_parameters_are_refused_with_a_clear_message(name, params, message):
    with pytest.raises(InvalidParameter, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        query_spec(name).bind(params, now=NOW)
    assert str(error.value).startswith(f"{name}: parameter ")


def test_a_header_must_declare_every_placeholder():
    text = "-- q: answers\n-- Parameters:\n--   project  Project = ''  scope\nSELECT {key_id:String}, {project:String}"
    with pytest.raises(ValueError, match="does not declare key_id"):
        QuerySpec.parse("q", text)


def test_a_header_type_must_match_its_placeholder():
    text = "-- q: answers\n-- Parameters:\n--   project  Project = ''  scope\n--   n  UInt32  n\nSELECT {n:String}, {project:String}"
    with pytest.raises(ValueError, match="binds n as String; its header type needs UInt32"):
        QuerySpec.parse("q", text)


def test_a_declared_parameter_must_be_used():
    text = "-- q: answers\n-- Parameters:\n--   project  Project = ''  scope\n--   n  UInt32  n\nSELECT {project:String}"
    with pytest.raises(ValueError, match="declares n but never binds it"):
        QuerySpec.parse("q", text)


def test_a_query_without_project_scope_is_refused():
    text = "-- q: answers\n-- Parameters:\n--   n  UInt32  n\nSELECT {n:UInt32}"
    with pytest.raises(ValueError, match="must take `project Project`"):
        QuerySpec.parse("q", text)


def test_describe_lists_parameters_for_the_cli_and_the_api():
    described = query_spec("denial_storms").describe()
    assert described["name"] == "denial_storms"
    by_name = {p["name"]: p for p in described["parameters"]}
    assert by_name["min_denials"] == {
        "name": "min_denials", "type": "UInt32[1..1000000]", "required": False, "default": "20",
        "doc": "report buckets with at least this many denials",
    }
