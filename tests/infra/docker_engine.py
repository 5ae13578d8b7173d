"""Whether a Docker engine answers, so testcontainers can be used."""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

DEFAULT_SOCKET = Path("/var/run/docker.sock")


@functools.cache
def docker_engine() -> tuple[bool, str]:
    """``(True, version)`` when a Docker engine answers, else ``(False, why not)``.

    Asked once per process. With neither ``DOCKER_HOST`` nor the default socket
    there is no engine and nothing is run; otherwise ``docker info`` decides.
    """
    if not os.environ.get("DOCKER_HOST") and not DEFAULT_SOCKET.exists():
        return False, f"no Docker engine: DOCKER_HOST is unset and {DEFAULT_SOCKET} does not exist"
    docker = shutil.which("docker")
    if docker is None:
        return False, "no Docker engine: the docker client is not installed"
    try:
        answer = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        return False, "no Docker engine: `docker info` did not answer within 15 s"
    if answer.returncode != 0 or not answer.stdout.strip():
        detail = (answer.stderr or answer.stdout).strip().splitlines()[-1:] or ["no output"]
        return False, f"no Docker engine: `docker info` failed: {detail[0]}"
    return True, f"Docker engine {answer.stdout.strip()}"


def testcontainers_module(name: str) -> ModuleType | None:
    """testcontainers' module for ``name`` ("kafka", "postgres", ...), or None if not installed.

    testcontainers 4.x keeps its modules under ``testcontainers.community``;
    older releases keep them at the top level.
    """
    for module in (f"testcontainers.community.{name}", f"testcontainers.{name}"):
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    return None
