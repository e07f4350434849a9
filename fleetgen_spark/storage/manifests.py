"""JSON files on a local disk: written atomically, read leniently (tests and local tools use these;
the package reads and writes a data directory's files through :class:`fleetgen_spark.storage.datadir.DataDir`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fleetgen_spark.storage.backends import write_text_atomic

__all__ = ["read_json", "write_json_atomic"]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON object atomically (see :func:`fleetgen_spark.storage.backends.write_text_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """The object in a JSON file, or {} when there is none yet."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}
