"""A real `keytrail serve` on a free port and a headless Debian Chromium driven by Playwright."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    admin_key: str
    data_dir: Path
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """`keytrail serve` in a subprocess on its own data dir; stopped even when the test fails."""
    data_dir = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {**os.environ, "KEYTRAIL_DATA_DIR": str(data_dir), "KEYTRAIL_API_URL": f"http://127.0.0.1:{port}"}
    env.pop("KEYTRAIL_CLICKHOUSE_URL", None)
    env.pop("KEYTRAIL_KEYSTORE_URL", None)
    log_path = data_dir / "serve.log"
    keytrail = Path(sys.executable).parent / "keytrail"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(keytrail), "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"keytrail serve exited early:\n{log_path.read_text()}")
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"keytrail serve did not answer in 60 s:\n{log_path.read_text()}")
                time.sleep(0.2)
            admin_key = (data_dir / "admin.key").read_text().strip()
            yield Server(url=url, admin_key=admin_key, data_dir=data_dir, log=log_path)
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright Python package is not installed"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
