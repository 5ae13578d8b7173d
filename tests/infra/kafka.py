"""A real Apache Kafka broker (KRaft, broker and controller in one JVM) for tests.

The official broker jars come from Maven Central through ``infra/kafka/pom.xml``
and are cached once per machine (see ``ensure_kafka_jars``); no Docker needed.

    with KafkaBroker() as broker:
        Producer({"bootstrap.servers": broker.bootstrap})
        broker.stop()    # an outage: same ports and data come back on start()
        broker.start()
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from .ports import LOOPBACK, accepts_connections, free_port
from .processes import ServerProcess, log_tail, scratch_dir, track, untrack

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"
CACHE_ENV = "KEYTRAIL_KAFKA_CACHE"

BROKER_SETTINGS = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "num.partitions": "4",
    "auto.create.topics.enable": "true",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
}

LOG4J2_PROPERTIES = """\
status = warn
shutdownHook = disable
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
"""


class KafkaStartupError(RuntimeError):
    """The broker could not be fetched, formatted or started."""


def kafka_version() -> str:
    """The Kafka version ``infra/kafka/pom.xml`` fetches."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not match:
        raise KafkaStartupError(f"no <kafka.version> property in {POM}")
    return match.group(1).strip()


def kafka_cache_dir() -> Path:
    """Where the jars live: ``$KEYTRAIL_KAFKA_CACHE`` or ``~/.cache/keytrail/kafka-<version>``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "keytrail" / f"kafka-{kafka_version()}"


def ensure_kafka_jars() -> Path:
    """The directory of broker jars, fetched with Maven on first use.

    Maven copies into a scratch directory that is renamed to ``libs`` only when
    complete, under a file lock, so concurrent or interrupted runs never see a
    half-filled ``libs``. A later call just returns the path.
    """
    cache = kafka_cache_dir()
    libs = cache / "libs"
    if libs.is_dir():
        return libs
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if libs.is_dir():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaStartupError("Maven (mvn) is not installed; run infra/install-test-deps.sh")
        for stale in cache.glob("libs.partial-*"):  # left by an interrupted fetch
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix="libs.partial-", dir=cache))
        fetch = subprocess.run(
            [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={scratch}"],
            capture_output=True,
            text=True,
        )
        if fetch.returncode != 0 or not any(scratch.glob("kafka_2.13-*.jar")):
            shutil.rmtree(scratch, ignore_errors=True)
            raise KafkaStartupError(
                f"fetching the Kafka jars failed:\n{fetch.stdout[-4000:]}{fetch.stderr[-4000:]}"
            )
        scratch.rename(libs)
    return libs


def java_binary() -> str:
    """``$JAVA_HOME/bin/java`` or the ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaStartupError("no Java runtime: install a JRE 17+ (Debian: openjdk-17-jre-headless)")
    return java


def random_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 characters).

    Never starting with `-`: the storage tool would read such an id as an option (Kafka's own
    Uuid.randomUuid() redraws in that case too).
    """
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not candidate.startswith("-"):
            return candidate


class KafkaBroker:
    """A single-node KRaft Kafka on 127.0.0.1, in a temporary directory of its own.

    ``start()`` (or entering the context) fetches the jars if needed, formats
    the storage on first start and waits until the broker answers metadata
    requests. ``stop()`` ends the JVM but keeps ports and data, so a later
    ``start()`` brings back the same broker: that is how tests simulate an
    outage. Leaving the context stops it and removes its directory.
    """

    origin = "local"
    restartable = True

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        heap: str = "512m",
        startup_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        extra_settings: dict[str, str] | None = None,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else scratch_dir("keytrail-kafka-")
        self.heap = heap
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.port = free_port()
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "server.properties"
        self.log_path = self.workdir / "broker.log"
        self.console_path = self.workdir / "console.log"
        self.cluster_id = random_cluster_id()
        self.settings = {
            **BROKER_SETTINGS,
            "listeners": f"PLAINTEXT://{LOOPBACK}:{self.port},CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{self.port}",
            "controller.quorum.voters": f"1@{LOOPBACK}:{self.controller_port}",
            "log.dirs": str(self.data_dir),
            **(extra_settings or {}),
        }
        self._process: ServerProcess | None = None
        self._closed = False
        track(self)

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:<port>``, for ``bootstrap.servers``."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    def __enter__(self) -> KafkaBroker:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the broker (formatting storage the first time) and wait until it answers."""
        if self._closed:
            raise KafkaStartupError("this broker was closed; make a new KafkaBroker")
        if self.running:
            return
        libs = ensure_kafka_jars()
        self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage(libs)
        self._process = ServerProcess(
            [*self._java(libs), "kafka.Kafka", str(self.config_path)],
            log_path=self.console_path,
            cwd=self.workdir,
        )
        self._process.start()
        self._wait_until_ready()

    def stop(self) -> None:
        """Stop the JVM (SIGTERM, then SIGKILL after ``stop_timeout``); ports and data are kept."""
        if self._process is not None:
            self._process.stop(((signal.SIGTERM, self.stop_timeout),))
            self._process = None

    def close(self) -> None:
        """Stop the broker for good and remove its directory if it made it."""
        self.stop()
        self._closed = True
        untrack(self)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the broker's log and console output, for error messages."""
        return log_tail(self.log_path, self.console_path, lines=lines)

    def _java(self, libs: Path) -> list[str]:
        return [
            java_binary(),
            f"-Xmx{self.heap}",
            # C1 only and the serial collector: a test broker starts faster and
            # competes less for the CPU with the tests than a tuned server would.
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            f"{libs}/*",
        ]

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("".join(f"{key}={value}\n" for key, value in self.settings.items()))
        (self.workdir / "log4j2.properties").write_text(LOG4J2_PROPERTIES.format(log_file=self.log_path))

    def _format_storage(self, libs: Path) -> None:
        # Static voters (controller.quorum.voters) need no --standalone / --initial-controllers.
        command = [
            *self._java(libs),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self.cluster_id,
            "--config",
            str(self.config_path),
            "--ignore-formatted",
        ]
        result = subprocess.run(command, cwd=self.workdir, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise KafkaStartupError(
                f"formatting Kafka storage failed (exit {result.returncode}):\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}\n{self.log_tail()}"
            )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        admin: AdminClient | None = None
        last_error = "the broker port never opened"
        while time.monotonic() < deadline:
            assert self._process is not None
            if not self._process.running:
                code = self._process.exit_code
                self._process = None
                raise KafkaStartupError(
                    f"the Kafka broker exited with code {code} while starting:\n{self.log_tail()}"
                )
            if accepts_connections(self.port):
                admin = admin or AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
                try:
                    if admin.list_topics(timeout=2).brokers:
                        return
                except Exception as error:  # KafkaException while the broker warms up
                    last_error = str(error)
            time.sleep(0.2)
        self.stop()
        raise KafkaStartupError(
            f"the Kafka broker did not answer within {self.startup_timeout:.0f} s ({last_error}):\n{self.log_tail()}"
        )
