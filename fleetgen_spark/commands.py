"""What each ``fleetgen`` command does once its flags are checked: the Spark jobs (``backfill``,
``onboard``, ``events``, ``report``, ``grade``), ``run`` and the plain ones. The HTTP clients of a
running service (``status``, ``pause``, ...) are in :mod:`fleetgen_spark.client`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from fleetgen_spark.core.clock import align_down, epoch_seconds, from_epoch, iso, parse_instant
from fleetgen_spark.core.config import Config, load_config
from fleetgen_spark.core.exceptions import OptionError
from fleetgen_spark.progress import Progress
from fleetgen_spark.spark.failures import first_line
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.dataset import check_start
from fleetgen_spark.storage.lock import hold, log_takeover
from fleetgen_spark.storage.logs import configure_logging

__all__ = [
    "cmd_backfill",
    "cmd_events",
    "cmd_exercises",
    "cmd_grade",
    "cmd_onboard",
    "cmd_report",
    "cmd_run",
    "cmd_validate_config",
]


def _data_dir(args: argparse.Namespace) -> DataDir:
    """The command's data directory, its storage configured by the command's ``--conf`` settings (and,
    under spark-submit, by spark-submit's own: a user configures the endpoint and credentials once)."""
    return DataDir(args.data_dir, {**_submitted_hadoop_conf(), **getattr(args, "spark_conf", {})})


def _submitted_hadoop_conf() -> dict[str, str]:
    """The ``spark.hadoop.*`` settings spark-submit was given (``--conf``, ``--properties-file``), when it
    started this process: its JVM is up already and holds them as system properties; else none."""
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):
        return {}
    from pyspark.core.context import SparkContext

    SparkContext._ensure_initialized()  # joins spark-submit's gateway; starts no JVM
    jvm = SparkContext._jvm
    assert jvm is not None
    pairs = jvm.org.apache.spark.SparkConf(True).getAll()
    return {str(p._1()): str(p._2()) for p in pairs if str(p._1()).startswith("spark.hadoop.")}


def _config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    return load_config(args.config, **overrides)


@contextmanager
def _pipeline(args: argparse.Namespace, config: Config, **kwargs: Any) -> Iterator[Any]:
    """A Pipeline on a fresh session; on the way out the progress listener is removed before the
    session stops, or the JVM would call a Python listener that is gone (two stack traces)."""
    from pyspark.sql import SparkSession

    from fleetgen_spark.spark.pipeline import Pipeline, ProgressListener
    from fleetgen_spark.spark.session import spark_session

    layout = _data_dir(args)
    took_over = hold(layout)  # refuse at once, before Spark starts, when another process writes this directory
    # Per-batch records go to the JSON logs; the terminal gets them with --verbose only.
    configure_logging(layout, stderr_level="INFO" if args.verbose else "WARNING")
    log_takeover(took_over)
    owned = SparkSession.getActiveSession() is None  # a caller's session (a test, a notebook) stays up
    if owned:
        where = args.remote or os.environ.get("SPARK_REMOTE") or args.master or "local[*]"
        _say(args, f"starting Spark ({where}) ...")
    spark = spark_session(
        args.master, app_name=f"fleetgen-{args.command}", remote=args.remote, storage=layout.uri, **args.spark_conf
    )
    listener = ProgressListener(layout)
    spark.streams.addListener(listener)
    try:
        yield Pipeline(spark, layout, config, **kwargs)
    finally:
        spark.streams.removeListener(listener)
        if owned:
            spark.stop()


def _say(args: argparse.Namespace, text: str) -> None:
    """A line on stderr about what a command is doing while it has nothing else to show."""
    print(f"fleetgen {args.command}: {text}", file=sys.stderr, flush=True)


def _just_closed(config: Config) -> datetime:
    """A new data directory for a ``--now`` job starts one interval back, so one interval has closed."""
    now = align_down(from_epoch(time.time()), config.interval_seconds)
    return from_epoch(epoch_seconds(now) - config.interval_seconds)


def cmd_run(args: argparse.Namespace) -> int:
    from fleetgen_spark.service.process import serve  # FastAPI and uvicorn: only for `fleetgen run`

    overrides: dict[str, Any] = {"seed": args.seed} if args.seed is not None else {}
    config = load_config(args.config, **overrides)
    return serve(
        config,
        args.data_dir,
        master=args.master,
        remote=args.remote,
        speedup=args.speedup,
        host=args.host,
        port=args.port,
        conf=getattr(args, "spark_conf", {}),
    )


def cmd_validate_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    print(yaml.safe_dump(config.to_yaml_dict(), sort_keys=False).rstrip())
    return 0


def cmd_onboard(args: argparse.Namespace) -> int:
    config = _config(args)
    with _pipeline(args, config, speedup=args.speedup or "1", start=_just_closed(config)) as pipeline:
        pipeline.start_companies(available_now=True).awaitTermination()
        count = pipeline.spark.read.format("delta").load(pipeline.layout.table("companies")).count()
    print(f"companies: {count} in {pipeline.layout.table('companies')}")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    config = _config(args)
    kwargs = {"speedup": args.speedup or "1", "start": _just_closed(config), "max_intervals_per_trigger": 96}
    with _pipeline(args, config, **kwargs) as pipeline:
        pipeline.run_available_now()
    manifest = pipeline.layout.read_manifest()
    if not manifest.batch_count:
        print(
            f"no interval has closed yet in {pipeline.layout.uri} (speedup {args.speedup or '1'}); "
            "run again later, or use `fleetgen run` to generate as intervals close"
        )
        return 0
    print(json.dumps(manifest.to_json(), indent=2))
    return 0


def _written(data_dir: DataDir) -> tuple[int, int]:
    """(intervals, events) that the data directory's batch manifest records now."""
    manifest = data_dir.read_manifest()
    return manifest.batch_count, manifest.total_events


def _backfill_range(args: argparse.Namespace, config: Config) -> tuple[datetime, datetime]:
    start = align_down(parse_instant(args.start, "--start"), config.interval_seconds)
    end = align_down(parse_instant(args.end, "--end"), config.interval_seconds)
    if end <= start:
        raise OptionError(f"--end {args.end!r} must be after --start {args.start!r} by at least one interval")
    return start, end


def cmd_backfill(args: argparse.Namespace) -> int:
    config = _config(args)
    start, end = _backfill_range(args, config)
    kwargs = {"speedup": "max", "start": start, "end": end, "max_intervals_per_trigger": args.max_intervals_per_trigger}
    began = time.monotonic()
    with _pipeline(args, config, **kwargs) as pipeline:
        check_start(pipeline.layout, pipeline.dataset, start)
        started = time.monotonic()
        held = pipeline.written_until()
        if held is not None and held >= end:
            manifest = pipeline.layout.read_manifest()
            print(
                f"backfill: nothing to generate: {pipeline.layout} already holds every interval up to "
                f"{iso(held)} ({manifest.batch_count} intervals, {manifest.total_events} events); "
                "a config change applies to intervals not generated yet: give a later --end"
            )
            return 0
        first = epoch_seconds(pipeline.dataset.start)
        total = (epoch_seconds(end) - first) // config.interval_seconds
        progress = Progress(total, lambda: _written(pipeline.layout))
        try:
            pipeline.run_available_now(progress.update, say=lambda text: _say(args, text))
        finally:
            progress.close()
    manifest = pipeline.layout.read_manifest()
    print(
        f"backfill done: {manifest.batch_count} intervals, {manifest.total_events} events, "
        f"last batch {manifest.last_batch_id}, {time.monotonic() - started:.1f} s "
        f"(+{started - began:.1f} s starting Spark and opening the tables)"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fleetgen_spark.report.data import asked, check_data_dir, read_inputs
    from fleetgen_spark.report.plot import write_report

    layout = _data_dir(args)
    config = load_config(args.config).to_yaml_dict() if args.config else None
    check_data_dir(layout, have_config=config is not None)  # before Spark starts: a wrong directory costs no JVM
    asked(layout, config)
    from pyspark.sql import SparkSession

    from fleetgen_spark.spark.session import spark_session

    owned = SparkSession.getActiveSession() is None
    spark = spark_session(
        args.master, app_name="fleetgen-report", remote=args.remote, storage=layout.uri, **args.spark_conf
    )
    try:
        inputs = read_inputs(spark, layout, config)
    finally:
        if owned:
            spark.stop()
    # --out is always local; a remote data directory's report goes to ./report unless told otherwise.
    out = Path(args.out) if args.out else layout.local_path("report") if layout.is_local else Path("report")
    try:
        result = write_report(inputs, out)
    except OSError as err:
        raise OptionError(f"--out {out}: cannot write the report ({err.strerror or err})") from err
    passed = sum(c.result == "PASS" for c in result.checks)
    print(f"wrote {result.png} ({result.panels} panels) and {result.markdown}: {passed} passed, {result.failed} failed")
    return 0


def cmd_exercises(args: argparse.Namespace) -> int:
    from fleetgen_spark.grading.exercises import EXERCISES

    width = max(len(name) for name in EXERCISES)
    for name, (exercise, _) in EXERCISES.items():
        print(f"{name:<{width}}  --config {exercise.preset:<7} {exercise.task}")
    return 0


# The options of one exercise each, and that exercise.
_GRADE_OPTIONS = {"--as-of": "scd2", "--quarantine-table": "quarantine", "--watermark": "late-windows"}


def cmd_grade(args: argparse.Namespace) -> int:
    from fleetgen_spark.grading.answers import generated
    from fleetgen_spark.grading.exercises import grade

    for flag, owner in _GRADE_OPTIONS.items():
        if getattr(args, flag.removeprefix("--").replace("-", "_")) is not None and args.exercise != owner:
            args.subparser.error(f"{flag} is an option of {owner}, not of {args.exercise}")
    options: dict[str, Any] = {}
    if args.watermark is not None:
        options["watermark"] = _watermark(args.watermark)
    if args.as_of is not None:
        options["as_of"] = parse_instant(args.as_of, "--as-of")
    layout = _data_dir(args)
    gen = generated(layout)  # before Spark starts: a wrong directory costs no JVM
    from pyspark.sql import SparkSession

    from fleetgen_spark.spark.session import spark_session

    owned = SparkSession.getActiveSession() is None
    spark = spark_session(
        args.master, app_name="fleetgen-grade", remote=args.remote, storage=layout.uri, **args.spark_conf
    )
    try:
        found = _learner_table(spark, args.table, "--table")
        if args.quarantine_table is not None:
            options["quarantine"] = _learner_table(spark, args.quarantine_table, "--quarantine-table")
    finally:
        if owned:
            spark.stop()
    verdict = grade(args.exercise, gen, found, options)
    print(verdict.to_json() if args.json else verdict.text())
    return 0 if verdict.passed else 1


def _watermark(value: str) -> timedelta:
    from fleetgen_spark.core.config import parse_duration

    wrong = OptionError(f"--watermark {value!r}: must be an ISO-8601 duration from PT0S to P1D, e.g. PT10M")
    try:
        delay = parse_duration(value, "--watermark")
    except ValueError as err:
        raise wrong from err
    if not timedelta(0) <= delay <= timedelta(days=1):
        raise wrong
    return delay


def _learner_table(spark: Any, table: str, flag: str) -> Any:
    """A Delta path (local or a URI) or a table name, read whole: the tables of exercises are small."""
    from pyspark.errors import AnalysisException

    from fleetgen_spark.grading.answers import table_rows
    from fleetgen_spark.grading.exercises import GradeInput

    is_path = any(c in table for c in "/\\:") or table.startswith(".") or Path(table).exists()
    try:
        df = spark.read.format("delta").load(table) if is_path else spark.table(table)
        arrow = df.toArrow()
    except AnalysisException as err:
        what = "a Delta table path" if is_path else "a table name"
        raise OptionError(f"{flag} {table}: cannot read it as {what}: {first_line(err)}") from err
    return GradeInput(table, tuple(arrow.column_names), table_rows(arrow))
