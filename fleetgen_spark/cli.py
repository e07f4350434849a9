"""The ``fleetgen`` command line: jobs that run Spark, and a client of the control service.

One convention for every command: output for people on stdout, progress and Spark's log
(errors only, unless ``--verbose``) on stderr, and any refusal as one line
``fleetgen CMD: error: ...``. Exit codes: 0 done, 1 input or state refused, 2 bad usage
(unknown flag, missing argument), 130 interrupted.

Here: the parser and the command table. :mod:`fleetgen_spark.flags` checks the flags,
:mod:`fleetgen_spark.commands` runs the jobs, :mod:`fleetgen_spark.client` asks a running service.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from fleetgen_spark import __version__
from fleetgen_spark.client import cmd_clean, cmd_logs, cmd_pause, cmd_resume, cmd_status
from fleetgen_spark.commands import (
    cmd_backfill,
    cmd_events,
    cmd_exercises,
    cmd_grade,
    cmd_onboard,
    cmd_report,
    cmd_run,
    cmd_validate_config,
)
from fleetgen_spark.core.clock import (
    MAX_SPEEDUP,
)
from fleetgen_spark.core.exceptions import FleetGenError
from fleetgen_spark.flags import MAX_INTERVALS_PER_TRIGGER, MAX_LOG_RECORDS, parse_switch, resolve, spark_environment
from fleetgen_spark.spark.failures import first_line
from fleetgen_spark.storage.logs import get_logger, log_event

__all__ = ["COMMANDS", "build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]
_log = get_logger("cli")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``fleetgen CMD: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


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
        resolve(args)
        spark_environment(args)
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
