"""What a streaming query's checkpoint says about a micro-batch: Spark's offset log, read as written.

Spark writes ``offsets/<epoch>`` before it runs a micro-batch: a version line, the batch metadata,
then one line per source (our offsets are JSON ``{"start", "next", "seed", ...}``). It is the exact
range the source was asked for, empty intervals included.
"""

from __future__ import annotations

import json
from typing import Any

from fleetgen_spark.core.clock import epoch_seconds, parse_instant
from fleetgen_spark.storage.datadir import DataDir

__all__ = ["epoch_range", "offset"]


def offset(data_dir: DataDir, query: str, epoch: int) -> dict[str, Any]:
    """Our source's end offset of ``epoch``, from the offset log of ``query``'s checkpoint."""
    lines = data_dir.checkpoint_offset_lines(query, epoch)
    return dict(json.loads(lines[2]))


def epoch_range(data_dir: DataDir, query: str, epoch: int) -> tuple[int, int]:
    """The ``[from, to)`` epoch seconds a micro-batch covers.

    The first micro-batch of a query starts at its initial offset, which Spark does not log: the
    offsets carry it as ``from`` (older checkpoints, without it, began at the simulation ``start``).
    """
    end = offset(data_dir, query, epoch)
    first = end.get("from", end["start"])
    previous = offset(data_dir, query, epoch - 1)["next"] if epoch > 0 else first
    return epoch_seconds(parse_instant(previous, "offset")), epoch_seconds(parse_instant(end["next"], "offset"))
