"""The example services run as documented: `python examples/<name>.py` serves, refuses requests
without a key, and answers with one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.infra.ports import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the example exited with {process.returncode}:\n{process.stdout.read()}")  # type: ignore[union-attr]
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


@pytest.mark.parametrize("example", ["fastapi_service.py", "flask_service.py"])
def test_example_service_runs_and_is_protected(example, tmp_path):
    env = {
        **os.environ,
        "KEYTRAIL_DATA_DIR": str(tmp_path / "data"),
        "KEYTRAIL_API_URL": f"http://127.0.0.1:{free_port()}",
    }
    created = subprocess.run(
        [sys.executable, str(EXAMPLES / example), "--create-key", "proj_example"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    key_id, secret = created.stdout.split()
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / example), "--port", str(port), "--transport", "http"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(f"{base}/healthz", process)
        assert httpx.get(f"{base}/v1/orders/A-1001").status_code == 401
        answer = httpx.get(f"{base}/v1/orders", headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 200 and answer.json()["caller"] == key_id
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert secret not in output
