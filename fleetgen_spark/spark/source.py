"""The ``fleetgen`` data source: driver events in intervals, generated on the executors."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
from pyspark.sql.datasource import DataSource, DataSourceReader, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadLimit, ReadMaxRows, SupportsTriggerAvailableNow
from pyspark.sql.types import StructType

from fleetgen_spark.core.churn import churn_of
from fleetgen_spark.core.clock import epoch_seconds, parse_instant
from fleetgen_spark.core.config import Config
from fleetgen_spark.core.exceptions import OptionError
from fleetgen_spark.core.generate import EventSpec, event_batches
from fleetgen_spark.core.messy import delivered_batches, lookback
from fleetgen_spark.core.options import SourceOptions, parse_options
from fleetgen_spark.core.schedule import BLOCK_SIZE, OnboardingPlan, blocks
from fleetgen_spark.spark.offsets import ClockedOffsets, interval_range, max_steps
from fleetgen_spark.storage.dataset import event_shapes, onboarding_plan

__all__ = [
    "EVENTS_SCHEMA_DDL",
    "EventPartition",
    "EventUnit",
    "FleetgenBatchReader",
    "FleetgenDataSource",
    "FleetgenStreamReader",
    "delivery_reach",
    "event_spec",
    "event_specs",
    "group_units",
]

EVENTS_SCHEMA_DDL = (
    "event_id STRING NOT NULL, driver_id STRING NOT NULL, company_id STRING NOT NULL, truck_id STRING, "
    "event_type STRING NOT NULL, timestamp TIMESTAMP NOT NULL, batch_id STRING NOT NULL, "
    "interval_start TIMESTAMP NOT NULL, interval_end TIMESTAMP NOT NULL"
)


@dataclass(frozen=True)
class EventUnit:
    """One block of companies in one interval: the unit of generation and determinism."""

    interval_start_s: int
    block: int
    n_companies: int
    spec: EventSpec
    # (interval start, companies of the block, spec) of earlier intervals whose late or re-sent
    # events may be delivered in this one (messy streams only; empty while the knobs are off).
    earlier: tuple[tuple[int, int, EventSpec], ...] = ()


class EventPartition(InputPartition):
    """A group of units; read() depends on nothing else."""

    def __init__(self, units: tuple[EventUnit, ...]) -> None:
        super().__init__(None)
        self.units = units

    def __repr__(self) -> str:
        return f"EventPartition(units={len(self.units)})"


def group_units(units: Sequence[Any], weights: Sequence[int], n_partitions: int) -> list[tuple[Any, ...]]:
    """Cut units into at most ``n_partitions`` contiguous groups of about equal weight."""
    if not units:
        return []
    total = sum(weights)
    target = max(1, -(-total // max(1, n_partitions)))
    groups: list[tuple[Any, ...]] = []
    current: list[Any] = []
    acc = 0
    for unit, weight in zip(units, weights, strict=True):
        current.append(unit)
        acc += weight
        if acc >= target and len(groups) < n_partitions - 1:
            groups.append(tuple(current))
            current, acc = [], 0
    if current:
        groups.append(tuple(current))
    return groups


def event_spec(config: Config, seed: int, truck_drivers: int | None = None) -> EventSpec:
    """What the generation of a block depends on, from a config and a seed (and the drivers_per_company
    that numbers the trucks, when it has changed since the data directory began)."""
    weights = list(config.event_type_weights.values())
    cumulative = tuple(float(sum(weights[: i + 1])) for i in range(len(weights)))
    drivers = config.drivers_per_company
    return EventSpec(
        seed,
        config.interval_seconds,
        drivers,
        config.event_rate_per_driver,
        cumulative,
        None if truck_drivers in (None, drivers) else truck_drivers,
        late_fraction=config.late_fraction,
        max_lateness_s=config.max_lateness_seconds,
        duplicate_fraction=config.duplicate_fraction,
        bad_record_fraction=config.bad_record_fraction,
        event_model=config.event_model,
    )


def event_specs(options: SourceOptions, seed: int, plan: OnboardingPlan | None = None) -> Callable[[int], EventSpec]:
    """The spec in force for an interval starting at ``t``: the data directory's recorded changes.

    ``plan`` (the onboarding plan) carries company churn into the specs; without it no company is
    ever inactive.
    """
    shapes = event_shapes(options)
    truck_drivers = shapes[0][1].drivers_per_company
    churn = None if plan is None else churn_of(options.config.company_churn_rate, plan)
    specs = [(start, replace(event_spec(config, seed, truck_drivers), churn=churn)) for start, config in shapes]

    def at(t: int) -> EventSpec:
        for start, spec in reversed(specs):
            if start <= t:
                return spec
        return specs[0][1]

    return at


def delivery_reach(options: SourceOptions, seed: int) -> int:
    """How many intervals back a delivery looks for late and re-sent events (0 while the knobs are off)."""
    return max(lookback(event_spec(config, seed)) for _, config in event_shapes(options))


def _earlier(
    plan: OnboardingPlan, spec_at: Callable[[int], EventSpec], t: int, block: int, reach: int, interval_s: int
) -> tuple[tuple[int, int, EventSpec], ...]:
    """The earlier (interval, companies, spec) of a block that can deliver into the interval at ``t``."""
    found = []
    for step in range(reach, 0, -1):
        start = t - step * interval_s
        companies = max(0, min(BLOCK_SIZE, plan.onboarded_before(start) - block * BLOCK_SIZE))
        spec = spec_at(start)
        if companies and lookback(spec):
            found.append((start, companies, spec))
    return tuple(found)


class _EventPlanner:
    """Turns a range of intervals into partitions; shared by the batch and stream readers."""

    def __init__(self, options: SourceOptions) -> None:
        self.options = options

    def partitions(self, seed: int, sim_start_s: int, from_s: int, to_s: int) -> list[EventPartition]:
        cfg = self.options.config
        plan = onboarding_plan(self.options, sim_start_s)
        spec_at = event_specs(self.options, seed, plan)
        reach = delivery_reach(self.options, seed)
        step = cfg.interval_seconds
        units = [
            EventUnit(t, block, n, spec_at(t), _earlier(plan, spec_at, t, block, reach, step) if reach else ())
            for t in range(from_s, to_s, step)
            for block, _, n in blocks(plan.onboarded_before(t))
        ]
        n_partitions = self.options.num_partitions or os.cpu_count() or 1
        weights = [u.n_companies * u.spec.drivers_per_company for u in units]
        return [EventPartition(g) for g in group_units(units, weights, n_partitions)]


def read_events(partition: InputPartition) -> Iterator[pa.RecordBatch]:
    """Generate a partition's events as Arrow record batches."""
    if not isinstance(partition, EventPartition):
        raise TypeError(f"fleetgen cannot read partition {partition!r}")
    for unit in partition.units:
        if unit.spec.messy or unit.earlier:
            yield from delivered_batches(unit.spec, unit.interval_start_s, unit.block, unit.n_companies, unit.earlier)
        else:
            yield from event_batches(unit.spec, unit.interval_start_s, unit.block, unit.n_companies)


class FleetgenStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Micro-batches of whole intervals, as the clock closes them."""

    def __init__(self, options: SourceOptions) -> None:
        self.options = options
        self.offsets = ClockedOffsets(options)
        self.planner = _EventPlanner(options)

    def initialOffset(self) -> dict[str, Any]:
        return self.offsets.initial()

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.options.max_intervals_per_trigger)

    def latestOffset(self, start: dict[str, Any], limit: ReadLimit) -> dict[str, Any]:
        return self.offsets.latest(start, max_steps(limit))

    def reportLatestOffset(self) -> dict[str, Any] | None:
        return self.offsets.report()

    def prepareForTriggerAvailableNow(self) -> None:
        self.offsets.prepare_available_now()

    def partitions(self, start: dict[str, Any], end: dict[str, Any]) -> Sequence[InputPartition]:
        from_s, to_s = interval_range(start, end)
        sim_start = epoch_seconds(parse_instant(end["start"], "offset"))
        return self.planner.partitions(int(end["seed"]), sim_start, from_s, to_s)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        return read_events(partition)

    def commit(self, end: dict[str, Any]) -> None:
        """Nothing to release: the data is a pure function of the offsets."""


class FleetgenBatchReader(DataSourceReader):
    """A finite range ``[start, end)`` read with ``spark.read``."""

    def __init__(self, options: SourceOptions) -> None:
        if options.start is None or options.end is None:
            raise OptionError("spark.read.format('fleetgen') needs options 'start' and 'end' (ISO-8601 UTC)")
        self.planner = _EventPlanner(options)
        self.seed = int(ClockedOffsets(options).initial()["seed"])
        self.start_s, self.end_s = epoch_seconds(options.start), epoch_seconds(options.end)

    def partitions(self) -> Sequence[InputPartition]:
        # Spark turns an empty list into InputPartition(None), which read() cannot take:
        # a range with nobody eligible yet is one partition with nothing to generate.
        parts = self.planner.partitions(self.seed, self.start_s, self.start_s, self.end_s)
        return parts or [EventPartition(())]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        return read_events(partition)


class FleetgenDataSource(DataSource):
    """Realistic, reproducible trucking driver events, one micro-batch per closed interval.

    Name: ``fleetgen``. Every eligible driver (of a company with ``created_at <
    interval_start``) emits Poisson(``event_rate_per_driver``) events per interval at
    uniform times inside ``[interval_start, interval_end)``. With ``event_model=shift``
    drivers work legal shifts instead (README "Driver shifts"): at least 10 h off between
    shifts, at most 11 h driving and 14 h on duty; ``start driving`` and ``stopped driving``
    alternate, ``delivered`` only while stopped; ``event_rate_per_driver`` is the mean events
    per interval while on duty, and of ``event_type_weights`` only the ``delivered`` weight
    applies (the share of deliveries; starts and stops take half of the rest each). The rows
    are a pure function of (config, seed, interval): the number of partitions, cores or
    micro-batches never changes them.

    Options (all strings; names are case-insensitive):

    ========================= ========== ============ ===========================================
    option                    type       default      meaning and allowed values
    ========================= ========== ============ ===========================================
    config                    name/path  base         preset in conf/ (base, small, scaling) or YAML
    <any config field>        as config  from config  overrides the file, e.g. drivers_per_company
    start                     ISO-8601   now          simulation start, aligned down to interval
    end                       ISO-8601   none         exclusive end; required with speedup=max
    speedup                   1, N, max  1            1 wall clock, N>1 simulated, max no pacing
    maxIntervalsPerTrigger    int >= 1   1            intervals per micro-batch (catch-up)
    numPartitions             1..10000   CPU count    Spark partitions per micro-batch
    dataDir                   path       none         a fleetgen data directory: the onboarding and
                                                      event-shape changes recorded there apply
    resumeFrom                ISO-8601   none         where a query without a checkpoint begins
                                                      (the pipeline sets it from delta/batches)
    clockAnchor               inst@secs  none         simulated time at a wall-clock instant
                                                      (<ISO-8601>@<epoch s>), shared by queries
    ========================= ========== ============ ===========================================

    The config fields are seed, number_of_companies, drivers_per_company,
    event_rate_per_driver, company_onboarding_interval, companies_per_onboarding,
    interval, event_type_weights (JSON or YAML mapping), event_model (``independent``, the
    default, or ``shift``; README "Driver shifts") and the realism knobs late_fraction,
    max_lateness, duplicate_fraction and bad_record_fraction (all 0 by default; README "Messy
    streams": late and re-sent events arrive in a later micro-batch within max_lateness, bad
    records carry one defect each), and company_churn_rate (0 by default; README "Living
    entities": the drivers of a company inactive at an interval's start emit nothing in it).
    Offsets are JSON:
    ``{"start": "...Z", "next": "...Z", "seed": 42}``. Without a seed the query draws one
    when it first starts and keeps it in its offsets. Supports ``Trigger.AvailableNow``.

    Schema: event_id, driver_id, company_id (strings, not null), truck_id (string),
    event_type (string, not null), timestamp (timestamp, not null), batch_id (string,
    ``YYYYMMDDTHHMMSSZ``), interval_start, interval_end (timestamps, not null).

    Example::

        import fleetgen_spark
        spark = fleetgen_spark.spark_session()
        events = (spark.readStream.format("fleetgen")
                  .option("config", "small").option("speedup", "600").load())
        query = events.writeStream.format("console").start()
    """

    @classmethod
    def name(cls) -> str:
        return "fleetgen"

    def schema(self) -> str:
        return EVENTS_SCHEMA_DDL

    def reader(self, schema: StructType) -> DataSourceReader:
        return FleetgenBatchReader(parse_options(self.options))

    def streamReader(self, schema: StructType) -> DataSourceStreamReader:
        return FleetgenStreamReader(parse_options(self.options))
