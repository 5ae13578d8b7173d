"""A throwaway PostgreSQL server for tests, from the machine's own binaries.

Uses Debian's ``/usr/lib/postgresql/<major>/bin`` (the ``postgresql`` package,
installed by ``infra/install-test-deps.sh``) or ``initdb`` on PATH. PostgreSQL
refuses to run as root, so when the tests run as root the cluster belongs to
the ``postgres`` OS user and every server command runs as that user.

    with PostgresServer() as pg:
        psycopg.connect(pg.dsn)              # postgresql://postgres@127.0.0.1:<port>/postgres
        create_engine(pg.url)                # postgresql+psycopg://...
        pg.stop(); pg.start()                # an outage: same port and data
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from .ports import LOOPBACK, free_port
from .processes import ServerProcess, log_tail, scratch_dir, track, untrack

SERVER_USER = "postgres"
SUPERUSER = "postgres"

SERVER_SETTINGS = {
    "listen_addresses": LOOPBACK,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "timezone": "UTC",
}


class PostgresStartupError(RuntimeError):
    """PostgreSQL is missing or could not be initialised or started."""


def postgres_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``postgres``: newest Debian major, else PATH."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.parent.name)] or [0],
    )
    if debian:
        return debian[-1].parent
    initdb = shutil.which("initdb")
    if initdb and (Path(initdb).parent / "postgres").exists():
        return Path(initdb).parent
    raise PostgresStartupError(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH); "
        "install them with infra/install-test-deps.sh (Debian package: postgresql)"
    )


def run_as_kwargs() -> dict[str, Any]:
    """``subprocess`` keywords that run a command as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresStartupError(
            f"running as root but there is no '{SERVER_USER}' OS user to own the cluster "
            "(the Debian postgresql package creates it)"
        ) from None
    return {"user": SERVER_USER, "group": SERVER_USER, "extra_groups": []}


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at ``database`` instead."""
    return make_url(dsn).set(database=database).render_as_string(hide_password=False)


def sqlalchemy_url(dsn: str) -> str:
    """``postgresql+psycopg://`` form of a libpq/SQLAlchemy URL."""
    return make_url(dsn).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def libpq_dsn(url: str) -> str:
    """Plain ``postgresql://`` form (for psycopg) of a libpq/SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(dsn: str, name: str) -> str:
    """Create database ``name`` on the server of ``dsn`` unless it exists; its DSN."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(dsn, name)


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, served on 127.0.0.1:<free port>.

    Trust authentication, superuser ``postgres``, ``fsync=off``; the unix socket
    lives in the cluster's directory. ``stop()`` keeps port and data so that
    ``start()`` brings back the same server (key-store outage tests). Leaving
    the context stops it and removes the directory.
    """

    origin = "local"
    restartable = True

    def __init__(self, *, startup_timeout: float = 60.0, stop_timeout: float = 30.0) -> None:
        self.bin_dir = postgres_bin_dir()
        self._run_as = run_as_kwargs()
        # Made here, not under pytest's tmp_path: that sits in a 0700 root directory
        # the postgres user cannot enter.
        self.workdir = scratch_dir("keytrail-pg-")
        if self._run_as:
            shutil.chown(self.workdir, SERVER_USER, SERVER_USER)
        self.data_dir = self.workdir / "data"
        self.socket_dir = self.workdir
        self.log_path = self.workdir / "server.log"
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._process: ServerProcess | None = None
        self._closed = False
        track(self)

    @property
    def dsn(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/postgres``, for psycopg."""
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/postgres"

    @property
    def url(self) -> str:
        """``postgresql+psycopg://postgres@127.0.0.1:<port>/postgres``, for SQLAlchemy."""
        return sqlalchemy_url(self.dsn)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    def create_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; its SQLAlchemy URL."""
        return sqlalchemy_url(create_database(self.dsn, name))

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the server (running ``initdb`` the first time) and wait until it accepts queries."""
        if self._closed:
            raise PostgresStartupError("this server was closed; make a new PostgresServer")
        if self.running:
            return
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._process = ServerProcess(
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)],
            log_path=self.log_path,
            cwd=self.workdir,
            run_as=self._run_as,
            death_signal=signal.SIGQUIT,  # immediate shutdown if the test run dies
        )
        self._process.start()
        self._wait_until_ready()

    def stop(self) -> None:
        """Fast shutdown (SIGINT); immediate (SIGQUIT), then SIGKILL, if it lingers. Data is kept."""
        if self._process is not None:
            self._process.stop(((signal.SIGINT, self.stop_timeout), (signal.SIGQUIT, 5.0)))
            self._process = None

    def close(self) -> None:
        """Stop the server for good and remove its directory."""
        self.stop()
        self._closed = True
        untrack(self)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for error messages."""
        return log_tail(self.log_path, lines=lines)

    def _initdb(self) -> None:
        command = [
            str(self.bin_dir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        ]
        result = subprocess.run(
            command, cwd=self.workdir, capture_output=True, text=True, timeout=120, **self._run_as
        )
        if result.returncode != 0:
            raise PostgresStartupError(
                f"initdb failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
            )
        settings = {
            **SERVER_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
        }
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# keytrail tests\n")
            conf.writelines(f"{key} = '{value}'\n" for key, value in settings.items())

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            assert self._process is not None
            if not self._process.running:
                code = self._process.exit_code
                self._process = None
                raise PostgresStartupError(
                    f"postgres exited with code {code} while starting:\n{self.log_tail()}"
                )
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as error:
                last_error = str(error).strip()
            time.sleep(0.1)
        self.stop()
        raise PostgresStartupError(
            f"postgres did not accept connections within {self.startup_timeout:.0f} s ({last_error}):\n{self.log_tail()}"
        )
