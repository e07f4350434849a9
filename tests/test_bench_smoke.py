"""The benchmark scripts still run: both with --quick, in their own processes (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"

pytestmark = [pytest.mark.slow, pytest.mark.spark]  # two Spark processes (plus their subprocesses): a few minutes


def _run(script: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", "--out", str(out / "results")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )


def _assert_ok(done: subprocess.CompletedProcess[str]) -> None:
    tail = f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"exit {done.returncode}\n{tail}"


def test_bench_throughput_quick(tmp_path: Path) -> None:
    done = _run("bench_throughput.py", tmp_path)
    _assert_ok(done)
    data = json.loads((tmp_path / "results" / "throughput.json").read_text())
    assert {"machine", "workload", "results", "scaling", "wall_s"} <= set(data)
    assert {"nproc", "memory_gb", "cpu_model", "python", "java", "pyspark", "date"} <= set(data["machine"])
    assert set(data["results"]) == {"noop", "delta"}
    for sink, generators in data["results"].items():
        assert {"fleetgen", "dbldatagen", "spark-sql", "cached-batch"} <= set(generators), sink
        fleetgen = generators["fleetgen"]
        assert {"rows", "rows_per_s", "seconds", "jvm_rss_peak_mb", "python_worker_rss_peak_mb"} <= set(fleetgen)
        assert fleetgen["rows"] > 0
    assert {"fleetgen-batch", "cached-batch-stream"} <= set(data["results"]["noop"])
    assert {"local[1]", "local[2]"} <= set(data["scaling"])
    results_md = (tmp_path / "RESULTS.md").read_text()
    assert "## Targets" in results_md and "## What was tried" in results_md


def test_bench_latency_quick(tmp_path: Path) -> None:
    done = _run("bench_latency.py", tmp_path)
    _assert_ok(done)
    data = json.loads((tmp_path / "results" / "latency.json").read_text())
    assert {"machine", "live", "memory", "wall_s"} <= set(data)
    for preset in ("base", "scaling"):
        live = data["live"][preset]
        assert {"median_s", "p95_s", "intervals", "events_per_interval", "trigger_s"} <= set(live)
        # The events writer's own split of a micro-batch, from its log: both appends inside the whole.
        assert 0 < live["ledger_median_s"] <= live["write_median_s"]
        assert 0 <= live["append_median_s"] <= live["write_median_s"]
    assert data["append_floor"]["append_s"] > 0 and data["append_floor"]["checkpoint_append_s"] > 0
    assert {"completed", "passed", "python_worker_rss_peak_mb", "jvm_heap_peak_mb"} <= set(data["memory"])
    assert "## Live latency" in (tmp_path / "RESULTS.md").read_text()
