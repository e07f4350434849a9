"""The companies dimension: each onboarding micro-batch MERGEd into ``companies`` (SCD type 1) and
``companies_history`` (SCD type 2).

Both MERGEs are SQL (``MERGE INTO delta.`path```), which a Spark Connect session runs too (Delta's
Python ``DeltaTable`` API needs a server plugin that Connect servers may not have). Both are
idempotent: a replayed micro-batch, or a companies query that starts again from its first tick
(checkpoint deleted), changes neither table, because a version is applied only when it is newer
than what the table holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from fleetgen_spark.core.clock import batch_id, iso
from fleetgen_spark.spark.failures import batch_errors
from fleetgen_spark.spark.sink import UUID_PATTERN, discard_rows, log_discards
from fleetgen_spark.spark.tables import COMPANIES_HISTORY_SCHEMA, DISCARDED_SCHEMA, retry_conflicts, sql_path
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.logs import ensure_logging, get_logger, log_event

__all__ = ["CompaniesWriter"]

_log = get_logger("sink")

# SCD1: a company's row follows its newest version (a table from an older release may lack updated_at).
_SCD1 = (
    "MERGE INTO {table} t USING {view} s ON t.company_id = s.company_id "
    "WHEN MATCHED AND (t.updated_at IS NULL OR s.updated_at > t.updated_at) THEN UPDATE SET * "
    "WHEN NOT MATCHED THEN INSERT *"
)
# SCD1 of first versions only (no churn in the batch): a first version is a company's oldest, so a
# row already there is never older and the MATCHED clause above could never fire. Insert-only, Delta
# runs it as one anti join and an append (no pass to find the files to rewrite).
_SCD1_FIRST = "MERGE INTO {table} t USING {view} s ON t.company_id = s.company_id WHEN NOT MATCHED THEN INSERT *"
# SCD2: the staged rows are the new versions and the current rows they close; one commit does both.
_SCD2 = (
    "MERGE INTO {table} t USING {view} s ON t.company_id = s.company_id AND t.valid_from = s.valid_from "
    "WHEN MATCHED THEN UPDATE SET valid_to = s.valid_to, is_current = s.is_current "
    "WHEN NOT MATCHED THEN INSERT *"
)


# SCD2 of first versions only (no churn in the batch): insert what is not there yet.
_SCD2_FIRST = (
    "MERGE INTO {table} t USING {view} s ON t.company_id = s.company_id AND t.valid_from = s.valid_from "
    "WHEN NOT MATCHED THEN INSERT *"
)


@dataclass
class CompaniesWriter:
    """``foreachBatch`` target of the onboarding query: validate, then MERGE into companies and companies_history.

    Bad records are MERGEd into discarded_events on (source, record), so a replayed tick discards
    nothing twice. An inactive version of a known company is a change (company churn), not a bad
    record; ``inactive_company`` names a company whose *first* version is inactive.
    """

    layout: DataDir
    query: str = "companies"
    # (companies, newest version's instant) of the table, read once, then kept as this writer MERGEs.
    _summary: tuple[int, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def __call__(self, df: DataFrame, epoch: int) -> None:
        ensure_logging(self.layout)  # on Spark Connect this runs in a Python worker of the server
        with batch_errors(self.query, epoch):
            self._write(df, epoch)

    def _write(self, df: DataFrame, epoch: int) -> None:
        spark = df.sparkSession
        reason = (
            F.when(~F.col("company_id").rlike(UUID_PATTERN), F.lit("invalid_company_id"))
            .when(F.col("geography") != F.lit("US"), F.lit("invalid_geography"))
            .when(~F.col("active") & (F.col("updated_at") == F.col("created_at")), F.lit("inactive_company"))
        )
        checked = df.withColumn("_reason", reason)
        ok = F.col("_reason").isNull()
        valid = checked.filter(ok).drop("_reason")
        inserted = updated = versions = discarded = 0
        # One small job says whether there is anything to MERGE or to discard, whether any row is a
        # change of a known company (without churn none is, and both MERGEs skip their windows and
        # joins), and the newest version's instant.
        counts = checked.agg(
            F.count_if(ok).alias("rows"),
            F.count_if(ok & (F.col("updated_at") != F.col("created_at"))).alias("changes"),
            F.count_if(~ok).alias("invalid"),
            F.max(F.when(ok, F.coalesce("updated_at", "created_at"))).alias("newest"),
        ).collect()[0]
        total, newest = self._summary or self._read_summary(spark)
        if counts["rows"]:
            changes = bool(counts["changes"])
            inserted, updated = self._merge_current(spark, valid, epoch, changes)
            # First versions the SCD1 MERGE has just inserted cannot be in the history yet (it is
            # written after companies): a plain append, about half the cost of a MERGE.
            fresh = inserted if not changes and inserted == counts["rows"] else 0
            versions = self._merge_history(spark, valid, epoch, changes, fresh)
            # A version the MERGE did not apply is one the table holds, or an older one: the newest
            # instant is the batch's or the table's, whichever is later.
            total += inserted
            newest = max(v for v in (newest, counts["newest"]) if v is not None)
        self._summary = (total, newest)
        if counts["invalid"]:
            discarded = self._discard(spark, checked, epoch)
        if newest is not None:
            self.layout.update_state(
                last_company_batch=batch_id(newest),
                last_company_tick=iso(newest),
                company_count=total,
            )
        log_event(
            _log,
            "companies merged",
            epoch=epoch,
            inserted=inserted,
            updated=updated,
            versions=versions,
            discarded=discarded,
            total=total,
        )

    def _read_summary(self, spark: SparkSession) -> tuple[int, Any]:
        """(companies, newest version's instant) of the table; a new table's without a Spark job."""
        if self.layout.is_empty_table("companies"):
            return 0, None
        row = (
            spark.read.format("delta")
            .load(str(self.layout.table("companies")))
            .agg(F.count(F.lit(1)).alias("n"), F.max(F.coalesce("updated_at", "created_at")).alias("m"))
            .collect()[0]
        )
        return int(row["n"]), row["m"]

    def _merge_current(self, spark: SparkSession, valid: DataFrame, epoch: int, changes: bool) -> tuple[int, int]:
        """SCD1: the newest version of each company of the batch; return (inserted, updated) rows.

        Without ``changes`` every row is a company's first version, each company once.
        """
        latest = valid
        if changes:
            newest = Window.partitionBy("company_id").orderBy(F.col("updated_at").desc())
            latest = valid.withColumn("_n", F.row_number().over(newest)).filter(F.col("_n") == 1).drop("_n")
        view = f"fleetgen_companies_batch_{epoch}"
        latest.createOrReplaceTempView(view)
        merge = (_SCD1 if changes else _SCD1_FIRST).format(table=sql_path(self.layout, "companies"), view=view)
        metrics = retry_conflicts(lambda: spark.sql(merge).collect(), "merge companies")
        if not metrics:
            return 0, 0
        return int(metrics[0]["num_inserted_rows"]), int(metrics[0]["num_updated_rows"])

    def _merge_history(self, spark: SparkSession, valid: DataFrame, epoch: int, changes: bool, fresh: int) -> int:
        """SCD2: insert the versions newer than the history's, close the rows they supersede; return versions added.

        Without ``changes`` the rows are first versions: inserted when not there yet, nothing to close;
        ``fresh`` > 0 says all of them (that many) were new to companies, so none can be in the history.
        """
        columns = [f.name for f in COMPANIES_HISTORY_SCHEMA.fields]
        view = f"fleetgen_companies_history_{epoch}"
        if not changes:
            first = valid.select(
                *columns[:5],
                F.col("updated_at").alias("valid_from"),
                F.lit(None).cast("timestamp").alias("valid_to"),
                F.lit(True).alias("is_current"),
            )
            if fresh:
                table = str(self.layout.table("companies_history"))
                retry_conflicts(lambda: first.write.format("delta").mode("append").save(table), "append history")
                return fresh
            first.createOrReplaceTempView(view)
            merge = _SCD2_FIRST.format(table=sql_path(self.layout, "companies_history"), view=view)
            metrics = retry_conflicts(lambda: spark.sql(merge).collect(), "merge companies_history")
            return int(metrics[0]["num_inserted_rows"]) if metrics else 0
        history = spark.read.format("delta").load(str(self.layout.table("companies_history")))
        known = history.groupBy("company_id").agg(F.max("valid_from").alias("_known"))
        new = (
            valid.dropDuplicates(["company_id", "updated_at"])
            .join(known, on="company_id", how="left")
            .filter(F.col("_known").isNull() | (F.col("updated_at") > F.col("_known")))
            .drop("_known")
        )
        in_order = Window.partitionBy("company_id").orderBy("updated_at")
        following = F.lead("updated_at").over(in_order)
        versions = new.select(
            "company_id",
            "company_name",
            "geography",
            "active",
            "created_at",
            F.col("updated_at").alias("valid_from"),
            following.alias("valid_to"),
            following.isNull().alias("is_current"),
        )
        first_new = new.groupBy("company_id").agg(F.min("updated_at").alias("_first"))
        closed = (
            history.filter(F.col("is_current"))
            .join(first_new, on="company_id")
            .withColumn("valid_to", F.col("_first"))
            .withColumn("is_current", F.lit(False))
            .select(*columns)
        )
        versions.select(*columns).unionByName(closed).createOrReplaceTempView(view)
        merge = _SCD2.format(table=sql_path(self.layout, "companies_history"), view=view)
        metrics = retry_conflicts(lambda: spark.sql(merge).collect(), "merge companies_history")
        return int(metrics[0]["num_inserted_rows"]) if metrics else 0

    def _discard(self, spark: SparkSession, checked: DataFrame, epoch: int) -> int:
        rows = discard_rows(checked.filter(F.col("_reason").isNotNull()), "companies").collect()
        if not rows:
            return 0
        view = f"fleetgen_company_discards_{epoch}"
        spark.createDataFrame(rows, DISCARDED_SCHEMA).createOrReplaceTempView(view)
        merge = (
            f"MERGE INTO {sql_path(self.layout, 'discarded_events')} t USING {view} s "
            "ON t.source = s.source AND t.record = s.record WHEN NOT MATCHED THEN INSERT *"
        )
        retry_conflicts(lambda: spark.sql(merge).collect(), "merge company discards")
        log_discards(rows, "companies")
        return len(rows)
