"""What one small Delta append costs with Delta's ``txnAppId``/``txnVersion`` and without.

The events query makes two appends per micro-batch (driver_events, batches), so their fixed
cost sets the live latency. This probe appends one row of the batches schema N times to a
fresh table, alternating the variants, and prints the median seconds per append and the
Spark jobs each append ran. It is why fleetgen tags its commits (``userMetadata``) instead
of using ``txnAppId``, and keeps exactly-once in the batches ledger: see fleetgen_spark/ledger.py and NOTES.md.

    .venv/bin/python benchmarks/probe_append.py [--appends 14] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import datetime, timezone

from harness import median, now
from pyspark.sql import SparkSession

import fleetgen_spark
from fleetgen_spark.spark.tables import BATCHES_SCHEMA

ROW = (
    "20250101T0000",
    datetime(2025, 1, 1, tzinfo=timezone.utc),
    datetime(2025, 1, 1, 0, 15, tzinfo=timezone.utc),
    1,
    1,
    datetime(2025, 1, 1, tzinfo=timezone.utc),
    1,
    1,
)


def appends(spark: SparkSession, variant: str, count: int) -> tuple[float, float]:
    """Median seconds and median Spark jobs per append, the first three (cold) left out."""
    tracker = spark.sparkContext.statusTracker()
    seconds, jobs = [], []
    with tempfile.TemporaryDirectory(prefix="fleetgen-probe-") as table:
        for epoch in range(count):
            df = spark.createDataFrame([ROW], BATCHES_SCHEMA)
            before = set(tracker.getJobIdsForGroup())
            began = now()
            if variant == "txnAppId":
                writer = df.write.format("delta").mode("append")
                writer.option("txnAppId", "probe").option("txnVersion", epoch).save(table)
            elif variant == "userMetadata tag":  # what the events writer does (the ledger is read once per start)
                df.write.format("delta").mode("append").option("userMetadata", f"probe/{epoch}").save(table)
            else:
                df.write.format("delta").mode("append").save(table)
            seconds.append(now() - began)
            jobs.append(len(set(tracker.getJobIdsForGroup()) - before))
    return median(seconds[3:]), median([float(j) for j in jobs[3:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=14)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    spark = fleetgen_spark.spark_session("local[2]", app_name="fleetgen-probe", spark_ui_enabled="false")
    spark.sparkContext.setLogLevel("ERROR")
    appends(spark, "plain", 5)  # warm-up
    print("| variant | round | s per append (median) | Spark jobs per append |")
    print("|---|---:|---:|---:|")
    for round_ in range(1, args.rounds + 1):
        for variant in ("txnAppId", "userMetadata tag", "plain"):
            seconds, jobs = appends(spark, variant, args.appends)
            print(f"| {variant} | {round_} | {seconds:.3f} | {jobs:.0f} |", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
