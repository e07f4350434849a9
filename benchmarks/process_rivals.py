"""The yardsticks of `fleetgen backfill` as whole processes: the same rows into Delta, start-up included.

One process each, as a user runs a script: a SparkSession with fleetgen's settings (``spark_session``,
local[2], the same Delta jar), then the rows of ``Workload.for_rows(rows)`` (fleetgen's event schema)
appended to a Delta table partitioned by ``event_date``, like ``driver_events``:

- ``dbldatagen``: the columns built with dbldatagen, one batch append;
- ``ceiling``: a Python data source re-yielding one cached Arrow batch (what any Python source costs
  when generation is free), read as a stream and written with Trigger.AvailableNow, like fleetgen.

    python benchmarks/process_rivals.py dbldatagen|ceiling --rows N --out DIR
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import rivals
from pyspark import cloudpickle
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from rivals import CachedBatchDataSource, Workload, dbldatagen_events

import fleetgen_spark

PARTITIONS = 2  # local[2]
CACHED_BATCH_ROWS = 10_000  # about what fleetgen yields per block at this fleet size


def _dated(df: DataFrame) -> DataFrame:
    return df.withColumn("event_date", F.to_date("timestamp"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rival", choices=("dbldatagen", "ceiling"))
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    began = time.monotonic()
    spark = fleetgen_spark.spark_session("local[2]", app_name=f"yardstick-{args.rival}")
    session_s = time.monotonic() - began
    table = str(args.out / "events")
    if args.rival == "dbldatagen":
        rows = dbldatagen_events(spark, Workload.for_rows(args.rows), args.rows, PARTITIONS)
        _dated(rows).write.format("delta").mode("append").partitionBy("event_date").save(table)
    else:
        cloudpickle.register_pickle_by_value(rivals)  # the Python workers need not import it
        spark.dataSource.register(CachedBatchDataSource)
        stream = (
            spark.readStream.format("fleetgen_cached")
            .options(rows=str(args.rows), batchRows=str(CACHED_BATCH_ROWS), numPartitions=str(PARTITIONS))
            .load()
        )
        query = (
            _dated(stream)
            .writeStream.format("delta")
            .partitionBy("event_date")
            .option("checkpointLocation", str(args.out / "checkpoint"))
            .trigger(availableNow=True)
            .start(table)
        )
        query.awaitTermination()
    write_s = time.monotonic() - began - session_s
    written = spark.read.format("delta").load(table).count()
    # bench_process.py reads this line: the whole, and the session's start and the write within it.
    print(
        f"{args.rival}: {written} rows in {time.monotonic() - began:.1f} s "
        f"(session {session_s:.1f} s, write {write_s:.1f} s)"
    )
    spark.stop()
    return 0 if written == args.rows else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
