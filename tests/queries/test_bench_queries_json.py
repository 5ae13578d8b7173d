"""`bench/bench_queries.py --json` prints one final JSON object that scripts compare runs by (issue 19)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_json_flag_prints_one_object_with_every_query_case(tmp_path):
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_queries.py"), "--events", "3000", "--keys", "20",
         "--days", "8", "--runs", "2", "--settle", "0", "--json"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)  # stdout is that one object and nothing else
    assert set(result) == {"queries", "events"}
    assert result["events"] == 3000
    queries = result["queries"]
    assert "top_keys all projects, 24 h" in queries
    assert "key_baseline busy key, 24 h vs 28 d" in queries
    assert len(queries) >= 20
    for timing in queries.values():
        assert set(timing) == {"p50_ms", "p95_ms"}
        assert 0 <= timing["p50_ms"] <= timing["p95_ms"]
    assert "| query | case |" in run.stderr  # the Markdown report still appears, on stderr


def test_json_flag_with_a_path_also_writes_the_details(tmp_path):
    details = tmp_path / "details.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_queries.py"), "--events", "2000", "--keys", "10",
         "--days", "8", "--runs", "1", "--settle", "0", "--json", str(details)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["events"] == 2000
    assert {"results", "storage", "load"} <= set(json.loads(details.read_text()))
