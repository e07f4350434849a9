"""Exactly-once Delta appends from ``foreachBatch``, marked in each commit's ``userMetadata``.

Spark replays a micro-batch after a crash with the same epoch and offsets, and our sources
make the same rows from the same offsets, so it is enough to know whether the first attempt
committed. Every append is tagged ``<app_id>/<epoch>`` in Delta's ``userMetadata`` (shown
by ``DESCRIBE HISTORY``), and a replay looks for its tag among the table's commits before
writing.

Why not Delta's own ``txnAppId``/``txnVersion``: with Delta 4.4.0 every such append looks
its application's version up in the table's rebuilt state (``Snapshot.setTransactions``
reads the computed state, not the checksum file): three more Spark jobs per append.
``benchmarks/probe_append.py`` measured 0.5-0.9 s per small append with the txn options
against 0.21-0.26 s without on 2 cores; the events query appends twice per micro-batch, so
that was about 1 s of the 2 s a live interval took. The tag costs a read of small JSON files.

The tag is safe because each ``app_id`` has one writer at a time: it names a streaming
query by its checkpoint's id, and Spark refuses a second run of a checkpoint (the offset
log is written with create-if-absent). Micro-batches commit in epoch order, so the scan
stops at the first commit of its own query that is older than the epoch asked for.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame

__all__ = ["Commit", "append_once", "find_commit", "has_commits", "marker"]

# A commit file: 20 digits and ".json" (checksums, checkpoints and compactions are other names).
_COMMIT_FILE = re.compile(r"^\d{20}\.json$")


@dataclass(frozen=True)
class Commit:
    """One of our commits: its table version and the rows it appended."""

    version: int
    rows: int


def marker(app_id: str, epoch: int) -> str:
    """The ``userMetadata`` of the append of ``epoch`` by ``app_id``."""
    return f"{app_id}/{epoch}"


def _commit_info(path: Path) -> dict[str, Any]:
    # Delta writes commitInfo first; read on until it is found (other writers may not).
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            action = json.loads(line) if line.strip() else {}
            if "commitInfo" in action:
                return dict(action["commitInfo"])
    return {}


def _commit_files(table: Path) -> list[Path]:
    """The commit files of ``table``'s Delta log, newest first (none when it has no log)."""
    log = table / "_delta_log"
    if not log.is_dir():
        return []
    return sorted((p for p in log.iterdir() if _COMMIT_FILE.match(p.name)), reverse=True)


def has_commits(table: Path) -> bool:
    """Whether ``table`` is a Delta table with at least one commit."""
    return bool(_commit_files(table))


def find_commit(table: Path, app_id: str, epoch: int) -> Commit | None:
    """The commit in which ``app_id`` appended ``epoch`` to ``table``, or None if it has not.

    Commits are read newest first; commits of other writers (OPTIMIZE, a user's own writes,
    the other fleetgen query of a shared table) are passed over.
    """
    prefix = f"{app_id}/"
    for path in _commit_files(table):
        info = _commit_info(path)
        tag = info.get("userMetadata") or ""
        if not tag.startswith(prefix) or not tag[len(prefix) :].isdigit():
            continue
        found = int(tag[len(prefix) :])
        if found == epoch:
            rows = info.get("operationMetrics", {}).get("numOutputRows", 0)
            return Commit(version=int(path.name[:20]), rows=int(rows))
        if found < epoch:
            return None  # our newest commit is older: this epoch never committed
    return None


def append_once(df: DataFrame, table: Path, app_id: str, epoch: int, **options: str) -> bool:
    """Append ``df`` to the Delta table at ``table`` unless this epoch already did.

    Returns whether it wrote. ``options`` go to the Delta writer (``partitionBy`` as
    ``partition_by``, a comma-separated list).
    """
    if find_commit(table, app_id, epoch) is not None:
        return False
    partition_by = options.pop("partition_by", None)
    writer = df.write.format("delta").mode("append").option("userMetadata", marker(app_id, epoch))
    if partition_by:
        writer = writer.partitionBy(*partition_by.split(","))
    writer.options(**options).save(str(table))
    return True
