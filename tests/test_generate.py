"""Pure generation (numpy in, Arrow out) of ``fleetgen_spark.core.generate``.

Only the two schema tests start Spark: parsing a DDL string into a StructType needs a JVM.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructType

from fleetgen_spark.core.columns import uuid_strings
from fleetgen_spark.core.company_rows import COMPANY_SCHEMA, company_batch, company_ids
from fleetgen_spark.core.config import EVENT_TYPES
from fleetgen_spark.core.generate import EVENT_SCHEMA, EventSpec, event_batches
from fleetgen_spark.core.schedule import BLOCK_SIZE
from fleetgen_spark.spark.companies import COMPANIES_SCHEMA_DDL
from fleetgen_spark.spark.source import EVENTS_SCHEMA_DDL

S = 1_762_610_400  # 2025-11-08T14:00:00Z, aligned to 15 minutes
QUARTER = 900
WEIGHTS = (0.40, 0.35, 0.25)
CHI2_999_2DOF = 13.816
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def make_spec(seed: int = 7, drivers: int = 10, rate: float = 3.5, weights: tuple[float, ...] = WEIGHTS) -> EventSpec:
    cumulative = tuple(float(x) for x in np.cumsum(weights))
    return EventSpec(seed, QUARTER, drivers, rate, cumulative)


def events(spec: EventSpec, start_s: int = S, block: int = 0, n_companies: int = 20, **kw: int) -> pa.Table:
    return pa.Table.from_batches(list(event_batches(spec, start_s, block, n_companies, **kw)), schema=EVENT_SCHEMA)


def test_event_schema_is_what_spark_expects_from_the_declared_ddl(spark: SparkSession) -> None:
    expected = to_arrow_schema(StructType.fromDDL(EVENTS_SCHEMA_DDL), timezone="UTC")
    assert EVENT_SCHEMA.equals(expected, check_metadata=True), f"{EVENT_SCHEMA}\n!=\n{expected}"


def test_company_schema_is_what_spark_expects_from_the_declared_ddl(spark: SparkSession) -> None:
    expected = to_arrow_schema(StructType.fromDDL(COMPANIES_SCHEMA_DDL), timezone="UTC")
    assert COMPANY_SCHEMA.equals(expected, check_metadata=True), f"{COMPANY_SCHEMA}\n!=\n{expected}"


@settings(max_examples=50, deadline=None, database=None)
@given(
    st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=0, max_size=40).filter(lambda v: len(v) % 2 == 0)
)
def test_uuid_strings_are_version_4(words: list[int]) -> None:
    raw = np.array(words, dtype=np.uint64).reshape(-1, 2)
    strings = uuid_strings(raw).to_pylist()
    assert len(strings) == raw.shape[0]
    for text in strings:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
        assert UUID4.match(text)


def test_uuid_strings_keep_the_random_bits() -> None:
    raw = np.array([[0x0123456789ABCDEF, 0xFEDCBA9876543210]], dtype=np.uint64)
    # Only the version nibble and the two variant bits are overwritten.
    assert uuid_strings(raw).to_pylist() == ["01234567-89ab-4def-bedc-ba9876543210"]


def test_same_inputs_give_identical_batches() -> None:
    spec = make_spec()
    first = events(spec)
    assert first.num_rows > 0
    assert first.equals(events(spec))
    assert first.schema.equals(EVENT_SCHEMA, check_metadata=True)


def test_other_seed_or_interval_gives_other_events() -> None:
    base = events(make_spec())
    assert not base.equals(events(make_spec(seed=8)))
    assert not base.equals(events(make_spec(), start_s=S + QUARTER))
    assert set(base.column("event_id").to_pylist()).isdisjoint(events(make_spec(seed=8)).column("event_id").to_pylist())


@pytest.mark.parametrize("max_rows", [1, 7, 100, 1000])
def test_slicing_never_changes_the_rows(max_rows: int) -> None:
    spec = make_spec()
    whole = events(spec, n_companies=BLOCK_SIZE, max_rows=10**6)
    sliced_batches = list(event_batches(spec, S, 0, BLOCK_SIZE, max_rows=max_rows))
    assert len(sliced_batches) > 1
    assert pa.Table.from_batches(sliced_batches).equals(whole)


def test_a_slice_exceeds_max_rows_by_at_most_one_driver() -> None:
    spec = make_spec(rate=20.0)
    for batch in event_batches(spec, S, 0, 10, max_rows=5):
        assert batch.num_rows > 0
        if batch.num_rows > 5:
            assert len(set(batch.column("driver_id").to_pylist())) == 1


def test_no_companies_means_no_batches() -> None:
    assert list(event_batches(make_spec(), S, 0, 0)) == []


def test_timestamps_lie_inside_the_interval() -> None:
    spec = make_spec(rate=50.0)
    table = events(spec, n_companies=BLOCK_SIZE)
    start = pa.scalar(S * 1_000_000, type=pa.timestamp("us", tz="UTC"))
    end = pa.scalar((S + QUARTER) * 1_000_000, type=pa.timestamp("us", tz="UTC"))
    ts = table.column("timestamp")
    assert pc.min(ts).as_py() >= start.as_py()
    assert pc.max(ts).as_py() < end.as_py()
    assert set(table.column("interval_start").to_pylist()) == {start.as_py()}
    assert set(table.column("interval_end").to_pylist()) == {end.as_py()}
    assert set(table.column("batch_id").to_pylist()) == {"20251108T140000Z"}


def test_counts_per_interval_follow_the_poisson_expectation() -> None:
    spec = make_spec(rate=3.5)
    n_drivers = BLOCK_SIZE * spec.drivers_per_company
    mean = n_drivers * spec.event_rate_per_driver
    counts = [events(spec, start_s=S + k * QUARTER, n_companies=BLOCK_SIZE).num_rows for k in range(12)]
    for count in counts:
        assert abs(count - mean) < 5 * mean**0.5, counts
    assert abs(sum(counts) - 12 * mean) < 5 * (12 * mean) ** 0.5
    assert len(set(counts)) > 1


def test_event_types_follow_the_weights() -> None:
    spec = make_spec(rate=5.0)
    observed: Counter[str] = Counter()
    for k in range(8):
        observed.update(events(spec, start_s=S + k * QUARTER, n_companies=BLOCK_SIZE).column("event_type").to_pylist())
    total = sum(observed.values())
    assert set(observed) == set(EVENT_TYPES)
    chi2 = sum((observed[name] - total * w) ** 2 / (total * w) for name, w in zip(EVENT_TYPES, WEIGHTS, strict=True))
    assert chi2 < CHI2_999_2DOF, (chi2, observed)


def test_zero_weight_event_types_never_occur() -> None:
    table = events(make_spec(weights=(0.0, 1.0, 0.0)), n_companies=BLOCK_SIZE)
    assert set(table.column("event_type").to_pylist()) == {"stopped driving"}


def test_driver_and_truck_ids() -> None:
    seed, drivers = 7, 10
    spec = make_spec(seed=seed, drivers=drivers)
    n_companies = 30
    ids = company_ids(seed, 0, n_companies).to_pylist()
    index = {cid: i for i, cid in enumerate(ids)}
    table = pa.concat_tables(events(spec, start_s=S + k * QUARTER, n_companies=n_companies) for k in range(3))
    truck_of: dict[str, str] = {}
    pattern = re.compile(r"^DRV-(?P<company>[0-9a-f-]{36})-(?P<seq>\d{3})$")
    for driver, company, truck in zip(
        table.column("driver_id").to_pylist(),
        table.column("company_id").to_pylist(),
        table.column("truck_id").to_pylist(),
        strict=True,
    ):
        match = pattern.match(driver)
        assert match, driver
        assert match["company"] == company
        seq = int(match["seq"])
        assert 0 <= seq < drivers
        assert truck == f"TRK-{seed}-{index[company] * drivers + seq:04d}"
        # A driver keeps its truck across intervals.
        assert truck_of.setdefault(driver, truck) == truck
    assert len(truck_of) == n_companies * drivers


def test_blocks_further_on_use_their_own_companies_and_trucks() -> None:
    seed, drivers = 7, 2
    table = events(make_spec(seed=seed, drivers=drivers), block=2, n_companies=5)
    assert set(table.column("company_id").to_pylist()) <= set(company_ids(seed, 200, 5).to_pylist())
    trucks = {int(t.rsplit("-", 1)[1]) for t in table.column("truck_id").to_pylist()}
    assert trucks <= set(range(200 * drivers, 205 * drivers))


def test_event_ids_are_unique_uuids() -> None:
    table = pa.concat_tables(events(make_spec(), start_s=S + k * QUARTER, n_companies=BLOCK_SIZE) for k in range(3))
    event_ids = table.column("event_id").to_pylist()
    assert len(set(event_ids)) == len(event_ids)
    assert all(uuid.UUID(e).version == 4 for e in event_ids[:500])


def test_company_ids_are_unique_and_stable_for_a_seed() -> None:
    ids = company_ids(42, 0, 250).to_pylist()
    assert len(set(ids)) == 250
    assert all(uuid.UUID(c).version == 4 for c in ids)
    assert company_ids(42, 0, 250).to_pylist() == ids
    # Any cut of the index range gives the same ids: they depend on (seed, index) only.
    assert company_ids(42, 0, 120).to_pylist() + company_ids(42, 120, 130).to_pylist() == ids
    assert company_ids(42, 99, 3).to_pylist() == ids[99:102]
    assert company_ids(42, 5, 0).to_pylist() == []


def test_company_ids_differ_for_another_seed() -> None:
    assert set(company_ids(42, 0, 100).to_pylist()).isdisjoint(company_ids(43, 0, 100).to_pylist())


def test_company_batch() -> None:
    batch = company_batch(42, 98, 4, S)
    assert batch.schema.equals(COMPANY_SCHEMA, check_metadata=True)
    assert batch.num_rows == 4
    assert batch.column("company_id").to_pylist() == company_ids(42, 98, 4).to_pylist()
    assert set(batch.column("geography").to_pylist()) == {"US"}
    assert set(batch.column("active").to_pylist()) == {True}
    created = pa.scalar(S * 1_000_000, type=pa.timestamp("us", tz="UTC")).as_py()
    assert set(batch.column("created_at").to_pylist()) == {created}
    assert all(
        name.split()[-1] in {"Logistics", "Freight", "Transport", "Trucking", "Haulers", "Carriers", "Express", "Lines"}
        for name in batch.column("company_name").to_pylist()
    )
    # Names, like ids, depend on (seed, index) only.
    assert (
        batch.column("company_name").to_pylist()
        == (company_batch(42, 90, 20, S + 3600).column("company_name").to_pylist()[8:12])
    )
