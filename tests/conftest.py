"""Shared fixtures: one SparkSession for the whole run (local[2], UTC, UI off, Delta on)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pyspark.sql import SparkSession

import fleetgen_spark

# Python workers must run this interpreter (the virtualenv), or they miss numpy and pyarrow.
# Set before any SparkContext exists: Spark reads it when the session starts.
os.environ["PYSPARK_PYTHON"] = sys.executable


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


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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

    def bucket(self, name: str) -> str:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )
        client.create_bucket(Bucket=name)
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
