"""docker-compose.yml stays valid and consistent with the settings (parsed without a Docker engine)."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from keytrail.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
SERVICES = {"kafka", "clickhouse", "postgres", "migrate", "worker", "projector", "grafana"}


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


GRAFANA_DIR = COMPOSE.parent / "infra" / "grafana"


def _grafana_mounts(document) -> dict[str, Path]:
    """Container path -> host path of the grafana service's bind mounts."""
    mounts = {}
    for volume in document["services"]["grafana"]["volumes"]:
        host, container = volume.split(":")[:2]
        if host.startswith("."):
            mounts[container] = (COMPOSE.parent / host).resolve()
    return mounts


def test_grafana_service_installs_the_clickhouse_plugin_and_mounts_paths_that_exist():
    document = yaml.safe_load(COMPOSE.read_text())
    grafana = document["services"]["grafana"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"].split(",")
    assert "3000:3000" in grafana["ports"]
    mounts = _grafana_mounts(document)
    assert mounts["/etc/grafana/provisioning"] == (GRAFANA_DIR / "provisioning").resolve()
    for host in mounts.values():
        assert host.is_dir(), host
    assert (mounts["/etc/grafana/provisioning"] / "datasources" / "clickhouse.yaml").is_file()
    assert (mounts["/etc/grafana/provisioning"] / "dashboards" / "keytrail.yaml").is_file()
    assert "clickhouse" in grafana["depends_on"]


def test_grafana_dashboard_provider_points_at_the_mounted_dashboard():
    document = yaml.safe_load(COMPOSE.read_text())
    mounts = _grafana_mounts(document)
    provider_file = GRAFANA_DIR / "provisioning" / "dashboards" / "keytrail.yaml"
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    container_dir = provider["options"]["path"]
    assert container_dir in mounts, f"{container_dir} is not mounted into the grafana service"
    dashboard = mounts[container_dir] / "keytrail.json"
    assert dashboard.is_file()
    home = document["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{container_dir}/keytrail.json"


def test_grafana_datasource_reaches_the_compose_clickhouse_with_its_credentials():
    import json

    document = yaml.safe_load(COMPOSE.read_text())
    clickhouse = document["services"]["clickhouse"]["environment"]
    grafana_env = document["services"]["grafana"]["environment"]
    (source,) = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "clickhouse.yaml").read_text())["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource"
    data = source["jsonData"]
    assert data["host"] in document["services"]
    assert f"{data['port']}:{data['port']}" in document["services"]["clickhouse"]["ports"] and data["protocol"] == "http"
    assert data["username"] == clickhouse["CLICKHOUSE_USER"]
    assert data["defaultDatabase"] == clickhouse["CLICKHOUSE_DB"]
    password = source["secureJsonData"]["password"]
    assert password == "${CLICKHOUSE_PASSWORD}", "the password comes from the environment, not the file"
    assert grafana_env["CLICKHOUSE_PASSWORD"] == clickhouse["CLICKHOUSE_PASSWORD"]
    panels = json.loads((GRAFANA_DIR / "dashboards" / "keytrail.json").read_text())["panels"]
    assert panels and {p["datasource"]["uid"] for p in panels} == {source["uid"]}
