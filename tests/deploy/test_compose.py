"""docker-compose.yml stays valid and consistent with the settings (parsed without a Docker engine)."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from keytrail.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
SERVICES = {"kafka", "clickhouse", "postgres", "migrate", "worker", "projector"}


def test_compose_file_declares_the_pipeline_services():
    document = yaml.safe_load(COMPOSE.read_text())
    assert SERVICES <= set(document["services"])
    assert "broker,controller" in document["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]


def test_every_keytrail_variable_in_compose_is_a_real_setting():
    document = yaml.safe_load(COMPOSE.read_text())
    known = {f"KEYTRAIL_{name.upper()}" for name in Settings.model_fields}
    for service in ("worker", "projector", "migrate"):
        names = set(document["services"][service]["environment"])
        assert names and names <= known, names - known


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) is not installed")
def test_docker_compose_parses_the_file(monkeypatch):
    monkeypatch.setenv("KEYTRAIL_SECRET", "compose-parse-check")
    answer = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True)
    assert answer.returncode == 0, answer.stderr
