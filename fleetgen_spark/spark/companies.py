"""The ``fleetgen_companies`` data source: one micro-batch per onboarding tick."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
from pyspark.sql.datasource import DataSource, DataSourceReader, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadLimit, ReadMaxRows, SupportsTriggerAvailableNow
from pyspark.sql.types import StructType

from fleetgen_spark.core.churn import Churn, churn_of
from fleetgen_spark.core.clock import epoch_seconds, from_epoch, iso, parse_instant
from fleetgen_spark.core.company_rows import company_batch
from fleetgen_spark.core.exceptions import OptionError
from fleetgen_spark.core.options import SourceOptions, parse_options
from fleetgen_spark.core.schedule import OnboardingPlan, Tick
from fleetgen_spark.spark.offsets import ClockedOffsets, interval_range, max_steps
from fleetgen_spark.storage.dataset import onboarding_plan

__all__ = ["COMPANIES_SCHEMA_DDL", "CompanyPartition", "FleetgenCompaniesDataSource", "company_partitions"]

COMPANIES_SCHEMA_DDL = (
    "company_id STRING NOT NULL, company_name STRING NOT NULL, geography STRING NOT NULL, "
    "active BOOLEAN NOT NULL, created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL"
)


class CompanyPartition(InputPartition):
    """The ticks one task generates (and the churn that changes companies on them)."""

    def __init__(self, seed: int, ticks: tuple[Tick, ...], churn: Churn | None = None) -> None:
        super().__init__(None)
        self.seed = seed
        self.ticks = ticks
        self.churn = churn

    def __repr__(self) -> str:
        return f"CompanyPartition(ticks={len(self.ticks)})"


def company_ticks(options: SourceOptions, plan: OnboardingPlan, from_s: int, to_s: int) -> list[Tick]:
    """The ticks in ``[from_s, to_s)`` that emit companies: those that onboard someone, and with company
    churn every onboarding instant (companies change after the fleet is complete too)."""
    if options.config.company_churn_rate > 0:
        return list(plan.cadence(from_s, to_s))
    return list(plan.ticks(from_s, to_s))


def company_partitions(
    options: SourceOptions, seed: int, sim_start_s: int, from_s: int, to_s: int
) -> list[CompanyPartition]:
    """One partition holding the ticks in ``[from_s, to_s)`` (companies are few: one task is plenty)."""
    plan = onboarding_plan(options, sim_start_s)
    ticks = tuple(company_ticks(options, plan, from_s, to_s))
    churn = churn_of(options.config.company_churn_rate, plan)
    return [CompanyPartition(seed, ticks, churn)] if ticks else []


def read_companies(partition: InputPartition) -> Iterator[pa.RecordBatch]:
    if not isinstance(partition, CompanyPartition):
        raise TypeError(f"fleetgen_companies cannot read partition {partition!r}")
    for tick in partition.ticks:
        yield company_batch(partition.seed, tick.first, tick.count, tick.time, partition.churn)


class CompaniesStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Offsets like the events source; ``next`` is the first instant whose ticks are pending."""

    def __init__(self, options: SourceOptions) -> None:
        self.options = options
        self.offsets = ClockedOffsets(options)

    def initialOffset(self) -> dict[str, Any]:
        return self.offsets.initial()

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.options.max_intervals_per_trigger)  # ticks per micro-batch, 1 by default

    def latestOffset(self, start: dict[str, Any], limit: ReadLimit) -> dict[str, Any]:
        available = epoch_seconds(self.offsets.available(start))
        nxt = epoch_seconds(parse_instant(start["next"], "offset"))
        plan = onboarding_plan(self.options, epoch_seconds(parse_instant(start["start"], "offset")))
        # A tick at T is due once the clock reaches T: ticks in [next, available] are pending,
        # except one at `end`, which is exclusive (as in the batch reader).
        due_before = available + 1
        if self.options.end is not None:
            due_before = min(due_before, epoch_seconds(self.options.end))
        pending = company_ticks(self.options, plan, nxt, due_before)
        steps = max_steps(limit)
        if steps is not None:
            pending = pending[:steps]
        if not pending:
            return start
        return {**start, "next": iso(from_epoch(pending[-1].time + 1))}

    def prepareForTriggerAvailableNow(self) -> None:
        self.offsets.prepare_available_now()

    def partitions(self, start: dict[str, Any], end: dict[str, Any]) -> Sequence[InputPartition]:
        from_s, to_s = interval_range(start, end)
        sim_start = epoch_seconds(parse_instant(end["start"], "offset"))
        return company_partitions(self.options, int(end["seed"]), sim_start, from_s, to_s)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        return read_companies(partition)

    def commit(self, end: dict[str, Any]) -> None:
        """Nothing to release: the data is a pure function of the offsets."""


class CompaniesBatchReader(DataSourceReader):
    """The companies onboarded by ticks in ``[start, end)``; ``start`` anchors the schedule."""

    def __init__(self, options: SourceOptions) -> None:
        if options.start is None or options.end is None:
            raise OptionError("spark.read.format('fleetgen_companies') needs options 'start' and 'end' (ISO-8601 UTC)")
        self.options = options
        self.seed = int(ClockedOffsets(options).initial()["seed"])
        self.start_s, self.end_s = epoch_seconds(options.start), epoch_seconds(options.end)

    def partitions(self) -> Sequence[InputPartition]:
        # Spark turns an empty list into InputPartition(None), which read() cannot take.
        parts = company_partitions(self.options, self.seed, self.start_s, self.start_s, self.end_s)
        return parts or [CompanyPartition(self.seed, ())]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        return read_companies(partition)


class FleetgenCompaniesDataSource(DataSource):
    """Companies onboarding on their cadence: one micro-batch per onboarding tick.

    Name: ``fleetgen_companies``. Takes the same options as ``fleetgen`` (config fields,
    ``config``, ``start``, ``end``, ``speedup``, ``dataDir``; see ``FleetgenDataSource``);
    ``maxIntervalsPerTrigger`` is the most ticks per micro-batch (default 1: one micro-batch per
    tick; a catch-up may take more), ``numPartitions`` is accepted and ignored (one task). A
    tick at ``start + k * company_onboarding_interval`` onboards ``companies_per_onboarding``
    companies until ``number_of_companies`` is reached.

    With ``company_churn_rate`` > 0 every onboarding instant (also once the fleet is complete)
    emits, after the companies it onboards, the new versions of the companies that change then:
    deactivated, reactivated or renamed (README "Company churn").

    Schema: company_id (UUID string, stable for a seed), company_name, geography ("US"),
    active (true for a new company), created_at (its first tick), updated_at (the tick of this
    version; equals created_at for a new company).

    Example::

        companies = (spark.readStream.format("fleetgen_companies")
                     .option("config", "small").option("speedup", "600").load())
    """

    @classmethod
    def name(cls) -> str:
        return "fleetgen_companies"

    def schema(self) -> str:
        return COMPANIES_SCHEMA_DDL

    def reader(self, schema: StructType) -> DataSourceReader:
        return CompaniesBatchReader(parse_options(self.options, source="fleetgen_companies"))

    def streamReader(self, schema: StructType) -> DataSourceStreamReader:
        return CompaniesStreamReader(parse_options(self.options, source="fleetgen_companies"))
