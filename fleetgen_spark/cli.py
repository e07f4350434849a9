"""The ``fleetgen`` command line: jobs that run Spark, and a client of the control service.

One convention for every command: output for people on stdout, progress and Spark's log
(errors only, unless ``--verbose``) on stderr, and any refusal as one line
``fleetgen CMD: error: ...``. Exit codes: 0 done, 1 input or state refused, 2 bad usage
(unknown flag, missing argument), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import yaml

from fleetgen_spark import __version__
from fleetgen_spark.client import cmd_clean, cmd_logs, cmd_pause, cmd_resume, cmd_status
from fleetgen_spark.core.clock import (
    MAX_SPEEDUP,
    align_down,
    epoch_seconds,
    from_epoch,
    iso,
    parse_instant,
    parse_speedup,
)
from fleetgen_spark.core.config import Config, load_config
from fleetgen_spark.core.exceptions import FleetGenError, OptionError
from fleetgen_spark.progress import Progress
from fleetgen_spark.service.rest import DEFAULT_HOST, DEFAULT_PORT
from fleetgen_spark.spark.failures import first_line
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.dataset import check_start
from fleetgen_spark.storage.lock import hold, log_takeover
from fleetgen_spark.storage.logs import configure_logging, get_logger, log_event

__all__ = ["COMMANDS", "ENVIRONMENT", "build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]
_log = get_logger("cli")

MAX_INTERVALS_PER_TRIGGER = 1_000_000  # the source option's own bound
MAX_LOG_RECORDS = 1000  # GET /logs answers at most this many
# The environment variables a command reads, each checked like the flag it stands for.
ENVIRONMENT = {
    "FLEETGEN_DATA_DIR": "--data-dir",
    "FLEETGEN_HOST": "--host",
    "FLEETGEN_PORT": "--port",
    "FLEETGEN_VERBOSE": "--verbose",
    "FLEETGEN_SPARK_UI": "--spark-ui",
    "FLEETGEN_API_TOKEN": "the service's bearer token",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``fleetgen CMD: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# -- values: every flag and its environment variable are checked by the same function ----------


def parse_port(value: str, name: str = "--port") -> int:
    """A TCP port, 1..65535."""
    try:
        port = int(str(value).strip())
    except ValueError as err:
        raise OptionError(f"{name} = {value!r}: must be a port number from 1 to 65535") from err
    if not 1 <= port <= 65535:
        raise OptionError(f"{name} = {value!r}: must be a port number from 1 to 65535")
    return port


def parse_host(value: str, name: str = "--host") -> str:
    """A host name or IP address to listen on or connect to (no scheme, port or spaces)."""
    text = str(value).strip()
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:_[]")
    if not text or len(text) > 253 or not set(text) <= allowed or "://" in text:
        raise OptionError(f"{name} = {value!r}: must be a host name or IP address such as 127.0.0.1 or localhost")
    return text.strip("[]")


def parse_switch(value: str, name: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise OptionError(f"{name} = {value!r}: must be on or off (1/0, true/false)")


def parse_count(value: str | int, name: str, upper: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError as err:
        raise OptionError(f"{name} = {value!r}: must be an integer from 1 to {upper:,}") from err
    if not 1 <= number <= upper:
        raise OptionError(f"{name} = {value!r}: must be an integer from 1 to {upper:,}")
    return number


def _check_token(value: str) -> None:
    if len(value) > 1024 or not all(33 <= ord(c) <= 126 for c in value):
        raise OptionError(
            "FLEETGEN_API_TOKEN: must be at most 1024 visible ASCII characters without spaces "
            "(it travels in an HTTP header)"
        )


def _setting(args: argparse.Namespace, dest: str, env: str, default: str) -> tuple[str, str]:
    """The flag's value when given, else the environment variable's, else the default; with the
    name to blame when the value is refused."""
    given = getattr(args, dest, None)
    if given is not None:
        return str(given), f"--{dest.replace('_', '-')}"
    return os.environ.get(env) or default, env


def parse_conf(pairs: Sequence[str] | None) -> dict[str, str]:
    """``--conf KEY=VALUE`` flags (repeatable, as spark-submit's) as a dict; the last of a key wins."""
    conf: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or key != key.strip():
            raise OptionError(
                f"--conf {pair!r}: expected KEY=VALUE, e.g. --conf spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:9000"
            )
        conf[key] = value
    return conf


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


def _resolve(args: argparse.Namespace) -> None:
    """Check every flag and environment variable this command reads, before any work."""
    args.spark_conf = parse_conf(getattr(args, "conf", None))
    if hasattr(args, "host"):
        if hasattr(args, "port"):  # the service and its clients, not the jobs
            args.port = parse_port(*_setting(args, "port", "FLEETGEN_PORT", str(DEFAULT_PORT)))
            _check_token(os.environ.get("FLEETGEN_API_TOKEN", ""))
        args.host = parse_host(*_setting(args, "host", "FLEETGEN_HOST", DEFAULT_HOST))
        args.data_dir, name = _setting(args, "data_dir", "FLEETGEN_DATA_DIR", "data")
        if not args.data_dir.strip():
            raise OptionError(f"{name} is empty: give a directory, e.g. --data-dir data")
    if hasattr(args, "spark_ui"):
        args.spark_ui = parse_switch(*_setting(args, "spark_ui", "FLEETGEN_SPARK_UI", "on"))
    if getattr(args, "speedup", None) is not None:
        speed = parse_speedup(args.speedup)
        if speed is None and args.command in ("run", "onboard", "events"):
            raise OptionError(
                f"--speedup max has no end for `fleetgen {args.command}`: it runs up to the clock's now; "
                "use 1, a number up to "
                f"{MAX_SPEEDUP:,}, or `fleetgen backfill --start ... --end ...` to generate a range at full speed"
            )
    if getattr(args, "max_intervals_per_trigger", None) is not None:
        args.max_intervals_per_trigger = parse_count(
            args.max_intervals_per_trigger, "--max-intervals-per-trigger", MAX_INTERVALS_PER_TRIGGER
        )
    if getattr(args, "limit", None) is not None:
        args.limit = parse_count(args.limit, "--limit", MAX_LOG_RECORDS)


def _spark_environment(args: argparse.Namespace) -> None:
    """Tell the session, before the JVM starts, how loud to be and where the Spark UI listens.

    Spark has no setting for the UI's address: it binds to ``SPARK_LOCAL_IP`` (every
    interface when unset), which also becomes the driver's address. That is right for local
    mode and a cluster on loopback; a driver of a remote cluster must stay reachable, so there
    the UI is switched off unless ``--host`` is a reachable address.
    """
    os.environ["FLEETGEN_VERBOSE"] = "1" if args.verbose else "0"
    if not hasattr(args, "master"):
        return
    master = args.master or ""
    local = not master or master.startswith("local") or any(h in master for h in ("127.0.0.1", "localhost", "[::1]"))
    host = getattr(args, "host", DEFAULT_HOST)  # `report` serves nothing: its UI stays on loopback
    loopback = host in ("127.0.0.1", "localhost", "::1")
    ui = getattr(args, "spark_ui", True) and (local or not loopback)
    os.environ["FLEETGEN_SPARK_UI"] = "on" if ui else "off"
    if ui and host not in ("0.0.0.0", "::"):
        os.environ.setdefault("SPARK_LOCAL_IP", host)


# -- Spark commands -----------------------------------------------------------------------------


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


def _add_grade_arguments(grade: argparse.ArgumentParser) -> None:
    from fleetgen_spark.grading.exercises import EXERCISES

    grade.add_argument("exercise", choices=list(EXERCISES), help="see `fleetgen exercises`")
    grade.add_argument("--table", required=True, help="the learner's table: a Delta path or URI, or a table name")
    grade.add_argument("--data-dir", default=os.environ.get("FLEETGEN_DATA_DIR", "data"), help="default: ./data")
    grade.add_argument("--quarantine-table", default=None, help="quarantine: the rejected records, graded too")
    grade.add_argument("--watermark", default=None, help="late-windows: the watermark delay asked (default PT10M)")
    grade.add_argument("--as-of", default=None, help="scd2: the history as known at this ISO-8601 UTC instant")
    grade.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    grade.add_argument("--master", default=None, help="Spark master (default local[*])")
    grade.add_argument("--remote", default=None, help="Spark Connect server, e.g. sc://127.0.0.1:15002")
    _add_conf(grade)


def _add_report_arguments(report: argparse.ArgumentParser) -> None:
    report.add_argument("--data-dir", default=os.environ.get("FLEETGEN_DATA_DIR", "data"), help="default: ./data")
    report.add_argument("--out", default=None, help="where report.png and report.md go (default: DATA_DIR/report)")
    report.add_argument(
        "--config", default=None, help="compare with this config instead of the one in manifests/dataset.md"
    )
    report.add_argument("--master", default=None, help="Spark master (default local[*])")
    report.add_argument("--remote", default=None, help="Spark Connect server, e.g. sc://127.0.0.1:15002")
    _add_conf(report)


# -- the command table ----------------------------------------------------------------------------

SPARK, SERVICE, CLIENT, PLAIN = "spark", "service", "client", "plain"
# name: (help, handler, kind). Spark commands and `run` start a Spark session; client commands
# only talk to a running service over HTTP.
COMMANDS: dict[str, tuple[str, Handler, str]] = {
    "run": ("the service: both streaming queries and the REST API, until SIGTERM or Ctrl-C", cmd_run, SERVICE),
    "backfill": ("generate a past range [--start, --end) into Delta and exit", cmd_backfill, SPARK),
    "onboard": ("MERGE the onboarding ticks that are due into delta/companies", cmd_onboard, SPARK),
    "events": ("generate the intervals that have closed into Delta and exit", cmd_events, SPARK),
    "validate-config": ("check a config file and print it parsed", cmd_validate_config, PLAIN),
    "status": ("show the state of a running service (GET /health)", cmd_status, CLIENT),
    "pause": ("stop generating after the current batch (POST /pause)", cmd_pause, CLIENT),
    "resume": ("generate again, catching up what was missed (POST /resume)", cmd_resume, CLIENT),
    "clean": ("remove tables, checkpoints and manifests of a paused service (POST /clean)", cmd_clean, CLIENT),
    "logs": ("show the service's log records, oldest first (GET /logs)", cmd_logs, CLIENT),
    "report": ("plot and check what a data directory holds against what was asked", cmd_report, PLAIN),
    "grade": ("grade a learner's table for an exercise against the data directory's answer key", cmd_grade, PLAIN),
    "exercises": ("list the exercises `fleetgen grade` knows, with the preset that suits each", cmd_exercises, PLAIN),
}


def _add_conf(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--conf",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="a Spark setting, repeatable (e.g. spark.hadoop.fs.s3a.endpoint=...); the data directory's "
        "own file access uses its storage settings too",
    )


def _shared(parser: argparse.ArgumentParser, kind: str) -> None:
    """Flags every command but validate-config takes; defaults come from the environment (checked later)."""
    parser.add_argument("--data-dir", default=None, help="data directory (default: $FLEETGEN_DATA_DIR or ./data)")
    if kind == SPARK:  # a job serves nothing: its --host is only where the Spark UI listens, and it has no --port
        parser.add_argument("--host", default=None, help="the Spark UI's address (default: $FLEETGEN_HOST, 127.0.0.1)")
    else:
        parser.add_argument("--host", default=None, help="control service host (default: $FLEETGEN_HOST or 127.0.0.1)")
        parser.add_argument(
            "--port", default=None, help="control service port 1..65535 (default: $FLEETGEN_PORT or 18000)"
        )
    _add_conf(parser)
    if kind == CLIENT:
        parser.add_argument("--json", action="store_true", help="print the service's JSON answer")
        return
    parser.add_argument("--config", default="base", help="preset name in conf/ or a YAML path (default: base)")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed (new data dirs only)")
    parser.add_argument("--master", default=None, help="Spark master, e.g. local[2] or spark://127.0.0.1:7077")
    parser.add_argument("--remote", default=None, help="Spark Connect server, e.g. sc://127.0.0.1:15002, or local[2]")
    parser.add_argument(
        "--speedup", default=None, help=f"1 (wall clock), N from 1 to {MAX_SPEEDUP:,} (simulated), or max"
    )
    parser.add_argument(
        "--spark-ui", default=None, metavar="on|off", help="the Spark UI, bound to --host (default: on)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fleetgen", description="Realistic, reproducible trucking-fleet data.")
    parser.add_argument("--version", action="version", version=f"fleetgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, handler, kind) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler, subparser=p)
        p.add_argument("--verbose", action="store_true", default=None, help="show Spark's log and every INFO line")
        if kind != PLAIN:
            _shared(p, kind)
    for name in ("onboard", "events"):
        sub.choices[name].add_argument("--now", action="store_true", help="run what is due now, then exit (default)")
    backfill = sub.choices["backfill"]
    backfill.add_argument("--start", required=True, help="ISO-8601 UTC from 1970, e.g. 2025-11-08T00:00:00Z")
    backfill.add_argument("--end", required=True, help="ISO-8601 UTC, exclusive")
    backfill.add_argument(
        "--max-intervals-per-trigger", default="32", help=f"intervals per micro-batch, 1..{MAX_INTERVALS_PER_TRIGGER:,}"
    )
    sub.choices["validate-config"].add_argument("file")
    logs = sub.choices["logs"]
    logs.add_argument("--level", default=None, help="minimum level: DEBUG, INFO, WARNING, ERROR, CRITICAL")
    logs.add_argument("--since", default=None, help="ISO-8601 instant, e.g. 2025-11-08T14:15:00Z")
    logs.add_argument("--limit", default=None, help=f"at most this many records (1..{MAX_LOG_RECORDS}, default 100)")
    _add_report_arguments(sub.choices["report"])
    _add_grade_arguments(sub.choices["grade"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # argparse blames the top-level parser; name the command instead
        args.subparser.error(f"unrecognized arguments: {' '.join(unknown)}")
    prog = f"fleetgen {args.command}"
    try:
        args.verbose = parse_switch(
            "1" if args.verbose else os.environ.get("FLEETGEN_VERBOSE", ""),
            "--verbose" if args.verbose else "FLEETGEN_VERBOSE",
        )
        _resolve(args)
        _spark_environment(args)
        return int(args.handler(args))
    except FleetGenError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # anything else still ends in one line; --verbose shows the trace
        if getattr(args, "verbose", False):
            traceback.print_exc()
        if logging.getLogger("fleetgen").handlers:  # only once logging is set up: never a bare stderr line
            log_event(_log, "command failed", logging.ERROR, command=args.command, error=repr(err))
        print(f"{prog}: error: {type(err).__name__}: {first_line(err)} (--verbose shows the details)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
