"""Server processes started by the tests, which never outlive the test run.

Each server runs in a session (process group) of its own, so stopping it stops
every process it forked. Three guards keep a crashed or killed test run from
leaving servers behind:

* the kernel signals the server when this Python process dies, even by SIGKILL
  (``PR_SET_PDEATHSIG``, set in the child between fork and exec);
* everything still open is closed at interpreter exit (``atexit``);
* SIGTERM and SIGHUP, when nobody else handles them, close everything first and
  then end the process as the signal would have.

Only SIGKILL of the test process leaves a server's scratch directory behind;
``scratch_dir`` removes such leftovers the next time.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

_PR_SET_PDEATHSIG = 1
OWNER_FILE = "owner.pid"


class Closable(Protocol):
    def close(self) -> None: ...


_open: dict[int, Closable] = {}
_open_lock = threading.RLock()
_guards_installed = False


def track(resource: Closable) -> None:
    """Close ``resource`` at interpreter exit or on SIGTERM/SIGHUP unless closed before."""
    _install_guards()
    with _open_lock:
        _open[id(resource)] = resource


def untrack(resource: Closable) -> None:
    """Forget ``resource``: it was closed by its owner."""
    with _open_lock:
        _open.pop(id(resource), None)


def close_all() -> None:
    """Close every tracked resource, newest first; one failure does not stop the rest."""
    with _open_lock:
        resources = list(_open.values())[::-1]
        _open.clear()
    for resource in resources:
        try:
            resource.close()
        except Exception:  # cleanup must reach every resource
            pass


def _close_all_and_reraise(signum: int, _frame: Any) -> None:
    close_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_guards() -> None:
    global _guards_installed
    with _open_lock:
        if _guards_installed:
            return
        _guards_installed = True
    atexit.register(close_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _close_all_and_reraise)


def _die_with_parent(signum: int) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to send ``signum`` when the parent dies."""

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() == 1:  # parent already gone between fork and prctl
            os.kill(os.getpid(), signum)

    return arm


class ServerProcess:
    """One long-running server command, its output appended to ``log_path``.

    ``run_as`` takes the ``subprocess`` keywords that switch user (see
    ``postgres.run_as_kwargs``); ``death_signal`` is what the kernel sends the
    server if the test process dies without stopping it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        run_as: Mapping[str, Any] | None = None,
        death_signal: int = signal.SIGKILL,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.run_as = dict(run_as or {})
        self.death_signal = death_signal
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def start(self) -> None:
        """Spawn the server in a new session; a no-op while it runs."""
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(self.death_signal),
                **self.run_as,
            )

    def stop(self, escalation: Sequence[tuple[int, float]] = ((signal.SIGTERM, 30.0),)) -> None:
        """Send each (signal, grace seconds) in turn until the server exits, then SIGKILL its group.

        The final SIGKILL reaches anything the server forked and left running.
        """
        popen = self._popen
        if popen is None:
            return
        pgid = popen.pid  # start_new_session: the server leads its own group
        for signum, grace in escalation:
            if popen.poll() is not None:
                break
            _signal_quietly(popen.pid, signum)
            try:
                popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
        _kill_group(pgid)
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not time out
            pass
        self._popen = None


def _signal_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _kill_group(pgid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def log_tail(*paths: Path, lines: int = 40, errors: str = r"\b(ERROR|FATAL|PANIC)\b") -> str:
    """The last ``lines`` lines of each existing file, after its last lines matching ``errors``.

    A server's last lines are often its orderly shutdown; the error lines say why.
    """
    parts = []
    for path in paths:
        if not path.exists():
            continue
        text = path.read_text(errors="replace").splitlines()
        flagged = [line for line in text if re.search(errors, line)][-10:]
        if flagged:
            parts.append(f"--- {path}: error lines ---\n" + "\n".join(flagged))
        tail = text[-lines:]
        parts.append(f"--- {path}: last {len(tail)} lines ---\n" + "\n".join(tail))
    return "\n".join(parts) or "(no log written)"


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory ``<tmp>/<prefix>*`` owned by this process.

    Directories of the same prefix whose owning process is gone are removed
    first; those of live processes (other test runs) are left alone.
    """
    for old in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            owner = int((old / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _alive(owner):
            shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=prefix))
    (path / OWNER_FILE).write_text(str(os.getpid()))
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
