"""The ``fleetgen`` flags and environment variables, checked before any work: each by one function,
whichever of the two gave it, so a bad value is refused with the name the user typed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from fleetgen_spark.core.clock import MAX_SPEEDUP, parse_speedup
from fleetgen_spark.core.exceptions import OptionError
from fleetgen_spark.service.rest import DEFAULT_HOST, DEFAULT_PORT

__all__ = [
    "ENVIRONMENT",
    "MAX_INTERVALS_PER_TRIGGER",
    "MAX_LOG_RECORDS",
    "parse_conf",
    "parse_count",
    "parse_host",
    "parse_port",
    "parse_switch",
    "resolve",
    "spark_environment",
]

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


def resolve(args: argparse.Namespace) -> None:
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


def spark_environment(args: argparse.Namespace) -> None:
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
