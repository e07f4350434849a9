"""A SparkSession with Delta Lake configured and the fleetgen sources registered."""

from __future__ import annotations

import os
import re
import secrets
import socket
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from pyspark.sql import SparkSession

from fleetgen_spark.core.exceptions import OptionError
from fleetgen_spark.spark.jars import DELTA_PACKAGE, delta_jars, s3a_jars

__all__ = [
    "VERBOSE_ENV",
    "base_conf",
    "register",
    "spark_session",
    "verbose",
]

# "1" shows Spark's own log (WARN and up, Spark's default profile); anything else keeps it quiet.
VERBOSE_ENV = "FLEETGEN_VERBOSE"
# Lines the JVM prints outside log4j on every start: not ours, and nothing a user can act on.
# Spark Connect's foreachBatch and listener workers print their start (with the session's token!)
# and every batch to the JVM's stderr.
_JVM_NOISE = re.compile(
    r"^(WARNING: Using incubator modules|Using Spark's default log4j profile"
    r"|Streaming (ForeachBatch|query listener) worker )"
)
_LOG4J_FILE = Path(__file__).resolve().parent.parent / "log4j2.properties"  # package data, at the package root
# HotSpot's C2 compiler takes a method once it has run ~5,000 times. A fleetgen run plans and
# code-generates many small queries (validation, MERGE, the batches table, Delta's own), so C2 spent
# ~26 of a 41-interval backfill's ~100 CPU seconds on planning code that stops running soon after,
# on the 2 cores the tasks need. At five times the thresholds that code stays in C1, while a row
# loop (millions of calls a micro-batch) still reaches C2: 0.91x the backfill's time, and no gain
# at ten times (benchmarks/NOTES.md, "Where the CPU goes: HotSpot's JIT").
JIT_OPTIONS = (
    "-XX:Tier4InvocationThreshold=25000",
    "-XX:Tier4MinInvocationThreshold=3000",
    "-XX:Tier4CompileThreshold=75000",
    "-XX:Tier4BackEdgeThreshold=200000",
)


def verbose() -> bool:
    """Whether Spark's own log is wanted (``FLEETGEN_VERBOSE=1``, set by ``fleetgen --verbose``)."""
    return os.environ.get(VERBOSE_ENV, "") == "1"


@contextmanager
def _filtered_jvm_stderr() -> Iterator[None]:
    """Start the JVM with its stderr in a pipe that drops the JVM's start-up noise.

    The JVM inherits file descriptor 2 when it is launched, so fd 2 points at a pipe for that
    moment only; a thread copies every other line to the real stderr for the JVM's lifetime.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreter): nothing to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_copy_lines, args=(read_end, saved), name="fleetgen-jvm-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        os.dup2(saved, 2)


def _copy_lines(read_end: int, target: int) -> None:
    with os.fdopen(read_end, "rb") as lines:
        for line in lines:
            if not _JVM_NOISE.match(line.decode("utf-8", "replace")):
                os.write(target, line)


def base_conf() -> dict[str, str]:
    """The settings every fleetgen session uses; spark-defaults.conf carries the same."""
    return {
        "spark.jars.packages": DELTA_PACKAGE,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "4",
        # Delta rebuilds a table's state (MERGE into companies, reads, checkpoints) with this
        # many partitions; its default 50 made each rebuild take seconds on 2 cores (a txnAppId
        # append 10-20 s, 2 partitions about 3 s). The tables are small; raise it for huge ones.
        "spark.databricks.delta.snapshotPartitions": "2",
        # A micro-batch with no new interval is cheap; do not spin on the clock.
        "spark.sql.streaming.pollingDelay": "200ms",
        # driver_events is partitioned by event date: a writer per date (a micro-batch spans one
        # or two) instead of sorting every row by date first. Measured ~1 us/row less CPU.
        "spark.sql.maxConcurrentOutputFileWriters": "2",
    }


def register(spark: SparkSession) -> None:
    """Register the ``fleetgen`` and ``fleetgen_companies`` sources with a classic or Connect session.

    On Spark Connect a source is bound to the session's artifacts when it is registered: after
    ``spark.addArtifacts(zip_of_the_package, pyfile=True)``, register again (README, Spark Connect).
    """
    from fleetgen_spark.spark.companies import FleetgenCompaniesDataSource
    from fleetgen_spark.spark.source import FleetgenDataSource

    spark.dataSource.register(FleetgenDataSource)
    spark.dataSource.register(FleetgenCompaniesDataSource)


def _loopback_cluster(master: str | None) -> bool:
    """Whether ``master`` is a standalone master on this machine's loopback interface."""
    if not master or not master.startswith("spark://"):
        return False
    return urlsplit(master).hostname in ("127.0.0.1", "localhost", "::1")


def _launch_conf(settings: dict[str, str], quiet: bool, more_jars: list[str]) -> None:
    """For a JVM this process starts: the Delta jars as files instead of Ivy (both modes, so the
    classpath never depends on verbosity), :data:`JIT_OPTIONS` and, when quiet, Spark's log at ERROR
    via our file. A ``spark.driver.extraJavaOptions`` the caller gives replaces both."""
    jars = delta_jars()
    if jars is not None:
        del settings["spark.jars.packages"]
    settings["spark.jars"] = ",".join([*(jars or []), *more_jars])
    if not settings["spark.jars"]:
        del settings["spark.jars"]
    options = list(JIT_OPTIONS)
    if quiet:
        options.append(f"-Dlog4j2.configurationFile={_LOG4J_FILE.as_uri()}")
    settings["spark.driver.extraJavaOptions"] = " ".join(options)


def spark_session(
    master: str | None = None,
    app_name: str = "fleetgen",
    remote: str | None = None,
    storage: str | None = None,
    **conf: Any,
) -> SparkSession:
    """A SparkSession with Delta Lake and both sources; ``master`` defaults to ``local[*]``
    unless spark-submit already set one. With ``remote`` (``sc://host:port``, or ``local[N]`` for
    a Spark Connect server started in this process), or with ``SPARK_REMOTE`` set, a Spark Connect
    session. Extra ``conf`` keys use dots or underscores (``spark_sql_shuffle_partitions=2``).

    Quiet unless ``FLEETGEN_VERBOSE=1``: Spark logs errors only and the JVM's start-up lines
    are dropped. The Spark UI binds to ``SPARK_LOCAL_IP`` (Spark has no setting of its own for
    the UI's address; ``fleetgen`` sets it to ``--host``).

    ``storage``: the data directory's URI; an ``s3a://`` one (or an ``fs.s3a.*`` setting) adds Hadoop's
    S3A jars (:func:`s3a_jars`) to a JVM this process starts."""
    extra = {k if "." in k else k.replace("_", "."): str(v) for k, v in conf.items()}
    remote = remote or os.environ.get("SPARK_REMOTE") or None
    needs_s3a = (storage or "").startswith("s3a://") or any(".s3a." in k for k in extra)
    jars = (s3a_jars() or []) if needs_s3a else []
    if remote:
        spark = _connect_session(remote, app_name, extra, jars)
    else:
        spark = _classic_session(master, app_name, extra, jars)
    register(spark)
    return spark


def _use_this_python() -> None:
    """Python workers must run this interpreter, or they will not find numpy and pyarrow."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # spark-submit passes spark.pyspark.python on as given; a relative path (spark-defaults.conf)
    # would be looked up in each executor's scratch directory on a cluster, so anchor it here.
    if os.sep in os.environ["PYSPARK_PYTHON"]:
        os.environ["PYSPARK_PYTHON"] = os.path.abspath(os.environ["PYSPARK_PYTHON"])


def _classic_session(master: str | None, app_name: str, extra: dict[str, str], jars: list[str]) -> SparkSession:
    _use_this_python()
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
        builder = builder.master("local[*]")
    settings = base_conf()
    launching = "PYSPARK_GATEWAY_PORT" not in os.environ and SparkSession.getActiveSession() is None
    quiet = launching and not verbose()
    if launching:
        _launch_conf(settings, quiet, jars)
    if os.environ.get("FLEETGEN_SPARK_UI") == "off":  # fleetgen --spark-ui off
        settings["spark.ui.enabled"] = "false"
    if _loopback_cluster(master):
        # Executors of a cluster on 127.0.0.1 are on this machine: keep the driver there too,
        # rather than on the address the host name resolves to (which may not be reachable).
        settings.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
    settings.update(extra)
    for key, value in settings.items():
        builder = builder.config(key, value)
    if quiet:
        with _filtered_jvm_stderr():
            spark = builder.getOrCreate()
    else:
        spark = builder.getOrCreate()
    return spark


# Settings a Spark Connect server fixes when it starts; a client cannot change them afterwards.
_SERVER_ONLY = ("spark.jars", "spark.sql.extensions", "spark.sql.catalog.spark_catalog", "spark.ui.", "spark.driver.")
# A local[N] Connect server listens here when the port is free (pyspark's default), else on a free port.
CONNECT_PORT = 15002


def _connect_session(remote: str, app_name: str, extra: dict[str, str], jars: list[str]) -> SparkSession:
    """A Spark Connect session: a server of its own for ``local[N]``, else the server at ``remote``."""
    if not remote.startswith(("local", "sc://")):
        raise OptionError(f"remote {remote!r} is not a Spark Connect address; use sc://host:port or local[N]")
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError as err:
        raise OptionError(
            f"remote {remote!r} needs the Spark Connect client libraries ({err}); "
            "install them with: pip install 'fleetgen-spark[connect]'"
        ) from err
    if remote.startswith("local"):
        remote = _start_local_connect_server(remote, app_name, extra, jars)
    settings = {**base_conf(), **extra}
    # A running server was configured when it started (Delta's jar and extensions, see the README);
    # a client can only set runtime SQL settings. Pyspark ignores the others silently.
    runtime = {k: v for k, v in settings.items() if not k.startswith(_SERVER_ONLY)}
    builder = ConnectSession.builder.remote(remote).appName(app_name)
    for key, value in runtime.items():
        builder = builder.config(key, value)
    with warnings.catch_warnings():
        # pyspark tries to set every setting on the new session and warns "Failed to set ..." for
        # those only a server start can take (spark.jars.packages when the jars were not cached).
        warnings.filterwarnings("ignore", message="Failed to set spark", category=UserWarning)
        # Connect's session class stands in for the classic one (pyspark's own builder returns it the same way).
        return cast(SparkSession, builder.getOrCreate())


def _start_local_connect_server(master: str, app_name: str, extra: dict[str, str], jars: list[str]) -> str:
    """Start a Spark Connect server in this process, as ``builder.remote("local[N]")`` does, and
    return its ``sc://`` address.

    Pyspark's own way always binds port 15002 (a second local server then fails) and starts Spark
    loudly (the Ivy report, ~60 resolver ERRORs). Here the server is a classic session with the
    Connect plugin, started like every fleetgen session (jars as files, Spark's log at ERROR) on
    15002 or, when that is taken, on a free loopback port. The client finds the server through the
    same environment variables pyspark sets, so stopping the client stops the server too.
    """
    port = CONNECT_PORT if _port_free(CONNECT_PORT) else _free_port()
    # The server and its client share this secret; pyspark draws it the same way for local[N].
    os.environ.setdefault("SPARK_CONNECT_AUTHENTICATE_TOKEN", secrets.token_urlsafe(24))
    server = {
        **extra,
        "spark.plugins": "org.apache.spark.sql.connect.SparkConnectPlugin",
        "spark.sql.artifact.isolation.enabled": "true",
        "spark.sql.artifact.isolation.alwaysApplyClassloader": "true",
        # Spark binds a Connect server to every interface unless told otherwise: keep it on loopback.
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
    }
    # pyspark refuses a classic master while SPARK_REMOTE is set (its own local[N] start hides it too).
    remote_env = os.environ.pop("SPARK_REMOTE", None)
    try:
        _classic_session(master, app_name, server, jars)
    finally:
        if remote_env is not None:
            os.environ["SPARK_REMOTE"] = remote_env
    # What pyspark's remote("local[N]") sets: functions dispatch to Connect, and the client's stop()
    # stops this in-process server as well.
    os.environ["SPARK_LOCAL_REMOTE"] = "1"
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
    # "localhost", not 127.0.0.1: pyspark speaks TLS to any other host once a token is set.
    return f"sc://localhost:{port}"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
