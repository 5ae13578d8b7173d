"""Every canned query against the hand-written fixture, answers worked out by hand (see fixture.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keytrail.sql.queries import run_query
from tests.queries.fixture import AT, CREATED, KEY_LIST, SCOPED_CASES, T0, WINDOW, iso, s


def created_ats(keys):
    return [CREATED[k] for k in keys]



def test_key_timeline_lists_each_event_once_newest_first(loaded):
    rows = run_query(loaded, "key_timeline", key_id="key_alpha", **WINDOW)
    assert [r["request_id"] for r in rows] == ["req-a5", "req-a4", "req-a3", "req-a2", "req-a1"]
    newest = rows[0]
    assert newest["occurred_at"] == iso(s(5400))
    assert newest["client_ip"] == "2001:db8:1:2::5"
    assert (newest["method"], newest["route"], newest["status"], newest["outcome"]) == ("GET", "/v1/orders", 200, "ok")
    assert newest["late"] == 0
    assert rows[-1]["client_ip"] == "10.1.2.3"


def test_key_timeline_filters_by_outcome_route_and_limit(loaded):
    assert [r["request_id"] for r in run_query(loaded, "key_timeline", key_id="key_alpha", outcome="error", **WINDOW)] == ["req-a3"]
    by_route = run_query(loaded, "key_timeline", key_id="key_alpha", route="/v1/orders/{order_id}", **WINDOW)
    assert [r["request_id"] for r in by_route] == ["req-a4"]
    assert [r["request_id"] for r in run_query(loaded, "key_timeline", key_id="key_alpha", limit=2, **WINDOW)] == [
        "req-a5", "req-a4"]


def test_key_ips_counts_each_address_with_first_and_last_seen(loaded):
    rows = run_query(loaded, "key_ips", key_id="key_alpha", **WINDOW)
    assert [(r["ip"], r["network"], r["requests"], r["errors"], r["denials"]) for r in rows] == [
        ("10.1.2.3", "10.1.2.0/24", 2, 1, 0),
        ("10.1.2.4", "10.1.2.0/24", 1, 0, 0),
        ("2001:db8:1:2::5", "2001:db8:1::/48", 1, 0, 0),
        ("203.0.113.9", "203.0.113.0/24", 1, 0, 1),
    ]
    assert (rows[0]["first_seen"], rows[0]["last_seen"]) == (iso(s(10)), iso(s(65)))
    assert rows[3]["user_agents"] == ["python-requests/2.31.0"]


def test_key_networks_groups_addresses_by_network(loaded):
    rows = run_query(loaded, "key_networks", key_id="key_alpha", **WINDOW)
    assert [(r["network"], r["ips"], r["requests"], r["denials"]) for r in rows] == [
        ("10.1.2.0/24", 2, 3, 0),
        ("2001:db8:1::/48", 1, 1, 0),
        ("203.0.113.0/24", 1, 1, 1),
    ]
    assert (rows[0]["first_seen"], rows[0]["last_seen"]) == (iso(s(10)), iso(s(65)))
    wider = run_query(loaded, "key_networks", key_id="key_alpha", since=T0 - timedelta(days=4), until=AT)
    assert wider[0]["first_seen"] == iso(T0 - timedelta(days=3))


def test_key_routes_counts_requests_errors_denials_and_latency_per_route(loaded):
    rows = run_query(loaded, "key_routes", key_id="key_alpha", **WINDOW)
    assert [(r["service"], r["method"], r["route"], r["requests"], r["errors"], r["denials"]) for r in rows] == [
        ("orders-api", "GET", "/v1/orders", 3, 0, 0),
        ("orders-api", "POST", "/v1/orders", 1, 1, 0),
        ("orders-api", "GET", "/v1/orders/{order_id}", 1, 0, 1),
    ]
    assert rows[0]["p50_latency_ms"] == 14
    assert rows[0]["p95_latency_ms"] == 16


def test_key_user_agents_lists_clients_with_their_addresses(loaded):
    rows = run_query(loaded, "key_user_agents", key_id="key_alpha", **WINDOW)
    assert [(r["user_agent"], r["requests"], r["ips"], r["denials"]) for r in rows] == [
        ("curl/8.5.0", 4, 3, 0),
        ("python-requests/2.31.0", 1, 1, 1),
    ]
    assert rows[1]["first_seen"] == rows[1]["last_seen"] == iso(s(120))


def test_key_hours_of_week_buckets_minutes_by_weekday_and_hour(loaded):
    week = {"since": T0 - timedelta(days=7), "until": T0 + timedelta(days=1)}
    rows = run_query(loaded, "key_hours_of_week", key_id="key_alpha", **week)
    assert [(r["weekday"], r["hour"], r["total_requests"], r["total_errors"], r["total_denials"], r["active_days"])
            for r in rows] == [(1, 9, 4, 1, 1, 1), (1, 10, 1, 0, 0, 1), (5, 9, 1, 0, 0, 1)]
    assert [r["share"] for r in rows] == [0.6667, 0.1667, 0.1667]


def test_key_hours_of_week_in_another_time_zone(loaded):
    week = {"since": T0 - timedelta(days=7), "until": T0 + timedelta(days=1)}
    rows = run_query(loaded, "key_hours_of_week", key_id="key_alpha", timezone="America/New_York", **week)
    assert [(r["weekday"], r["hour"], r["total_requests"]) for r in rows] == [(1, 4, 4), (1, 5, 1), (5, 5, 1)]  # EDT until Nov 1


def test_key_baseline_compares_the_last_day_with_the_days_before(loaded):
    rows = {r["metric"]: r for r in run_query(loaded, "key_baseline", key_id="key_alpha", at=AT, baseline_days=7)}
    assert list(rows) == ["requests", "errors", "denials", "ips", "networks", "routes", "user_agents"]
    assert {m: rows[m]["last_24h"] for m in rows} == {
        "requests": 5, "errors": 1, "denials": 1, "ips": 4, "networks": 3, "routes": 2, "user_agents": 2}
    assert rows["requests"]["baseline_daily_avg"] == 0.14
    assert rows["requests"]["baseline_daily_max"] == 1
    assert rows["requests"]["ratio"] == 35.0
    assert rows["errors"]["ratio"] is None
    assert (rows["networks"]["never_seen_before"], rows["networks"]["examples"]) == (2, ["2001:db8:1::/48", "203.0.113.0/24"])
    assert (rows["routes"]["never_seen_before"], rows["routes"]["examples"]) == (1, ["/v1/orders/{order_id}"])
    assert rows["user_agents"]["examples"] == ["python-requests/2.31.0"]


def test_key_audit_lists_lifecycle_changes_newest_first(loaded):
    rows = run_query(loaded, "key_audit", key_id="key_gamma", since=T0 - timedelta(days=30), until=AT)
    assert [(r["action"], r["occurred_at"]) for r in rows] == [
        ("revoked", iso(s(1800))), ("created", iso(CREATED["key_gamma"]))]
    assert rows[0]["reason"] == "leaked in a public repository"
    assert rows[0]["after"] == '{"status":"revoked"}'
    assert rows[1]["before"] == "null"


@pytest.mark.parametrize(
    ("by", "project", "expected"),
    [
        ("requests", "", [("key_beta", 7), ("key_alpha", 5), ("key_delta", 5), ("key_gamma", 3)]),
        ("errors", "", [("key_alpha", 1)]),
        ("denials", "", [("key_beta", 6), ("key_alpha", 1), ("key_gamma", 1)]),
        ("requests", "proj_b", [("key_delta", 5), ("key_gamma", 3)]),
    ],
)
def test_top_keys_ranks_keys_in_the_window(loaded, by, project, expected):
    rows = run_query(loaded, "top_keys", by=by, project=project, **WINDOW)
    assert [(r["key_id"], r[f"total_{by}"]) for r in rows] == expected


def test_top_keys_rates(loaded):
    beta = run_query(loaded, "top_keys", **WINDOW)[0]
    assert (beta["total_requests"], beta["total_errors"], beta["total_denials"]) == (7, 0, 6)
    assert beta["denial_rate"] == round(6 / 7, 4)
    assert beta["project_id"] == "proj_a"


def test_project_usage_sums_per_project(loaded):
    rows = run_query(loaded, "project_usage", **WINDOW)
    assert [(r["project_id"], r["active_keys"], r["total_requests"], r["total_errors"], r["total_denials"]) for r in rows] == [
        ("proj_a", 2, 12, 1, 7), ("proj_b", 2, 8, 0, 1)]
    assert (rows[0]["total_request_bytes"], rows[0]["total_response_bytes"]) == (1200, 24000)
    assert [r["project_id"] for r in run_query(loaded, "project_usage", project="proj_b", **WINDOW)] == ["proj_b"]


def test_keys_many_networks_finds_keys_spread_over_networks(loaded):
    rows = run_query(loaded, "keys_many_networks", min_networks=3, **WINDOW)
    assert [(r["key_id"], r["networks"], r["ips"], r["total_requests"]) for r in rows] == [
        ("key_delta", 4, 5, 5), ("key_alpha", 3, 4, 5)]
    assert rows[0]["sample_networks"] == ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24", "2001:db8:aa::/48"]
    assert [r["key_id"] for r in run_query(loaded, "keys_many_networks", min_networks=4, **WINDOW)] == ["key_delta"]


def test_denial_storms_finds_the_burst(loaded):
    rows = run_query(loaded, "denial_storms", min_denials=5, **WINDOW)
    assert len(rows) == 1
    storm = rows[0]
    assert (storm["key_id"], storm["project_id"], storm["denials"], storm["ips"]) == ("key_beta", "proj_a", 6, 3)
    assert (storm["bucket_start"], storm["bucket_end"]) == ("2026-11-02T09:10:00Z", "2026-11-02T09:15:00Z")
    assert storm["sample_ips"] == ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    assert storm["outcomes"] == ["denied", "invalid", "rate_limited"]
    assert (storm["first_seen"], storm["last_seen"]) == (iso(s(600)), iso(s(650)))
    assert run_query(loaded, "denial_storms", min_denials=7, **WINDOW) == []
    one_minute = run_query(loaded, "denial_storms", min_denials=5, bucket_minutes=1, **WINDOW)
    assert [(r["bucket_start"], r["bucket_end"]) for r in one_minute] == [("2026-11-02T09:10:00Z", "2026-11-02T09:11:00Z")]
    two_hours = run_query(loaded, "denial_storms", min_denials=6, bucket_minutes=120, **WINDOW)
    assert [(r["bucket_start"], r["denials"]) for r in two_hours] == [("2026-11-02T08:00:00Z", 6)]
    odd = run_query(loaded, "denial_storms", min_denials=6, bucket_minutes=7, **WINDOW)
    assert [(r["key_id"], r["denials"]) for r in odd] == [("key_beta", 6)]


def test_inactive_key_use_finds_dead_keys_still_used_and_accepted(loaded):
    rows = run_query(loaded, "inactive_key_use", **WINDOW)
    assert [(r["key_id"], r["state"], r["requests"], r["accepted"], r["refused_as_inactive"], r["ips"]) for r in rows] == [
        ("key_gamma", "revoked", 2, 1, 1, 2),
        ("key_delta", "disabled", 1, 1, 0, 1),
    ]
    gamma, delta = rows
    assert gamma["inactive_since"] == iso(s(1800))
    assert (gamma["first_seen"], gamma["last_seen"]) == (iso(s(2400)), iso(s(2700)))
    assert gamma["sample_ips"] == ["192.0.2.10", "192.0.2.11"]
    assert delta["inactive_since"] == iso(s(150))
    assert delta["first_seen"] == iso(s(180))


def test_idle_keys_reports_keys_unused_for_n_days(loaded):
    rows = run_query(loaded, "idle_keys", key_ids=KEY_LIST, created_ats=created_ats(KEY_LIST), idle_days=30, at=AT)
    assert [(r["key_id"], r["idle_days"], r["last_used_ip"], r["last_service"], r["last_route"]) for r in rows] == [
        ("key_idle", 40, "10.5.5.5", "orders-api", "/v1/orders")]
    assert rows[0]["last_used_at"] == iso(T0 - timedelta(days=40))
    assert rows[0]["created_at"] == iso(CREATED["key_idle"])
    everyone = run_query(loaded, "idle_keys", key_ids=KEY_LIST, created_ats=created_ats(KEY_LIST), idle_days=0, at=AT)
    assert [r["key_id"] for r in everyone] == ["key_idle", "key_delta", "key_beta", "key_gamma", "key_alpha"]


def test_never_used_keys_reports_old_keys_without_any_use(loaded):
    rows = run_query(loaded, "never_used_keys", key_ids=KEY_LIST, created_ats=created_ats(KEY_LIST), idle_days=30, at=AT)
    assert [(r["key_id"], r["age_days"]) for r in rows] == [("key_never", 60)]
    younger = run_query(loaded, "never_used_keys", key_ids=KEY_LIST, created_ats=created_ats(KEY_LIST), idle_days=1, at=AT)
    assert [r["key_id"] for r in younger] == ["key_never", "key_new"]


@pytest.mark.parametrize(("name", "params"), [c for c in SCOPED_CASES], ids=[c[0] for c in SCOPED_CASES])
def test_a_project_sees_only_its_own_keys(loaded, name, params):
    everything = run_query(loaded, name, **params)
    assert everything, f"{name} should find something in the fixture"
    other_project = run_query(loaded, name, project="proj_zzz", **params)
    assert other_project == []
    for project in ("proj_a", "proj_b"):
        rows = run_query(loaded, name, project=project, **params)
        assert all(r.get("project_id", project) == project for r in rows)


def test_key_baseline_of_another_project_is_empty(loaded):
    rows = run_query(loaded, "key_baseline", key_id="key_alpha", at=AT, baseline_days=7, project="proj_b")
    assert all(r["last_24h"] == 0 and r["baseline_daily_max"] == 0 for r in rows)


def test_never_used_keys_confined_to_a_project_uses_that_projects_key_list(loaded):
    keys = [k for k in KEY_LIST if k in ("key_gamma", "key_delta", "key_new")]
    rows = run_query(loaded, "never_used_keys", key_ids=keys, created_ats=created_ats(keys), idle_days=1, at=AT, project="proj_b")
    assert [r["key_id"] for r in rows] == ["key_new"]
