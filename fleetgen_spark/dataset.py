"""What a data directory remembers about its simulation: seed, start and onboarding changes."""

from __future__ import annotations

import json
from pathlib import Path

from fleetgen_spark.options import SourceOptions
from fleetgen_spark.schedule import OnboardingPlan, Segment

__all__ = ["load_segments", "onboarding_plan", "segments_path"]


def segments_path(data_dir: Path) -> Path:
    return data_dir / "manifests" / "onboarding.json"


def load_segments(data_dir: Path) -> tuple[Segment, ...]:
    """The recorded onboarding segments of a data directory (empty if none yet)."""
    path = segments_path(data_dir)
    if not path.is_file():
        return ()
    return tuple(Segment(**seg) for seg in json.loads(path.read_text(encoding="utf-8"))["segments"])


def onboarding_plan(options: SourceOptions, sim_start_s: int) -> OnboardingPlan:
    """The plan both sources use: the data directory's record if there is one, else the config."""
    if options.data_dir is not None:
        segments = load_segments(options.data_dir)
        if segments:
            return OnboardingPlan(segments)
    return OnboardingPlan.from_config(options.config, sim_start_s)
