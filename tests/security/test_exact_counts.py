"""Exact counts whatever the writers: real processes on one embedded store (issue: counts overwritten).

Each case loads two files of events over the same keys and the same minutes (different event
ids) and checks that the minute table counts every stored event exactly once:
- two `keytrail ingest --direct` runs one after the other (each process used to start with empty
  state and overwrite the other's minute rows: half the counts lost);
- two at the same time (the second is refused at once with one clear line, then re-run);
- `keytrail serve` killed with SIGKILL mid-stream and restarted, the second file sent after.
Re-ingesting a file reports its events as already counted, not as new.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from keytrail.schemas.codec import encode_usage_event
from tests.factories import usage_event
from tests.security.conftest import serve_process

KEYTRAIL = Path(sys.executable).parent / "keytrail"
START = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
PER_FILE = 3000


def write_file(path: Path, seed: int, count: int = PER_FILE) -> Path:
    """`count` events over 25 keys in the same 20 minutes for every seed; ids differ by seed."""
    with path.open("wb") as handle:
        for i in range(count):
            event = usage_event(f"key_{i % 25:02d}", at=START, seconds=(i * 1200 / count) + seed * 0.001,
                                event_id=uuid.UUID(int=seed << 64 | i, version=4), project_id="proj_counts",
                                client_ip=f"10.0.{seed}.{i % 200 + 1}")
            handle.write(encode_usage_event(event) + b"\n")
    return path


def ingest(data_dir: Path, file: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KEYTRAIL_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    env.pop("KEYTRAIL_CLICKHOUSE_URL", None)
    return subprocess.run([str(KEYTRAIL), "ingest", str(file), *extra], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          timeout=300, check=False)


def start_ingest(data_dir: Path, file: Path) -> subprocess.Popen:
    env = {**os.environ, "KEYTRAIL_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    env.pop("KEYTRAIL_CLICKHOUSE_URL", None)
    return subprocess.Popen([str(KEYTRAIL), "ingest", "--direct", str(file)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


COUNT_SCRIPT = """
import json, sys
from pathlib import Path
from keytrail.settings import Settings
from keytrail.sql.backends import open_clickhouse
from keytrail.sql.queries.rollups import refresh_rollups
store = open_clickhouse(Settings(data_dir=Path(sys.argv[1]), _env_file=None).clickhouse_url)
refresh_rollups(store)  # the hourly rollup converges on its own each minute; a test does not wait
def one(sql):
    return store.query(sql, {"project": sys.argv[2]})[0]["n"]
print(json.dumps({
    "stored": one("SELECT count() AS n FROM usage_events FINAL WHERE project_id = {project:String}"),
    "counted": one("SELECT sum(requests) AS n FROM key_usage_minute FINAL WHERE project_id = {project:String}"),
    "hourly": one("SELECT sum(requests) AS n FROM usage_hourly WHERE project_id = {project:String}"),
}))
"""


def counts(data_dir: Path, project: str = "proj_counts") -> dict[str, int]:
    """Stored events and counted requests of `project`, read by a separate process (one chDB owner
    at a time). The files' events are all of proj_counts; the console records its own API calls
    made with the admin key under the project `keytrail`, so those are counted apart."""
    done = subprocess.run([sys.executable, "-c", COUNT_SCRIPT, str(data_dir), project], capture_output=True, text=True,
                          timeout=120, check=True)
    return {k: int(v or 0) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def summary(output: str) -> dict[str, int]:
    """accepted/duplicates/late/rejected from the ingest report table."""
    rows = [line for line in output.splitlines() if "│" in line]
    values = [cell.strip() for cell in rows[-1].strip("│ ").split("│")]
    return dict(zip(("accepted", "duplicates", "late", "rejected", "undelivered"), map(int, values), strict=True))


@pytest.mark.slow
def test_two_runs_one_after_the_other_count_every_event_once(tmp_path):
    data = tmp_path / "data"
    first, second = write_file(tmp_path / "a.jsonl", 1), write_file(tmp_path / "b.jsonl", 2)
    assert ingest(data, first, "--direct").returncode == 0
    assert ingest(data, second, "--direct").returncode == 0
    after = counts(data)
    assert after["stored"] == after["counted"] == 2 * PER_FILE
    assert after["hourly"] == 2 * PER_FILE

    again = ingest(data, first, "--direct")
    assert again.returncode == 0, again.stdout
    reported = summary(again.stdout)
    assert reported["accepted"] == 0 and reported["late"] == 0 and reported["duplicates"] == PER_FILE
    assert counts(data)["counted"] == 2 * PER_FILE


@pytest.mark.slow
def test_two_runs_at_the_same_time_one_is_refused_clearly_then_nothing_is_lost(tmp_path):
    data = tmp_path / "data"
    first, second = write_file(tmp_path / "a.jsonl", 1), write_file(tmp_path / "b.jsonl", 2)
    runs = [start_ingest(data, first), start_ingest(data, second)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    codes = [run.returncode for run in runs]
    for code, output, file in zip(codes, outputs, (first, second), strict=True):
        if code != 0:
            assert code == 2
            line = next(line for line in output.splitlines() if "error" in line)
            assert "in use by process" in line and "without --direct" in line
            assert "Traceback" not in output
            assert ingest(data, file, "--direct").returncode == 0  # the refused one, re-run
    assert counts(data)["stored"] == counts(data)["counted"] == 2 * PER_FILE


def post_batches(url: str, admin_key: str, file: Path, per_request: int) -> list[bytes]:
    """The request bodies a client would send for `file`, `per_request` events each."""
    lines = [line for line in file.read_bytes().splitlines() if line.strip()]
    return [b'{"events":[' + b",".join(lines[i:i + per_request]) + b"]}" for i in range(0, len(lines), per_request)]


@pytest.mark.slow
def test_server_killed_mid_stream_and_restarted_counts_exactly(tmp_path):
    """kill -9 lands while a request is in flight, after earlier requests were acknowledged; the
    client then re-sends the whole file (it cannot know what landed) and sends the second."""
    data = tmp_path / "data"
    data.mkdir()
    first, second = write_file(tmp_path / "a.jsonl", 1), write_file(tmp_path / "b.jsonl", 2)
    with serve_process(data) as server:
        bodies = post_batches(server.url, server.admin_key, first, per_request=500)
        headers = {"authorization": f"Bearer {server.admin_key}", "content-type": "application/json"}
        with httpx.Client(headers=headers, timeout=60) as client:
            for body in bodies[:3]:  # acknowledged before the crash
                assert client.post(f"{server.url}/v1/events", content=body).status_code == 200
            in_flight = threading.Thread(
                target=lambda: _post_ignoring_errors(client, f"{server.url}/v1/events", bodies[3]))
            in_flight.start()
            time.sleep(0.05)
            server.process.send_signal(signal.SIGKILL)  # no shutdown: whatever was not durable is lost here
            server.process.wait(20)
            in_flight.join(60)
    with serve_process(data) as server:
        again = ingest(data, first, "--api-url", server.url, "--api-key", server.admin_key)
        assert again.returncode == 0, again.stdout  # a client retrying what it is not sure landed
        reported = summary(again.stdout)
        assert reported["accepted"] + reported["late"] + reported["duplicates"] == PER_FILE
        assert reported["duplicates"] >= 3 * 500, "what was acknowledged before the crash is reported as counted"
        done = ingest(data, second, "--api-url", server.url, "--api-key", server.admin_key)
        assert done.returncode == 0, done.stdout
    after = counts(data)
    assert after["stored"] == after["counted"] == 2 * PER_FILE
    own = counts(data, "keytrail")  # the console's audit of its own API calls: counted once each too
    assert own["stored"] == own["counted"]


def _post_ignoring_errors(client: httpx.Client, url: str, body: bytes) -> None:
    try:
        client.post(url, content=body)
    except httpx.HTTPError:
        pass  # the server died under it: the client cannot know whether it landed
