"""Private files and directories: the key store and the embedded data directory are readable by
their owner only (0600 / 0700), whatever the process umask."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600


def ensure_private_directory(path: Path) -> Path:
    """Create `path` (and missing parents) as 0700; an existing directory is left as it is (an
    operator may have chosen its mode), except that it must be a directory."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIRECTORY)
        except FileExistsError:
            continue
        os.chmod(directory, PRIVATE_DIRECTORY)  # mkdir's mode is masked by the umask
    return path


def ensure_private_file(path: Path) -> Path:
    """Create `path` as an empty 0600 file if missing; tighten it to 0600 if others can read it."""
    path = Path(path)
    ensure_private_directory(path.parent)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.info("%s was readable by others (mode %o); tightening it to 0600", path, mode)
            os.chmod(path, PRIVATE_FILE)
        return path
    os.close(descriptor)
    os.chmod(path, PRIVATE_FILE)
    return path
