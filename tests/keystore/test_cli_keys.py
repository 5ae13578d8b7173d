"""`keytrail keys …` through Typer's test runner, against a real SQLite key store."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import typer
from typer.testing import CliRunner

from keytrail.console.cli_keys import expiry_text, keys_app
from keytrail.keystore import KeyStore
from keytrail.keystore.key_format import parse_key
from keytrail.schemas.usage import Outcome
from keytrail.settings import get_settings

runner = CliRunner()
SECRET = "cli-test-hashing-secret-0123456789"


@pytest.fixture
def keystore_url(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'nested' / 'keys.db'}"
    monkeypatch.setenv("KEYTRAIL_KEYSTORE_URL", url)
    monkeypatch.setenv("KEYTRAIL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KEYTRAIL_SECRET", SECRET)
    monkeypatch.setenv("KEYTRAIL_MODE", "embedded")
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def keys(*args, input=None):
    result = runner.invoke(keys_app, [str(arg) for arg in args], input=input)
    return result


def created(project="payments", *extra):
    result = keys("create", "billing worker", "--project", project, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_create_prints_the_secret_once_and_list_shows_only_the_mask(keystore_url):
    body = created("payments", "--scope", "orders:read", "--expires", "30d")
    secret = body["secret"]
    assert parse_key(secret) is not None
    assert body["masked"] == f"kt_live_…{secret[-4:]}"

    listing = keys("list", "--project", "payments")
    assert listing.exit_code == 0
    assert body["id"] in listing.stdout and body["masked"] in listing.stdout
    assert parse_key(secret).random not in listing.stdout
    assert "-" in listing.stdout  # last used, never

    listed = json.loads(keys("list", "--json").stdout)
    assert [key["id"] for key in listed] == [body["id"]]
    assert "secret" not in listed[0] and "key_hash" not in listed[0]

    with KeyStore.open(keystore_url, SECRET.encode()) as store:
        assert store.verify(secret, scope="orders:read").outcome is Outcome.OK


def test_create_human_output_shows_the_secret_with_a_warning(keystore_url):
    result = keys("create", "k", "--project", "payments")
    assert result.exit_code == 0
    assert "shown once" in result.stdout
    assert "kt_live_" in result.stdout


def test_show_and_history(keystore_url):
    body = created()
    shown = json.loads(keys("show", body["id"], "--json", "--history").stdout)
    assert shown["id"] == body["id"] and shown["history"][0]["action"] == "created"
    human = keys("show", body["id"], "--history")
    assert "billing worker" in human.stdout and "created" in human.stdout


def test_rotate_asks_for_confirmation_and_prints_the_new_secret(keystore_url):
    body = created()
    refused = keys("rotate", body["id"], input="n\n")
    assert refused.exit_code == 1
    assert keys("list", "--json").stdout.count('"id"') == 1  # nothing happened

    rotated = keys("rotate", body["id"], "--grace", "1h", "--yes", "--json")
    assert rotated.exit_code == 0, rotated.output
    rotation = json.loads(rotated.stdout)
    assert rotation["successor"]["rotated_from"] == body["id"]
    assert rotation["previous"]["grace_until"] is not None
    with KeyStore.open(keystore_url, SECRET.encode()) as store:
        assert store.verify(rotation["secret"]).outcome is Outcome.OK
        assert store.verify(body["secret"]).outcome is Outcome.OK  # in grace


def test_revoke_disable_enable_purge(keystore_url):
    body = created()
    assert keys("disable", body["id"], "--yes", "--reason", "audit").exit_code == 0
    assert json.loads(keys("show", body["id"], "--json").stdout)["status"] == "disabled"
    assert keys("enable", body["id"]).exit_code == 0
    assert keys("revoke", body["id"], input="y\n").exit_code == 0
    assert json.loads(keys("show", body["id"], "--json").stdout)["status"] == "revoked"
    assert keys("purge", body["id"], "--yes").exit_code == 0
    missing = keys("show", body["id"])
    assert missing.exit_code == 1
    assert "key_not_found" in missing.stderr


def test_update_changes_the_given_fields(keystore_url):
    body = created("payments", "--scope", "a", "--quota", "10")
    result = keys("update", body["id"], "--name", "renamed", "--unlimited", "--allow", "10.0.0.0/8", "--json")
    assert result.exit_code == 0, result.output
    updated = json.loads(result.stdout)
    assert (updated["name"], updated["quota"], updated["ip_allowlist"], updated["scopes"]) == (
        "renamed",
        None,
        ["10.0.0.0/8"],
        ["a"],
    )


def test_renew_one_key_or_every_key_expiring_soon(keystore_url):
    soon = created("payments", "--expires", "7d")
    later = created("payments", "--expires", "365d")
    one = json.loads(keys("renew", soon["id"], "--by", "90d", "--json").stdout)
    assert one[0]["expires_at"] > soon["expires_at"]
    bulk = keys("renew", "--expiring-within", "120", "--yes", "--json")
    assert [key["id"] for key in json.loads(bulk.stdout)] == [soon["id"]]
    assert keys("renew").exit_code == 2
    assert json.loads(keys("show", later["id"], "--json").stdout)["expires_at"] == later["expires_at"]


def test_sweep_reports_what_it_changed(keystore_url):
    created()
    result = keys("sweep", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"expired": [], "grace_ended": []}


def test_list_filters_reach_the_store(keystore_url):
    first = created("payments")
    created("search")
    assert [key["id"] for key in json.loads(keys("list", "-p", "payments", "--json").stdout)] == [first["id"]]
    assert json.loads(keys("list", "--status", "revoked", "--json").stdout) == []
    assert len(json.loads(keys("list", "--never-used", "--sort", "name", "--asc", "--json").stdout)) == 2


def test_errors_are_one_line_with_code_and_hint(keystore_url):
    bad = keys("create", "k", "--project", "payments", "--expires", "2w")
    assert bad.exit_code == 1
    assert "error[invalid_request]" in bad.stderr and "30d" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_a_missing_secret_in_production_is_a_clear_error(keystore_url, monkeypatch):
    monkeypatch.delenv("KEYTRAIL_SECRET")
    monkeypatch.setenv("KEYTRAIL_MODE", "production")
    get_settings.cache_clear()
    result = keys("list")
    assert result.exit_code == 1
    assert "KEYTRAIL_SECRET" in result.stderr


def test_expiry_colours():
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert expiry_text(None, now).plain == "∞"
    assert expiry_text(now - timedelta(days=1), now).style == "red"
    assert expiry_text(now + timedelta(days=3), now).style == "yellow"
    assert expiry_text(now + timedelta(days=30), now).style == "green"


def test_the_app_is_a_typer_app_with_every_command():
    assert isinstance(keys_app, typer.Typer)
    names = {command.name or command.callback.__name__ for command in keys_app.registered_commands}
    assert names >= {
        "create",
        "list",
        "show",
        "update",
        "rotate",
        "renew",
        "revoke",
        "disable",
        "enable",
        "sweep",
        "purge",
    }
