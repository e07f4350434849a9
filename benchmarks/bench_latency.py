"""Live latency of one interval per micro-batch, and the memory a 10-million-event interval needs.

- Live latency: the ``base`` and ``scaling`` presets (and ``base`` with company churn on)
  through the real Pipeline into Delta,
  speedup=max with maxIntervalsPerTrigger=1, so every micro-batch is one interval, as when
  live. The trigger durations (durationMs.triggerExecution) of the events query, the first
  one skipped, give the median and p95; the writer's own log records split each micro-batch into
  its driver_events append and its batches append.
- One Delta commit alone: 21 one-row appends to a fresh table in the same session, the median of
  the plain ones and of the two that write Delta's checkpoint (versions 10 and 20): the floor of a
  micro-batch that commits twice.
- Memory: one interval of 10,000,000 events (100,000 companies x 20 drivers x 5 events) into
  the noop sink, in its own process with ``spark.driver.memory=2g``; the peak RSS of the
  Python workers must stay under 512 MB and the query must complete.

Writes results/latency.json and regenerates RESULTS.md.

    .venv/bin/python benchmarks/bench_latency.py [--intervals 12] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from harness import (
    DEFAULT_OUT,
    ProcessSampler,
    error_line,
    jvm_heap_peak_mb,
    jvm_pid,
    machine_info,
    median,
    reset_jvm_heap_peak,
    run_worker,
    write_json,
)
from pyspark.sql import SparkSession
from report import render_results

import fleetgen_spark
from fleetgen_spark.core.config import load_config
from fleetgen_spark.spark.pipeline import Pipeline
from fleetgen_spark.spark.tables import BATCHES_SCHEMA
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.logs import configure_logging, read_logs

START = datetime(2025, 11, 8, 0, 0, tzinfo=timezone.utc)
PRESETS = ("base", "scaling")
# Rows of the live table: name -> (preset, config overrides). base+churn: company churn on (issue 15).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("base", {}),
    "scaling": ("scaling", {}),
    "base+churn": ("base", {"company_churn_rate": 0.05}),
}
MEMORY_FLEET = {"number_of_companies": 100_000, "drivers_per_company": 20, "event_rate_per_driver": 5.0}
MEMORY_LIMIT_MB = 512
DRIVER_MEMORY = "2g"


def _percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: a value that was measured, never an interpolation."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def live_latency(
    spark: SparkSession, preset: str, intervals: int, overrides: dict[str, Any], name: str | None = None
) -> dict[str, Any]:
    """One micro-batch per interval through the Pipeline; the first (empty, cold) one is skipped.

    The companies query runs first, to its end, and then the events query alone: each events
    micro-batch is timed as it runs live between two onboarding ticks. (A backfill runs the two side
    by side; timed that way, with speedup=max, the companies' MERGEs of every tick would land on the
    events micro-batches far more often than live, where a tick comes every few intervals.)
    """
    config = load_config(preset, **overrides)
    end = START + timedelta(seconds=config.interval_seconds * (intervals + 1))
    with tempfile.TemporaryDirectory(prefix=f"fleetgen-latency-{preset}-") as tmp:
        configure_logging(DataDir(Path(tmp)), stderr=False)  # the writer's records, read back below
        pipeline = Pipeline(
            spark, DataDir(Path(tmp)), config, speedup="max", start=START, end=end, max_intervals_per_trigger=1
        )
        began = time.perf_counter()
        pipeline.start_companies(available_now=True).awaitTermination()
        query = pipeline.start_events(available_now=True)
        query.awaitTermination()
        wall = time.perf_counter() - began
        # The events writer's own split of each micro-batch (oldest first, the first one skipped).
        done = [
            r["metadata"] for r in read_logs(pipeline.layout, limit=100_000)[::-1] if r["message"] == "micro-batch done"
        ][1:]
        configure_logging(None, stderr=False)  # nothing more into a directory about to go
    measured = query.recentProgress[1:]
    durations = [float(p.durationMs.get("triggerExecution", 0)) / 1000 for p in measured]
    events = [int(p.numInputRows) for p in measured]
    return {
        "preset": name or preset,
        "intervals": len(durations),
        "events_per_interval": sum(events) / len(events) if events else 0.0,
        "median_s": round(median(durations), 3),
        "p95_s": round(_percentile(durations, 0.95), 3),
        "max_s": round(max(durations, default=0.0), 3),
        "trigger_s": [round(d, 3) for d in durations],
        "pipeline_wall_s": round(wall, 1),
        # Medians over the same micro-batches: the writer's whole foreachBatch, its driver_events
        # append (with the generation and validation it pulls) and its batches append.
        "write_median_s": _median_ms(done, "duration_ms"),
        "append_median_s": _median_ms(done, "append_ms"),
        "ledger_median_s": _median_ms(done, "ledger_ms"),
    }


def _median_ms(records: list[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) / 1000 for r in records if key in r]
    return round(median(values), 3) if values else None


def append_floor(spark: SparkSession, appends: int = 21) -> dict[str, Any]:
    """What one Delta commit costs alone: one-row appends of a batches row to a fresh table, tagged like
    the writer's. Delta writes a checkpoint after every tenth commit (versions 10 and 20 here)."""
    row = (
        "20251108T000000Z", START, START + timedelta(minutes=15), 1, 1, START, 1, 1, 0, 0, 0,
    )  # fmt: skip
    seconds = []
    with tempfile.TemporaryDirectory(prefix="fleetgen-append-") as table:
        for version in range(appends):
            df = spark.createDataFrame([row], BATCHES_SCHEMA)
            began = time.perf_counter()
            df.write.format("delta").mode("append").option("userMetadata", f"probe/{version}").save(table)
            seconds.append(time.perf_counter() - began)
    plain = [t for v, t in enumerate(seconds) if v >= 3 and v % 10]
    checkpoint = [t for v, t in enumerate(seconds) if v and not v % 10]
    return {
        "appends": appends,
        "append_s": round(median(plain), 3),
        "checkpoint_append_s": round(median(checkpoint), 3) if checkpoint else None,
    }


def memory_worker(quick: bool) -> dict[str, Any]:
    """Runs in its own process (the driver memory is fixed when the JVM starts)."""
    spark = fleetgen_spark.spark_session(
        "local[2]", app_name="fleetgen-memory", spark_driver_memory=DRIVER_MEMORY, spark_ui_enabled="false"
    )
    spark.sparkContext.setLogLevel("ERROR")
    fleet = dict(MEMORY_FLEET)
    if quick:
        fleet["number_of_companies"] = 1_000
    interval = timedelta(minutes=15)
    options = {
        "config": "scaling",
        "seed": "300",
        **{k: str(v) for k, v in fleet.items()},
        "company_onboarding_interval": "PT1H",
        # The first interval has nobody eligible yet (companies are created at the start).
        "start": START.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": (START + 2 * interval).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "speedup": "max",
        "maxIntervalsPerTrigger": "1",
    }
    heap_max_mb = int(spark._jvm.java.lang.Runtime.getRuntime().maxMemory()) / 1024 / 1024
    sampler = ProcessSampler(jvm_pid(spark))
    out: dict[str, Any] = {
        "companies": fleet["number_of_companies"],
        "drivers_per_company": fleet["drivers_per_company"],
        "event_rate_per_driver": fleet["event_rate_per_driver"],
        "driver_memory": DRIVER_MEMORY,
        "jvm_heap_max_mb": round(heap_max_mb),
        "limit_mb": MEMORY_LIMIT_MB,
    }
    reset_jvm_heap_peak(spark)
    try:
        with tempfile.TemporaryDirectory(prefix="fleetgen-memory-") as tmp, sampler.measure() as peaks:
            began = time.perf_counter()
            query = (
                spark.readStream.format("fleetgen")
                .options(**options)
                .load()
                .writeStream.format("noop")
                .trigger(availableNow=True)
                .option("checkpointLocation", str(Path(tmp) / "checkpoint"))
                .start()
            )
            query.awaitTermination()
            seconds = time.perf_counter() - began
        progress = query.recentProgress
        out.update(
            completed=True,
            seconds=round(seconds, 1),
            events=sum(int(p.numInputRows) for p in progress),
            interval_trigger_s=round(max(float(p.durationMs.get("triggerExecution", 0)) for p in progress) / 1000, 1),
        )
    except Exception as err:  # an OutOfMemoryError surfaces as a Py4J/streaming error: record it, fail the check
        out.update(completed=False, error=error_line(err, 300))
    got = peaks()
    out.update(got.as_dict())
    out["jvm_heap_peak_mb"] = round(jvm_heap_peak_mb(spark), 1)
    out["passed"] = bool(out.get("completed")) and got.python_worker_rss_mb < MEMORY_LIMIT_MB
    spark.stop()
    return out


def memory_check(quick: bool, timeout: float) -> dict[str, Any]:
    print(f"memory: one interval of {'100,000 (quick)' if quick else '10,000,000'} events into noop (subprocess)")
    result, error = run_worker([str(Path(__file__)), "--memory-worker", *(["--quick"] if quick else [])], timeout)
    if result is None:
        return {"completed": False, "passed": False, "error": error, "driver_memory": DRIVER_MEMORY}
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, default=12, help="measured intervals per preset (default 12)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: for the smoke test")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON files go")
    parser.add_argument("--results-md", type=Path, default=None, help="RESULTS.md to regenerate")
    parser.add_argument("--no-memory", action="store_true", help="skip the 10M-event memory check")
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.intervals = 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(args.quick)), flush=True)
        return 0
    began = time.perf_counter()
    machine = machine_info()
    # The quick run shrinks the fleets; the real one runs the presets as they are.
    overrides: dict[str, dict[str, Any]] = {p: {} for p in PRESETS}
    if args.quick:
        overrides = {p: {"number_of_companies": 5, "drivers_per_company": 5} for p in PRESETS}
    spark = fleetgen_spark.spark_session("local[2]", spark_ui_enabled="false")
    spark.sparkContext.setLogLevel("ERROR")
    live: dict[str, Any] = {}
    floor: dict[str, Any] = {}
    try:
        print("live latency: warm-up", flush=True)
        live_latency(spark, "base", 2, overrides["base"])
        for preset, (base, extra) in VARIANTS.items():
            try:
                live[preset] = live_latency(spark, base, args.intervals, {**overrides[base], **extra}, preset)
            except Exception as err:  # record the failure, measure the rest
                live[preset] = {"error": error_line(err)}
            m = live[preset]
            if "error" in m:
                print(f"  {preset}: failed: {m['error']}", flush=True)
            else:
                print(
                    f"  {preset:8s} {m['events_per_interval']:>9,.0f} events/interval  "
                    f"median {m['median_s']:.2f} s  p95 {m['p95_s']:.2f} s  ({m['intervals']} intervals)",
                    flush=True,
                )
        floor = append_floor(spark)
        print(
            f"  one Delta commit alone: {floor['append_s']:.2f} s, "
            f"{floor['checkpoint_append_s']:.2f} s with a checkpoint",
            flush=True,
        )
    finally:
        spark.stop()
    memory = {"skipped": True} if args.no_memory else memory_check(args.quick, timeout=900)
    if not args.no_memory:
        verdict = "pass" if memory.get("passed") else "FAIL"
        print(
            f"  memory: {verdict}: completed={memory.get('completed')}, Python worker peak "
            f"{memory.get('python_worker_rss_peak_mb', 0):.0f} MB (limit {MEMORY_LIMIT_MB}), driver heap peak "
            f"{memory.get('jvm_heap_peak_mb', 0):.0f} of {memory.get('jvm_heap_max_mb', 0):.0f} MB",
            flush=True,
        )
    data = {
        "machine": machine,
        "live": live,
        "append_floor": floor,
        "memory": {} if memory.get("skipped") else memory,
        "wall_s": round(time.perf_counter() - began, 1),
    }
    write_json(args.out / "latency.json", data)
    md = render_results(args.out, args.results_md or (args.out.parent / "RESULTS.md"))
    print(f"wrote {args.out / 'latency.json'} and {md} in {data['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
