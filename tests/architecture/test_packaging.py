"""The wheel: one top-level name, a light SDK, the rest behind extras."""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.architecture.layers import NOT_IN_THE_SDK, PACKAGE_DIRS, REPO

SDK_REQUIREMENTS = {"pydantic", "pydantic-settings", "orjson", "msgspec", "httpx", "confluent-kafka"}
HEAVY_DISTRIBUTIONS = {"chdb", "faust-streaming", "fastapi", "sqlalchemy", "rocksdict", "uvicorn", "alembic",
                       "psycopg", "clickhouse-connect", "pyarrow", "typer"}


def _requirement_name(line: str) -> str:
    name = line.split(";")[0].strip()
    for stop in "[<>=!~ (":
        name = name.split(stop)[0]
    return name.lower().replace("_", "-")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy, so setuptools' build/ and *.egg-info never land in the work tree.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in PACKAGE_DIRS.values():
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # With build isolation: pyproject.toml's build requirements, not whatever the venv holds.
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel_file,) = out.glob("keytrail-*.whl")
    return wheel_file


def test_the_wheel_installs_only_the_keytrail_name(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
        (listed,) = [n for n in names if n.endswith(".dist-info/top_level.txt")] or [None]
        if listed:
            assert archive.read(listed).decode().split() == ["keytrail"]
        assert "keytrail/sql/clickhouse/0001_usage_core.sql" in names, "migrations ship as package data"
        assert "keytrail/console/dashboard/index.html" in names, "the dashboard ships as package data"
    assert top_level == {"keytrail"}


def test_the_sdk_requires_nothing_heavy_and_extras_add_the_rest(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    requirements = metadata.get_all("Requires-Dist") or []
    base = {_requirement_name(r) for r in requirements if "extra ==" not in r}
    assert base == SDK_REQUIREMENTS
    assert {"worker", "server", "all"} <= set(metadata.get_all("Provides-Extra") or [])
    worker = {_requirement_name(r) for r in requirements if "extra == \"worker\"" in r}
    server = {_requirement_name(r) for r in requirements if "extra == \"server\"" in r}
    assert {"faust-streaming", "chdb", "clickhouse-connect", "rocksdict"} <= worker
    assert {"fastapi", "uvicorn", "chdb", "keytrail"} <= server  # keytrail[keystore]: SQLAlchemy, Alembic, psycopg


@pytest.mark.slow
def test_a_fresh_sdk_install_emits_without_the_heavy_packages(wheel, tmp_path):
    """`pip install keytrail` into a new virtualenv: the SDK works, nothing heavy came along."""
    env_dir = tmp_path / "sdk-venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", str(wheel)], check=True, timeout=600)
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], check=True, capture_output=True,
                            text=True).stdout
    installed = {line.split("==")[0].lower().replace("_", "-") for line in listed.splitlines()}
    assert not installed & HEAVY_DISTRIBUTIONS, f"heavy packages in the SDK install: {installed & HEAVY_DISTRIBUTIONS}"
    probe = (
        "import sys, keytrail\n"
        "from keytrail import emit, KeyTrailMiddleware, KeyTrailWSGIMiddleware, KeyUsageEvent, InProcessEmitter\n"
        "import keytrail.producers.kafka_emitter, keytrail.producers.http_emitter, keytrail.producers.verifiers\n"
        "import keytrail.settings, keytrail.schemas.codec\n"
        "seen = []\n"
        "emitter = InProcessEmitter(seen.extend)\n"
        "keytrail.configure(emitter)\n"
        "emit({'event_id': '5f0c6d1e-0000-4000-8000-000000000001', 'occurred_at': '2026-01-01T00:00:00Z',"
        " 'key_id': 'key_a', 'project_id': 'p', 'service': 's', 'method': 'GET', 'route': '/r', 'status': 200,"
        " 'outcome': 'ok', 'client_ip': '10.0.0.1'})\n"
        "emitter.close(5)\n"
        "assert len(seen) == 1, seen\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(NOT_IN_THE_SDK)!r})\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    cli = subprocess.run([env_dir / "bin" / "keytrail", "--help"], capture_output=True, text=True, timeout=60)
    assert cli.returncode != 0 and "pip install 'keytrail[server]'" in cli.stderr
    assert "Traceback" not in cli.stderr
