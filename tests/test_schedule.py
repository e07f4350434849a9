"""The onboarding schedule of ``fleetgen_spark.core.schedule``: who exists when."""

from __future__ import annotations

import pytest

from fleetgen_spark import load_config
from fleetgen_spark.core.schedule import BLOCK_SIZE, OnboardingPlan, Segment, Tick, blocks

S = 1_762_610_400  # 2025-11-08T14:00:00Z
MIN = 60
HALF_HOUR = 30 * MIN
HOUR = 60 * MIN


def cadence_plan() -> OnboardingPlan:
    """Start S, PT30M, two companies per tick, five in all."""
    return OnboardingPlan.from_config(
        load_config("small", companies_per_onboarding=2, number_of_companies=5, company_onboarding_interval="PT30M"),
        S,
    )


def test_plan_from_config_is_one_segment_at_start() -> None:
    plan = cadence_plan()
    assert plan.start == S
    assert plan.segments == (Segment(S, 5, 2, HALF_HOUR),)


def test_cadence_ticks_until_the_fleet_is_complete() -> None:
    ticks = list(cadence_plan().ticks(S, S + 24 * HOUR))
    assert ticks == [Tick(S, 0, 2), Tick(S + HALF_HOUR, 2, 2), Tick(S + HOUR, 4, 1)]


def test_ticks_respect_the_half_open_window() -> None:
    plan = cadence_plan()
    assert list(plan.ticks(S, S)) == []
    assert list(plan.ticks(S, S + 1)) == [Tick(S, 0, 2)]
    assert list(plan.ticks(S + 1, S + HALF_HOUR)) == []
    assert list(plan.ticks(S + 1, S + HALF_HOUR + 1)) == [Tick(S + HALF_HOUR, 2, 2)]
    assert list(plan.ticks(S + HOUR + 1, S + 100 * HOUR)) == []
    assert list(plan.ticks(S - HOUR, S)) == []


def test_windows_cut_anywhere_give_the_same_ticks() -> None:
    plan = cadence_plan()
    whole = list(plan.ticks(S - HOUR, S + 5 * HOUR))
    for cut in range(S - HOUR, S + 5 * HOUR, 7 * MIN):
        assert list(plan.ticks(S - HOUR, cut)) + list(plan.ticks(cut, S + 5 * HOUR)) == whole


def test_onboarded_before_counts_companies_created_strictly_before() -> None:
    plan = cadence_plan()
    assert plan.onboarded_before(S - HOUR) == 0
    assert plan.onboarded_before(S) == 0
    assert plan.onboarded_before(S + 1) == 2
    assert plan.onboarded_before(S + HALF_HOUR) == 2
    assert plan.onboarded_before(S + HALF_HOUR + 1) == 4
    assert plan.onboarded_before(S + HOUR) == 4
    assert plan.onboarded_before(S + HOUR + 1) == 5
    assert plan.onboarded_before(S + 1000 * HOUR) == 5


def test_company_created_at_s_is_eligible_from_the_next_interval() -> None:
    """created_at < interval_start: the interval starting at S has no one yet, S+15m has the first tick."""
    plan = cadence_plan()
    assert plan.onboarded_before(S) == 0
    assert plan.onboarded_before(S + 15 * MIN) == 2


def test_one_tick_when_companies_per_onboarding_is_the_default() -> None:
    plan = OnboardingPlan.from_config(load_config("small"), S)
    assert list(plan.ticks(S, S + 10 * HOUR)) == [Tick(S, 0, 5)]


def test_next_tick() -> None:
    plan = cadence_plan()
    assert plan.next_tick(S - 5 * HOUR) == Tick(S, 0, 2)
    assert plan.next_tick(S) == Tick(S, 0, 2)
    assert plan.next_tick(S + 1) == Tick(S + HALF_HOUR, 2, 2)
    assert plan.next_tick(S + HOUR) == Tick(S + HOUR, 4, 1)
    assert plan.next_tick(S + HOUR + 1) is None


def test_raising_the_fleet_size_later_onboards_only_the_difference() -> None:
    plan = OnboardingPlan((Segment(S, 5, 2, HALF_HOUR), Segment(S + 2 * HOUR, 8, 2, HALF_HOUR)))
    assert list(plan.ticks(S, S + 24 * HOUR)) == [
        Tick(S, 0, 2),
        Tick(S + HALF_HOUR, 2, 2),
        Tick(S + HOUR, 4, 1),
        Tick(S + 2 * HOUR, 5, 2),
        Tick(S + 2 * HOUR + HALF_HOUR, 7, 1),
    ]
    assert plan.onboarded_before(S + 2 * HOUR) == 5
    assert plan.onboarded_before(S + 2 * HOUR + 1) == 7
    assert plan.onboarded_before(S + 24 * HOUR) == 8
    assert plan.next_tick(S + HOUR + 1) == Tick(S + 2 * HOUR, 5, 2)


def test_a_change_takes_over_an_unfinished_schedule_on_its_own_cadence() -> None:
    plan = OnboardingPlan((Segment(S, 10, 2, HOUR), Segment(S + 2 * HOUR, 10, 5, HALF_HOUR)))
    assert list(plan.ticks(S, S + 24 * HOUR)) == [
        Tick(S, 0, 2),
        Tick(S + HOUR, 2, 2),
        Tick(S + 2 * HOUR, 4, 5),
        Tick(S + 2 * HOUR + HALF_HOUR, 9, 1),
    ]
    # Earlier ticks keep their companies.
    assert list(plan.ticks(S, S + 2 * HOUR)) == list(OnboardingPlan((Segment(S, 10, 2, HOUR),)).ticks(S, S + 2 * HOUR))


def test_lowering_the_fleet_size_never_removes_a_company() -> None:
    plan = OnboardingPlan((Segment(S, 5, 5, HOUR), Segment(S + 2 * HOUR, 3, 1, HOUR)))
    assert plan.onboarded_before(S + 10 * HOUR) == 5
    assert list(plan.ticks(S + HOUR, S + 10 * HOUR)) == []


def test_segment_round_trips_through_a_dict() -> None:
    segment = Segment.from_config(load_config("base"), S)
    assert segment == Segment(S, 100, 100, HOUR)
    assert Segment(**segment.to_dict()) == segment


@pytest.mark.parametrize(
    ("n_companies", "expected"),
    [
        (0, []),
        (1, [(0, 0, 1)]),
        (BLOCK_SIZE, [(0, 0, BLOCK_SIZE)]),
        (BLOCK_SIZE + 1, [(0, 0, BLOCK_SIZE), (1, BLOCK_SIZE, 1)]),
        (250, [(0, 0, 100), (1, 100, 100), (2, 200, 50)]),
    ],
)
def test_blocks(n_companies: int, expected: list[tuple[int, int, int]]) -> None:
    assert BLOCK_SIZE == 100
    assert list(blocks(n_companies)) == expected


def test_blocks_cover_every_company_once() -> None:
    covered = [first + i for _, first, count in blocks(1234) for i in range(count)]
    assert covered == list(range(1234))
