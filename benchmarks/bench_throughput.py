"""Throughput of fleetgen side by side with the best Spark generators, on the same schema and rows.

One process, one warm SparkSession (local[2]). Each generator writes the same number of rows
of fleetgen's event schema into the noop sink and into Delta:

- fleetgen: the ``fleetgen`` stream with Trigger.AvailableNow and speedup=max; into Delta
  through the real Pipeline (events, batches, manifest; companies MERGEd first).
- dbldatagen: the same columns built with dbldatagen; a plain Delta append.
- spark-sql: the same columns from SQL expressions over spark.range; a plain Delta append.
- cached-batch: a Python data source re-yielding one pre-built Arrow batch (the transport
  ceiling of any Python data source); a plain Delta append.
- into noop only, to tell generation from streaming overhead: fleetgen read as a batch
  (``spark.read``) and the cached-batch source read as a stream (Trigger.AvailableNow).
- into noop only: fleetgen-shift, the fleetgen stream of the same fleet with ``event_model=shift``
  over a range long enough for about as many rows (drivers emit only on duty, 28% of the time).

A warm-up run of each comes first, then ``--runs`` measured runs, interleaved; the table shows
the median. Then local[1] versus local[2] for fleetgen into noop, one subprocess per master.
Writes results/throughput.json and regenerates RESULTS.md.

    .venv/bin/python benchmarks/bench_throughput.py [--rows 4000000] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import (
    DEFAULT_OUT,
    Peaks,
    ProcessSampler,
    cpu_seconds,
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
from rivals import CachedBatchDataSource, Workload, dbldatagen_events, sql_events

import fleetgen_spark
from fleetgen_spark.core.config import load_config
from fleetgen_spark.spark.pipeline import Pipeline
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.manifests import read_json

GENERATORS = (
    "fleetgen",
    "fleetgen-shift",
    "fleetgen-batch",
    "dbldatagen",
    "spark-sql",
    "cached-batch",
    "cached-batch-stream",
)
SINKS = ("noop", "delta")
# The stream-versus-batch variants only matter into noop; into Delta the write dominates.
NOOP_ONLY = ("fleetgen-shift", "fleetgen-batch", "cached-batch-stream")
PARTITIONS = 2  # = local[2]; fleetgen's default numPartitions is the CPU count, 2 here too
CACHED_BATCH_ROWS = 10_000  # about what fleetgen yields per block at this fleet size
# Under event_model shift a driver is on duty 28% of the time (4.75 shifts a week of 10 hours on
# average, README "Driver shifts"): a range that much longer gives about as many rows, so that
# the query's fixed cost weighs the same on both rows/s.
SHIFT_ON_DUTY = 4.75 * 10 / (7 * 24)


@dataclass
class Measured:
    """The runs of one generator into one sink."""

    rows: int = 0
    seconds: list[float] = field(default_factory=list)
    peaks: Peaks = field(default_factory=Peaks)
    extra: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        rates = [self.rows / s for s in self.seconds if s > 0]
        out: dict[str, Any] = {
            "rows": self.rows,
            "seconds": [round(s, 3) for s in self.seconds],
            "rows_per_s": round(median(rates)),
            "rows_per_s_runs": [round(r) for r in rates],
            **self.peaks.as_dict(),
        }
        for key, values in self.extra.items():
            out[key] = round(median(values), 3)
        if self.extra.get("micro_batch_s"):
            # The same runs' rate inside their micro-batches, without the query's start and stop.
            out["micro_batch_rows_per_s"] = round(median([self.rows / s for s in self.extra["micro_batch_s"] if s > 0]))
        if self.error:
            out["error"] = self.error
        return out


class Bench:
    """The generators, each a function (sink, workload, rows) -> (rows written, extra metrics)."""

    def __init__(self, spark: SparkSession, scratch: Path) -> None:
        self.spark = spark
        self.scratch = scratch
        self.sampler = ProcessSampler(jvm_pid(spark))
        self._n = 0

    def _fresh(self, name: str) -> Path:
        self._n += 1
        path = self.scratch / f"{name}-{self._n}"
        return path

    # -- fleetgen --------------------------------------------------------------------------

    def _stream_to_noop(self, source: str, options: dict[str, str]) -> tuple[int, dict[str, float]]:
        """Rows read, and the micro-batches' own time (triggerExecution): the run without query start-up."""
        checkpoint = self._fresh("ckpt")
        query = (
            self.spark.readStream.format(source)
            .options(**options)
            .load()
            .writeStream.format("noop")
            .trigger(availableNow=True)
            .option("checkpointLocation", str(checkpoint))
            .start()
        )
        query.awaitTermination()
        shutil.rmtree(checkpoint, ignore_errors=True)
        progress = query.recentProgress
        trigger_s = sum(float(p.durationMs.get("triggerExecution", 0)) for p in progress) / 1000
        return sum(int(p.numInputRows) for p in progress), {"micro_batch_s": trigger_s}

    def fleetgen(self, sink: str, w: Workload, rows: int) -> tuple[int, dict[str, float]]:
        if sink == "noop":
            return self._stream_to_noop("fleetgen", w.source_options(numPartitions=str(PARTITIONS)))
        data_dir = self._fresh("pipeline")
        config = load_config("scaling", **w.config_overrides())
        pipeline = Pipeline(
            self.spark,
            DataDir(data_dir),
            config,
            speedup="max",
            start=w.start,
            end=w.end,
            max_intervals_per_trigger=w.intervals + 1,
            num_partitions=PARTITIONS,
        )
        queries: dict[str, Any] = {}

        def keep(query: Any) -> None:
            queries[str(query.name)] = query

        began = time.perf_counter()
        pipeline.run_available_now(on_progress=keep)
        total = time.perf_counter() - began
        events_s = sum(
            float(p.durationMs.get("triggerExecution", 0)) / 1000
            for name, q in queries.items()
            if name.startswith("fleetgen_events")
            for p in q.recentProgress
        )
        manifest = read_json(DataDir(data_dir).batch_manifest)
        shutil.rmtree(data_dir, ignore_errors=True)
        extra = {"events_query_s": events_s} if events_s else {}
        extra["pipeline_s"] = total
        return int(manifest.get("total_events", 0)), extra

    def fleetgen_shift(self, sink: str, w: Workload, rows: int) -> tuple[int, dict[str, float]]:
        """The same fleet with drivers working shifts, over a range that gives about as many rows (noop only)."""
        longer = replace(w, intervals=round(w.intervals / SHIFT_ON_DUTY))
        options = longer.source_options(numPartitions=str(PARTITIONS), event_model="shift")
        return self._stream_to_noop("fleetgen", options)

    # -- the others: a DataFrame, then noop or a plain Delta append ------------------------

    def _write(self, df: Any, sink: str, rows: int) -> tuple[int, dict[str, float]]:
        if sink == "noop":
            df.write.format("noop").mode("overwrite").save()
            return rows, {}
        path = self._fresh("delta")
        df.write.format("delta").mode("append").save(str(path))
        shutil.rmtree(path, ignore_errors=True)
        return rows, {}

    def dbldatagen(self, sink: str, w: Workload, rows: int) -> tuple[int, dict[str, float]]:
        return self._write(dbldatagen_events(self.spark, w, rows, PARTITIONS), sink, rows)

    def spark_sql(self, sink: str, w: Workload, rows: int) -> tuple[int, dict[str, float]]:
        return self._write(sql_events(self.spark, w, rows, PARTITIONS), sink, rows)

    def fleetgen_batch(self, sink: str, w: Workload, rows: int) -> tuple[int, dict[str, float]]:
        options = w.source_options(numPartitions=str(PARTITIONS))
        for stream_only in ("speedup", "maxIntervalsPerTrigger"):
            options.pop(stream_only)
        df = self.spark.read.format("fleetgen").options(**options).load()
        return self._write(df, sink, rows)

    def _cached_options(self, rows: int) -> dict[str, str]:
        return {"rows": str(rows), "batchRows": str(CACHED_BATCH_ROWS), "numPartitions": str(PARTITIONS)}

    def cached_batch(self, sink: str, w: Workload, rows: int) -> tuple[int, dict[str, float]]:
        df = self.spark.read.format("fleetgen_cached").options(**self._cached_options(rows)).load()
        return self._write(df, sink, rows)

    def cached_batch_stream(self, sink: str, w: Workload, rows: int) -> tuple[int, dict[str, float]]:
        return self._stream_to_noop("fleetgen_cached", self._cached_options(rows))

    def runner(self, generator: str) -> Callable[[str, Workload, int], tuple[int, dict[str, float]]]:
        return {
            "fleetgen": self.fleetgen,
            "fleetgen-shift": self.fleetgen_shift,
            "fleetgen-batch": self.fleetgen_batch,
            "dbldatagen": self.dbldatagen,
            "spark-sql": self.spark_sql,
            "cached-batch": self.cached_batch,
            "cached-batch-stream": self.cached_batch_stream,
        }[generator]

    def measure(self, generator: str, sink: str, w: Workload, rows: int, into: Measured | None) -> int:
        """One run; with ``into`` it is recorded, without it is a warm-up."""
        reset_jvm_heap_peak(self.spark)
        with self.sampler.measure() as peaks:
            cpu = cpu_seconds(self.sampler.jvm) + time.process_time()
            began = time.perf_counter()
            written, extra = self.runner(generator)(sink, w, rows)
            seconds = time.perf_counter() - began
            cpu = cpu_seconds(self.sampler.jvm) + time.process_time() - cpu
        extra["cpu_us_per_row"] = cpu / max(written, 1) * 1e6
        heap = jvm_heap_peak_mb(self.spark)
        label = "warm-up" if into is None else "run"
        print(f"  {label:7s} {generator:12s} -> {sink:5s} {written:>10,} rows {seconds:7.2f} s", flush=True)
        if into is not None:
            into.rows = written
            into.seconds.append(seconds)
            got = peaks()
            got.jvm_heap_mb = heap
            into.peaks = into.peaks.merge(got)
            for key, value in extra.items():
                into.extra.setdefault(key, []).append(value)
        return written


def throughput(spark: SparkSession, rows: int, runs: int, generators: tuple[str, ...]) -> dict[str, Any]:
    w = Workload.for_rows(rows)
    results: dict[str, dict[str, Measured]] = {
        s: {g: Measured() for g in generators if s == "noop" or g not in NOOP_ONLY} for s in SINKS
    }
    with tempfile.TemporaryDirectory(prefix="fleetgen-bench-") as tmp:
        bench = Bench(spark, Path(tmp))
        # fleetgen's row count is Poisson; every other generator writes exactly as many rows.
        actual = bench.measure("fleetgen", "noop", w, rows, None)
        warm = Workload.for_rows(max(rows // 4, 10_000))
        for sink in SINKS:
            for generator in results[sink]:
                if generator == "fleetgen" and sink == "noop":
                    continue
                try:
                    bench.measure(generator, sink, warm if sink == "delta" else w, warm.expected_rows, None)
                except Exception as err:  # an unavailable rival (e.g. dbldatagen missing) must not sink the rest
                    results[sink][generator].error = error_line(err)
                    print(f"  {generator} -> {sink}: skipped ({results[sink][generator].error})", flush=True)
        for run in range(runs):
            print(f"run {run + 1}/{runs}", flush=True)
            for sink in SINKS:
                for generator in results[sink]:
                    if results[sink][generator].error is None:
                        bench.measure(generator, sink, w, actual, results[sink][generator])
    return {
        "workload": {
            "rows_asked": rows,
            "rows": actual,
            "companies": w.companies,
            "drivers_per_company": w.drivers,
            "event_rate_per_driver": w.rate,
            "intervals": w.intervals,
            "partitions": PARTITIONS,
            "cached_batch_rows": CACHED_BATCH_ROWS,
            "runs": runs,
        },
        "results": {sink: {g: m.as_dict() for g, m in by_gen.items()} for sink, by_gen in results.items()},
    }


# --- local[1] versus local[2] ------------------------------------------------------------


def scaling_worker(master: str, rows: int, runs: int) -> dict[str, Any]:
    """Runs in its own process (one SparkContext per process): fleetgen into noop on ``master``."""
    spark = fleetgen_spark.spark_session(master, spark_ui_enabled="false")
    spark.sparkContext.setLogLevel("ERROR")
    try:
        w = Workload.for_rows(rows)
        with tempfile.TemporaryDirectory(prefix="fleetgen-scaling-") as tmp:
            bench = Bench(spark, Path(tmp))
            bench.measure("fleetgen", "noop", w, rows, None)
            measured = Measured()
            for _ in range(runs):
                bench.measure("fleetgen", "noop", w, rows, measured)
        return {"master": master, **measured.as_dict()}
    finally:
        spark.stop()


def scaling(rows: int, runs: int, timeout: float) -> dict[str, Any]:
    out: dict[str, Any] = {"rows_asked": rows}
    for master in ("local[1]", "local[2]"):
        print(f"scaling: fleetgen -> noop on {master} (subprocess)", flush=True)
        result, error = run_worker(
            [str(Path(__file__)), "--scaling-worker", master, "--rows", str(rows), "--runs", str(runs)], timeout
        )
        if result is None:
            out[master] = {"error": error}
            print(f"  failed: {error}", flush=True)
            continue
        out[master] = result
        print(f"  {master}: {out[master]['rows_per_s']:,} rows/s", flush=True)
    one, two = out.get("local[1]", {}), out.get("local[2]", {})
    if one.get("rows_per_s") and two.get("rows_per_s"):
        out["speedup"] = round(two["rows_per_s"] / one["rows_per_s"], 2)
    if one.get("micro_batch_rows_per_s") and two.get("micro_batch_rows_per_s"):
        out["speedup_micro_batch"] = round(two["micro_batch_rows_per_s"] / one["micro_batch_rows_per_s"], 2)
    return out


# --- the script --------------------------------------------------------------------------


def _table(data: dict[str, Any]) -> str:
    lines = [f"{'generator':20s} {'sink':6s} {'rows/s':>12s} {'fleetgen ÷':>11s} {'CPU us/row':>10s} {'JVM MB':>8s}"]
    for sink, by_gen in data["results"].items():
        base = by_gen.get("fleetgen", {}).get("rows_per_s", 0)
        for generator, m in by_gen.items():
            if "error" in m:
                lines.append(f"{generator:20s} {sink:6s} {'n/a':>12s}   {m['error'][:60]}")
                continue
            ratio = base / m["rows_per_s"] if m["rows_per_s"] else 0.0
            lines.append(
                f"{generator:20s} {sink:6s} {m['rows_per_s']:>12,} {ratio:>10.2f}x "
                f"{m.get('cpu_us_per_row', 0):>10.2f} {m['jvm_rss_peak_mb']:>8.0f}"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4_000_000, help="rows per run (default 4,000,000)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs after the warm-up (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run: for the smoke test")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON files go")
    parser.add_argument("--results-md", type=Path, default=None, help="RESULTS.md to regenerate")
    parser.add_argument("--generators", default=",".join(GENERATORS), help="comma-separated subset")
    parser.add_argument("--scaling-rows", type=int, default=None, help="rows per scaling run (default --rows)")
    parser.add_argument("--no-scaling", action="store_true", help="skip local[1] versus local[2]")
    parser.add_argument("--scaling-worker", metavar="MASTER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.runs = 20_000, 1
        args.scaling_rows = args.scaling_rows or 20_000
    if args.scaling_rows is None:
        # As many rows as the main runs: the query's fixed start-up cost does not scale with cores.
        args.scaling_rows = args.rows
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.scaling_worker:
        print(json.dumps(scaling_worker(args.scaling_worker, args.rows, args.runs)), flush=True)
        return 0
    generators = tuple(g for g in args.generators.split(",") if g)
    unknown = sorted(set(generators) - set(GENERATORS))
    if unknown or "fleetgen" not in generators:
        print(f"--generators: unknown {unknown} or no fleetgen; choose from {', '.join(GENERATORS)}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    machine = machine_info()
    spark = fleetgen_spark.spark_session("local[2]", spark_ui_enabled="false")
    spark.sparkContext.setLogLevel("ERROR")
    spark.dataSource.register(CachedBatchDataSource)
    try:
        print(f"throughput: {args.rows:,} rows, {args.runs} run(s) after a warm-up", flush=True)
        data = throughput(spark, args.rows, args.runs, generators)
    finally:
        spark.stop()
    data["scaling"] = {"skipped": True} if args.no_scaling else scaling(args.scaling_rows, args.runs, timeout=900)
    data["machine"] = machine
    data["wall_s"] = round(time.perf_counter() - began, 1)
    write_json(args.out / "throughput.json", data)
    print(_table(data))
    if "speedup" in data["scaling"]:
        print(
            f"local[2] / local[1]: {data['scaling']['speedup']:.2f}x whole query, "
            f"{data['scaling'].get('speedup_micro_batch', 0):.2f}x inside the micro-batch"
        )
    md = render_results(args.out, args.results_md or (args.out.parent / "RESULTS.md"))
    print(f"wrote {args.out / 'throughput.json'} and {md} in {data['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    # The rivals module is not importable in the Python workers: ship it by value.
    import rivals
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(rivals)
    sys.exit(main())
