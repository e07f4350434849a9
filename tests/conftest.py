"""Shared fixtures: one SparkSession for the whole run (local[2], UTC, UI off, Delta on)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from helpers import Datasets, free_port
from pyspark.sql import SparkSession

import fleetgen_spark

# Python workers must run this interpreter (the virtualenv), or they miss numpy and pyarrow.
# Set before any SparkContext exists: Spark reads it when the session starts.
os.environ["PYSPARK_PYTHON"] = sys.executable


# Tiers, by what a test uses: a test that asks for a fixture below needs a JVM and is marked `spark`
# here; a test that starts one in a subprocess (the CLI, a notebook, a Connect server) carries the
# mark by hand. `make test-fast` runs `-m "not spark"`: no JVM at all.
JVM_FIXTURES = frozenset({"spark", "hdfs_server", "datasets"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if JVM_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """The session every Spark test shares; tables and checkpoints go to each test's tmp_path."""
    # storage="s3a://": Hadoop's S3A jars on the classpath, so the storage tests can share this session
    # (their endpoint and keys are per-bucket settings made at run time, see S3Server.use).
    session = fleetgen_spark.spark_session(
        "local[2]", storage="s3a://tests", spark_ui_enabled="false", spark_sql_shuffle_partitions="2"
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Datasets:
    """Standard data directories, each built once for the session (see helpers.Datasets)."""
    return Datasets(tmp_path_factory.mktemp("datasets"))


@dataclass(frozen=True)
class S3Server:
    """A real S3-protocol server (moto's, from PyPI) on loopback, and the settings that reach it."""

    endpoint: str
    access_key: str = "fleetgen-test"
    secret_key: str = "fleetgen-test-secret"

    def conf(self, bucket: str) -> dict[str, str]:
        """The --conf settings of one bucket, as a user gives them (endpoint, path style, keys)."""
        base = f"spark.hadoop.fs.s3a.bucket.{bucket}."
        return {
            base + "endpoint": self.endpoint,
            base + "endpoint.region": "us-east-1",
            base + "path.style.access": "true",
            base + "connection.ssl.enabled": "false",
            base + "access.key": self.access_key,
            base + "secret.key": self.secret_key,
        }

    def client(self) -> Any:
        """A boto3 client of the server (for a test to put objects as another writer would leave them)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def use(self, spark: SparkSession, bucket: str) -> dict[str, str]:
        """Make ``bucket`` reachable from a running session: per-bucket Hadoop settings are read when a
        bucket's file system is first made, so a new bucket takes them at run time. Returns its conf."""
        conf = self.conf(self.bucket(bucket))
        for key, value in conf.items():
            spark.conf.set(key.removeprefix("spark.hadoop."), value)
        return conf


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port for the test session (about 1 s to start), then stopped."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint + "/", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        yield S3Server(endpoint)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# HDFS for the storage tests: Hadoop's own mini cluster (a namenode and a datanode in one JVM, about
# 16 s to start alone, 300 MB of memory), from Maven Central like the Delta jars. It needs JUnit's
# Assertions class at run time, which its POM does not name.
HDFS_PACKAGES = ("org.apache.hadoop:hadoop-client-minicluster:3.5.0", "org.junit.jupiter:junit-jupiter-api:5.10.2")


@dataclass(frozen=True)
class HdfsServer:
    namenode: str  # hdfs://127.0.0.1:PORT
    http: str  # the namenode's WebHDFS address, 127.0.0.1:PORT

    def conf(self) -> dict[str, str]:
        return {"spark.hadoop.dfs.namenode.http-address": self.http}


@pytest.fixture(scope="session")
def hdfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HdfsServer]:
    """An HDFS mini cluster on loopback ports for the test session, then stopped."""
    from fleetgen_spark.spark import jars as spark_session_module

    folder = spark_session_module._jar_cache() / "hdfs-minicluster-3.5.0"
    module = spark_session_module._ivy_module(HDFS_PACKAGES)
    if not (folder / ".complete").is_file():
        assert spark_session_module._resolve_with_ivy(folder, module, "the HDFS mini cluster jars"), "no jars"
    work = tmp_path_factory.mktemp("hdfs")
    details = work / "details.json"
    rpc, http = free_port(), free_port()
    java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else "java"
    command = [
        java, "-Xmx512m", "-cp", f"{folder}/*", "org.apache.hadoop.test.MiniDFSClusterManager",
        "-format", "-datanodes", "1", "-nnport", str(rpc), "-httpport", str(http),
        "-writeDetails", str(details),
    ]  # fmt: skip
    with open(work / "cluster.log", "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.PIPE, cwd=work)
    try:
        deadline = time.monotonic() + 240
        while not (details.is_file() and details.stat().st_size):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the HDFS mini cluster did not start: {(work / 'cluster.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield HdfsServer(f"hdfs://127.0.0.1:{rpc}", f"127.0.0.1:{http}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
