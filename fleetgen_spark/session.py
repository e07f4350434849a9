"""A SparkSession with Delta Lake configured and the fleetgen sources registered."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any
from urllib.parse import urlsplit

from pyspark.sql import SparkSession

from fleetgen_spark.exceptions import OptionError

__all__ = ["DELTA_PACKAGE", "base_conf", "register", "spark_session"]

# delta-spark's pip helper asks for the jar of its own version (4.4.1), but Maven Central
# serves delta-spark_4.2_2.13 only at 4.4.0 for Spark 4.2; the Python API of the 4.4.1
# wheel drives the 4.4.0 jar unchanged (a patch release). Spark resolves the jar through
# Ivy into ~/.ivy2.5.2 on first use and reads it from there afterwards.
DELTA_PACKAGE = "io.delta:delta-spark_4.2_2.13:4.4.0"


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
    from fleetgen_spark.companies import FleetgenCompaniesDataSource
    from fleetgen_spark.source import FleetgenDataSource

    spark.dataSource.register(FleetgenDataSource)
    spark.dataSource.register(FleetgenCompaniesDataSource)


def _loopback_cluster(master: str | None) -> bool:
    """Whether ``master`` is a standalone master on this machine's loopback interface."""
    if not master or not master.startswith("spark://"):
        return False
    return urlsplit(master).hostname in ("127.0.0.1", "localhost", "::1")


def spark_session(
    master: str | None = None, app_name: str = "fleetgen", remote: str | None = None, **conf: Any
) -> SparkSession:
    """A SparkSession with Delta Lake and both sources; ``master`` defaults to ``local[*]``
    unless spark-submit already set one. With ``remote`` (``sc://host:port``, or ``local[N]`` for
    a Spark Connect server started in this process), or with ``SPARK_REMOTE`` set, a Spark Connect
    session. Extra ``conf`` keys use dots or underscores (``spark_sql_shuffle_partitions=2``)."""
    extra = {k if "." in k else k.replace("_", "."): str(v) for k, v in conf.items()}
    remote = remote or os.environ.get("SPARK_REMOTE") or None
    spark = _connect_session(remote, app_name, extra) if remote else _classic_session(master, app_name, extra)
    register(spark)
    return spark


def _use_this_python() -> None:
    """Python workers must run this interpreter, or they will not find numpy and pyarrow."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # spark-submit passes spark.pyspark.python on as given; a relative path (spark-defaults.conf)
    # would be looked up in each executor's scratch directory on a cluster, so anchor it here.
    if os.sep in os.environ["PYSPARK_PYTHON"]:
        os.environ["PYSPARK_PYTHON"] = os.path.abspath(os.environ["PYSPARK_PYTHON"])


def _classic_session(master: str | None, app_name: str, extra: dict[str, str]) -> SparkSession:
    _use_this_python()
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
        builder = builder.master("local[*]")
    settings = base_conf()
    if _loopback_cluster(master):
        # Executors of a cluster on 127.0.0.1 are on this machine: keep the driver there too,
        # rather than on the address the host name resolves to (which may not be reachable).
        settings.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
    settings.update(extra)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


# Settings a Spark Connect server fixes when it starts; a client cannot change them afterwards.
_SERVER_ONLY = ("spark.jars.packages", "spark.sql.extensions", "spark.sql.catalog.spark_catalog", "spark.ui.")


def _connect_session(remote: str, app_name: str, extra: dict[str, str]) -> SparkSession:
    """A Spark Connect session: a server of its own for ``local[N]``, else the server at ``remote``."""
    if remote.startswith("local"):
        _use_this_python()
        # The server starts in this process and takes every setting, the Delta jar included. Spark
        # binds it to every interface on port 15002 unless told otherwise: keep it on loopback.
        settings = {**base_conf(), "spark.connect.grpc.binding.address": "127.0.0.1", **extra}
    elif remote.startswith("sc://"):
        # A running server was configured when it started (Delta's jar and extensions, see the
        # README); a client can only set runtime SQL settings. Pyspark ignores the others silently.
        settings = {k: v for k, v in {**base_conf(), **extra}.items() if not k.startswith(_SERVER_ONLY)}
    else:
        raise OptionError(f"remote {remote!r} is not a Spark Connect address; use sc://host:port or local[N]")
    try:
        import pyspark.sql.connect.session  # noqa: F401  (fails early without the client libraries)
    except ImportError as err:
        raise OptionError(
            f"remote {remote!r} needs the Spark Connect client libraries ({err}); "
            "install them with: pip install 'fleetgen-spark[connect]'"
        ) from err
    builder = SparkSession.builder.remote(remote).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    with warnings.catch_warnings():
        # For local[N], pyspark starts the server with every setting, then also tries to set each on
        # the new session and warns "Failed to set ..." for those only a server start can take.
        warnings.filterwarnings("ignore", message="Failed to set spark", category=UserWarning)
        return builder.getOrCreate()
