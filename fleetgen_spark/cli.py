"""The ``fleetgen`` command line: jobs that run Spark, and a client of the control service."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import yaml

from fleetgen_spark.clock import align_down, epoch_seconds, from_epoch, iso, parse_instant, parse_speedup
from fleetgen_spark.config import Config, load_config
from fleetgen_spark.exceptions import FleetGenError, OptionError
from fleetgen_spark.logs import configure_logging
from fleetgen_spark.manifests import Layout

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _shared(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="base", help="preset name in conf/ or a YAML path (default: base)")
    parser.add_argument("--data-dir", default=os.environ.get("FLEETGEN_DATA_DIR", "data"), help="default: ./data")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed (new data dirs only)")
    parser.add_argument("--master", default=None, help="Spark master, e.g. local[2] or spark://127.0.0.1:7077")
    parser.add_argument("--remote", default=None, help="Spark Connect server, e.g. sc://127.0.0.1:15002")
    parser.add_argument("--speedup", default=None, help="1 (wall clock), N > 1 (simulated) or max")
    parser.add_argument("--host", default=os.environ.get("FLEETGEN_HOST", "127.0.0.1"), help="control service host")
    parser.add_argument("--port", type=int, default=int(os.environ.get("FLEETGEN_PORT", "18000")), help="default 18000")


def _config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    return load_config(args.config, **overrides)


def _spark(args: argparse.Namespace, app: str) -> Any:
    from fleetgen_spark.session import spark_session

    return spark_session(args.master, app_name=app, remote=args.remote)


def _pipeline(args: argparse.Namespace, config: Config, **kwargs: Any) -> Any:
    from fleetgen_spark.pipeline import Pipeline, ProgressListener

    layout = Layout(args.data_dir)
    # A backfill shows its own progress line; its per-batch records still go to the JSON logs.
    configure_logging(layout.root, stderr_level="WARNING" if args.command == "backfill" else "INFO")
    spark = _spark(args, f"fleetgen-{args.command}")
    spark.streams.addListener(ProgressListener())
    return Pipeline(spark, layout, config, **kwargs)


def _just_closed(config: Config) -> datetime:
    """A new data directory for a ``--now`` job starts one interval back, so one interval has closed."""
    now = align_down(from_epoch(time.time()), config.interval_seconds)
    return from_epoch(epoch_seconds(now) - config.interval_seconds)


def cmd_validate_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    print(yaml.safe_dump(config.to_yaml_dict(), sort_keys=False).rstrip())
    return 0


def cmd_onboard(args: argparse.Namespace) -> int:
    config = _config(args)
    pipeline = _pipeline(args, config, speedup=args.speedup or "1", start=_just_closed(config))
    query = pipeline.start_companies(available_now=True)
    query.awaitTermination()
    count = pipeline.spark.read.format("delta").load(str(pipeline.layout.table("companies"))).count()
    print(f"companies: {count} in {pipeline.layout.table('companies')}")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    config = _config(args)
    pipeline = _pipeline(
        args, config, speedup=args.speedup or "1", start=_just_closed(config), max_intervals_per_trigger=96
    )
    pipeline.run_available_now()
    print(json.dumps(json.loads(pipeline.layout.batch_manifest.read_text()), indent=2))
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    config = _config(args)
    start = align_down(parse_instant(args.start, "--start"), config.interval_seconds)
    end = align_down(parse_instant(args.end, "--end"), config.interval_seconds)
    if end <= start:
        raise OptionError(f"--end {args.end!r} must be after --start {args.start!r} by at least one interval")
    pipeline = _pipeline(
        args,
        config,
        speedup="max",
        start=start,
        end=end,
        max_intervals_per_trigger=args.max_intervals_per_trigger,
    )
    if pipeline.dataset.start > start:
        raise OptionError(
            f"--start {args.start!r} is before the start {iso(pipeline.dataset.start)} of the dataset in "
            f"{pipeline.layout.root}; use another --data-dir (or clean it) to backfill earlier history"
        )
    total = (epoch_seconds(end) - epoch_seconds(pipeline.dataset.start)) // config.interval_seconds
    began = time.monotonic()
    interactive = sys.stdout.isatty()
    shown = {"done": -1}

    def progress(query: Any) -> None:
        last = query.lastProgress
        if not last or not last.get("sources"):
            return
        done_to = parse_instant(json.loads(last["sources"][0]["endOffset"])["next"], "offset")
        done = (epoch_seconds(done_to) - epoch_seconds(pipeline.dataset.start)) // config.interval_seconds
        if done == shown["done"]:
            return
        shown["done"] = done
        events = (
            int(json.loads(pipeline.layout.batch_manifest.read_text()).get("total_events", 0))
            if (pipeline.layout.batch_manifest.is_file())
            else 0
        )
        rate = events / max(time.monotonic() - began, 1e-9)
        line = f"intervals {done}/{total}  events {events}  {rate:,.0f} events/s"
        print(("\r" + line) if interactive else line, end="" if interactive else "\n", flush=True)

    pipeline.run_available_now(progress)
    manifest = json.loads(pipeline.layout.batch_manifest.read_text())
    elapsed = time.monotonic() - began
    print(
        f"\nbackfill done: {manifest['batch_count']} intervals, {manifest['total_events']} events, "
        f"last batch {manifest['last_batch_id']}, {elapsed:.1f} s"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetgen", description="Realistic, reproducible trucking-fleet data.")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[str, Handler]] = {
        "backfill": ("generate a past range [--start, --end) into Delta and exit", cmd_backfill),
        "onboard": ("MERGE the onboarding ticks that are due into delta/companies", cmd_onboard),
        "events": ("generate the intervals that have closed into Delta and exit", cmd_events),
    }
    for name, (help_text, handler) in commands.items():
        p = sub.add_parser(name, help=help_text)
        _shared(p)
        p.set_defaults(handler=handler)
        if name in ("onboard", "events"):
            p.add_argument("--now", action="store_true", help="run what is due now, then exit (the default)")
    backfill = sub.choices["backfill"]
    backfill.add_argument("--start", required=True, help="ISO-8601 UTC, e.g. 2025-11-08T00:00:00Z")
    backfill.add_argument("--end", required=True, help="ISO-8601 UTC, exclusive")
    backfill.add_argument("--max-intervals-per-trigger", type=int, default=32, help="intervals per micro-batch")
    validate = sub.add_parser("validate-config", help="check a config file and print it parsed")
    validate.add_argument("file")
    validate.set_defaults(handler=cmd_validate_config)
    _add_service_commands(sub)
    return parser


def _add_service_commands(sub: Any) -> None:
    """The service and its clients live in service.py and client.py (imported lazily)."""
    try:
        from fleetgen_spark.client import add_client_commands
    except ImportError:
        return
    add_client_commands(sub, _shared)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "speedup", None) is not None:
            parse_speedup(args.speedup)
        return int(args.handler(args))
    except FleetGenError as err:
        print(f"fleetgen {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
