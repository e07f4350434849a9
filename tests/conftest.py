"""Shared fixtures: one SparkSession for the whole run (local[2], UTC, UI off, Delta on)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

import fleetgen_spark

# Python workers must run this interpreter (the virtualenv), or they miss numpy and pyarrow.
# Set before any SparkContext exists: Spark reads it when the session starts.
os.environ["PYSPARK_PYTHON"] = sys.executable


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """The session every Spark test shares; tables and checkpoints go to each test's tmp_path."""
    session = fleetgen_spark.spark_session("local[2]", spark_ui_enabled="false", spark_sql_shuffle_partitions="2")
    yield session
    session.stop()
