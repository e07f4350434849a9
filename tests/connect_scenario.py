"""A Spark Connect client run by tests/test_connect.py in a process of its own.

A Connect session cannot share a process with the classic session of the test run (pyspark
refuses a second kind of session, and ``remote="local[N]"`` starts its server in-process), so
each scenario runs here and prints one JSON line of what it saw.

    python tests/connect_scenario.py --remote sc://127.0.0.1:PORT --data-dir D [--artifact Z] [--pipeline]
        [--readme] [--also-pipeline D2]

``--also-pipeline`` runs the whole pipeline into D2 after the source scenario, in the same process: one
Connect server start serves both (its failure is reported as ``pipeline_error``, not raised).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

START, END = "2025-11-08T00:00:00Z", "2025-11-08T02:00:00Z"


def _where_fleetgen(batches: Iterator[Any]) -> Iterator[Any]:
    """Runs in a Python worker of the server: where does ``import fleetgen_spark`` come from?"""
    import pandas as pd

    try:
        import fleetgen_spark

        where = str(fleetgen_spark.__file__)
    except ImportError as err:
        where = f"ImportError: {err}"
    for _ in batches:
        yield pd.DataFrame({"where": [where]})


def worker_import(spark: Any) -> str:
    rows = spark.range(1, numPartitions=1).mapInPandas(_where_fleetgen, "where string").collect()
    return str(rows[0]["where"])


def read_and_stream(spark: Any, data_dir: Path) -> dict[str, Any]:
    """What the issue tried by hand: a batch read, then AvailableNow into Delta (its error, if any)."""
    options = {"config": "small", "start": START, "end": END}
    seen: dict[str, Any] = {"read_rows": spark.read.format("fleetgen").options(**options).load().count()}
    table = data_dir / "events"
    try:
        query = (
            spark.readStream.format("fleetgen")
            .options(**options, speedup="max", maxIntervalsPerTrigger="8")
            .load()
            .writeStream.format("delta")
            .option("checkpointLocation", str(data_dir / "checkpoint"))
            .trigger(availableNow=True)
            .start(str(table))
        )
        query.awaitTermination()
    except Exception as err:  # reported, so that a test can tell a known limitation from a new failure
        return {**seen, "stream_error": str(err)[:2000]}
    seen["delta_rows"] = spark.read.format("delta").load(str(table)).count()
    seen["delta_table_api"] = delta_table_api(spark, table)
    return seen


def readme_examples(remote: str) -> dict[str, Any]:
    """The README's notebook examples as pasted, with SPARK_REMOTE set as a Connect user would."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Use it from a notebook") :]
    blocks = re.findall(r"```python\n(.*?)```", section[: section.index("\n## ", 5)], re.DOTALL)
    os.environ["SPARK_REMOTE"] = remote
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    return {"readme_rows": namespace["df"].count(), "readme_query_active": namespace["query"].isActive}


def delta_table_api(spark: Any, table: Path) -> str:
    """Whether Delta's Python DeltaTable API works on this session (README, Spark Connect)."""
    from delta.tables import DeltaTable

    try:
        return f"rows {DeltaTable.forPath(spark, str(table)).toDF().count()}"
    except Exception as err:  # the server's answer is what we report
        return f"{type(err).__name__}: {str(err)[:300]}"


def pipeline(spark: Any, data_dir: Path) -> dict[str, Any]:
    """The whole pipeline (companies MERGE, events, batches, manifests) on a Connect session."""
    from fleetgen_spark import load_config
    from fleetgen_spark.spark.pipeline import Pipeline
    from fleetgen_spark.storage.datadir import DataDir

    def instant(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)

    layout = DataDir(str(data_dir))
    run = Pipeline(
        spark, layout, load_config("small"), speedup="max", start=instant(START), end=instant(END),
        max_intervals_per_trigger=8,
    )  # fmt: skip
    run.run_available_now()
    counts = {t: spark.read.format("delta").load(str(layout.table(t))).count() for t in ("companies", "driver_events")}
    return {**counts, "manifest": json.loads(layout.batch_manifest.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--remote", required=True)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--artifact", help="a zip of the package for the server's Python workers")
    parser.add_argument("--pipeline", action="store_true", help="run the whole pipeline instead of the source")
    parser.add_argument("--readme", action="store_true", help="also run the README's notebook examples")
    parser.add_argument("--also-pipeline", type=Path, help="then run the whole pipeline into this data directory")
    args = parser.parse_args()

    import fleetgen_spark

    spark = fleetgen_spark.spark_session(remote=args.remote, spark_sql_shuffle_partitions="2")
    seen: dict[str, Any] = {"session": f"{type(spark).__module__}.{type(spark).__name__}"}
    if args.artifact:
        seen["worker_before"] = worker_import(spark)
        spark.addArtifacts(args.artifact, pyfile=True)
        # The server binds a Python data source to the session's artifacts when it is registered:
        # register again, or creating the source still fails with No module named 'fleetgen_spark'.
        fleetgen_spark.register(spark)
        seen["worker_after"] = worker_import(spark)
    seen.update(pipeline(spark, args.data_dir) if args.pipeline else read_and_stream(spark, args.data_dir))
    if args.also_pipeline:
        try:
            seen["pipeline"] = pipeline(spark, args.also_pipeline)
        except Exception as err:  # reported, so that the source scenario's test still sees its own results
            seen["pipeline_error"] = f"{type(err).__name__}: {str(err)[:3000]}"
    if args.readme:
        seen.update(readme_examples(args.remote))
    spark.stop()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
