"""Shared fixtures: one SparkSession for the whole run (local[2], UTC, UI off, Delta on)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

# Python workers must run this interpreter (the virtualenv), or they miss numpy and pyarrow.
os.environ["PYSPARK_PYTHON"] = sys.executable

from pyspark.sql import SparkSession  # noqa: E402

import fleetgen_spark  # noqa: E402


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """The session every Spark test shares; tables and checkpoints go to each test's tmp_path."""
    session = fleetgen_spark.spark_session("local[2]", spark_ui_enabled="false", spark_sql_shuffle_partitions="2")
    yield session
    session.stop()
