"""One data directory: every path and every file operation under it, on a local disk, S3 or HDFS.

No other module builds a path under a data directory or opens a file there: it asks the
:class:`DataDir`. Spark is handed :meth:`DataDir.table` and :meth:`DataDir.checkpoint` (URIs that
Hadoop reads); fleetgen's own small files (manifests, state, token, logs, the writer's lock or
lease, clean's staging) go through a :class:`~fleetgen_spark.storage.backends.Storage`.

The records written by several modules have one typed definition here: :class:`GeneratorState`
(``generator_state.json``) and :class:`BatchManifest` (``batch_manifest.json``).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fleetgen_spark.storage.backends import LocalStorage, Storage, StorageError, hadoop_setting, open_storage

__all__ = [
    "BatchManifest",
    "DataDir",
    "GeneratorState",
    "storage_conf",
    "utc_now_iso",
]

MANIFESTS = "manifests"
STATE = f"{MANIFESTS}/generator_state.json"
BATCH_MANIFEST = f"{MANIFESTS}/batch_manifest.json"
DATASET_MD = f"{MANIFESTS}/dataset.md"
TOKEN = f"{MANIFESTS}/api_token"
LOGS = f"{MANIFESTS}/logs"
# Its presence marks a directory that fleetgen made (clean refuses any other); locally it is also the flock.
MARKER = ".fleetgen.lock"


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class GeneratorState:
    """``manifests/generator_state.json``: what the service and the two sinks last recorded.

    The service owns ``paused`` .. ``service_pid``; the companies sink ``last_company_*`` and
    ``company_count``; the events sink ``last_driver_*`` and ``batches_generated_count``. Each writes
    its own fields through :meth:`DataDir.update_state`; a field never written is absent from the file.
    """

    paused: bool | None = None
    status: str | None = None
    service_run_id: str | None = None
    service_pid: int | None = None
    last_company_batch: str | None = None
    last_company_tick: str | None = None
    company_count: int | None = None
    last_driver_batch: str | None = None
    last_driver_interval_end: str | None = None
    batches_generated_count: int | None = None
    updated_at: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GeneratorState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class BatchManifest:
    """``manifests/batch_manifest.json``: the ledger's totals (written by the events sink only)."""

    last_batch_id: str | None = None
    batch_count: int = 0
    total_events: int = 0
    last_updated: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchManifest:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# Hadoop settings that fleetgen's own file access reads (the rest of a Spark conf is not its business).
_STORAGE_PREFIXES = ("fs.s3a.", "dfs.", "spark.hadoop.fs.s3a.", "spark.hadoop.dfs.")


def storage_conf(conf: Mapping[str, str]) -> dict[str, str]:
    """The settings of a Spark conf that configure a data directory's storage (``fs.s3a.*``, ``dfs.*``)."""
    return {k: str(v) for k, v in conf.items() if k.startswith(_STORAGE_PREFIXES)}


class DataDir:
    """A data directory: a local path, a ``file:`` URI, ``s3a://bucket/prefix`` or ``hdfs://host:port/path``.

    ``conf`` holds the Spark or Hadoop settings of its storage (``spark.hadoop.fs.s3a.endpoint``, ...),
    the same ones the Spark session is given; anything else in it is ignored.
    """

    def __init__(self, location: str | os.PathLike[str], conf: Mapping[str, str] | None = None) -> None:
        self.conf = storage_conf(conf or {})
        self.storage: Storage = open_storage(location, self.conf)
        self.uri = self.storage.uri
        self._state_guard = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """What a pickle carries (Spark Connect ships the foreachBatch writers and the listener to a
        Python worker of the server): the location and the settings, not a lock or a client."""
        return {"uri": self.uri, "conf": self.conf}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"], state["conf"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"DataDir({self.uri!r})"

    def __str__(self) -> str:
        return self.uri

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataDir) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    @property
    def is_local(self) -> bool:
        return isinstance(self.storage, LocalStorage)

    @property
    def root(self) -> Path:
        """The local folder (a local data directory only: tests and local tools look at files here)."""
        if not isinstance(self.storage, LocalStorage):
            raise StorageError(f"{self.uri} is not a local folder")
        return self.storage.root

    def local_path(self, rel: str) -> Path:
        """A file's local path (a local data directory only)."""
        return self.root / rel

    # Local views, for tests and local tools that look at the files themselves.
    @property
    def lock_path(self) -> Path:
        return self.local_path(MARKER)

    @property
    def manifests(self) -> Path:
        return self.local_path(MANIFESTS)

    @property
    def state(self) -> Path:
        return self.local_path(STATE)

    @property
    def batch_manifest(self) -> Path:
        return self.local_path(BATCH_MANIFEST)

    @property
    def dataset_md(self) -> Path:
        return self.local_path(DATASET_MD)

    # -- what Spark reads and writes ------------------------------------------------------------

    def table(self, name: str) -> str:
        return f"{self.uri}/delta/{name}"

    def checkpoint(self, query: str) -> str:
        return f"{self.uri}/checkpoints/{query}"

    def location(self, rel: str) -> str:
        """Where a file is, as a person reads it in a message."""
        return f"{self.uri}/{rel}"

    # -- plain files ---------------------------------------------------------------------------

    def read_text(self, rel: str) -> str | None:
        data = self.storage.read_bytes(rel)
        return None if data is None else data.decode("utf-8")

    def write_text(self, rel: str, text: str) -> None:
        """Replace a file whole and atomically (locally owner-only: mkstemp then rename)."""
        self.storage.write_bytes(rel, text.encode("utf-8"))

    def read_json(self, rel: str) -> dict[str, Any]:
        """The object in a JSON file, or {} when there is none yet."""
        text = self.read_text(rel)
        if text is None:
            return {}
        data = json.loads(text)
        return data if isinstance(data, dict) else {}

    def write_json(self, rel: str, data: Mapping[str, Any]) -> None:
        self.write_text(rel, json.dumps(dict(data), indent=2, sort_keys=True) + "\n")

    def exists(self, rel: str) -> bool:
        if isinstance(self.storage, LocalStorage):
            return os.path.lexists(self.storage.path(rel))
        return self.storage.read_bytes(rel) is not None or bool(self.storage.names(rel))

    def names(self, rel: str) -> list[str]:
        return self.storage.names(rel)

    def is_present(self) -> bool:
        """Whether the directory exists (a local folder) or holds anything (a prefix on object storage)."""
        return self.root.is_dir() if self.is_local else bool(self.names(""))

    def shown(self) -> str:
        """The directory as a reader knows it: relative to the working directory when inside it."""
        if not self.is_local:
            return self.uri
        try:
            return str(self.root.relative_to(Path.cwd())) or "."
        except ValueError:
            return str(self.root)

    def delete(self, rel: str) -> None:
        self.storage.delete(rel)

    def delete_tree(self, rel: str) -> None:
        self.storage.delete_tree(rel)

    # -- the typed records ---------------------------------------------------------------------

    def read_state(self) -> GeneratorState:
        return GeneratorState.from_json(self.read_json(STATE))

    def update_state(self, **changes: Any) -> GeneratorState:
        """Change some fields of generator_state.json (read, change, rewrite atomically, under a lock).

        Locally an ``flock`` guards it (as it always has); elsewhere the one writing process holds
        the lease, so a lock between its threads is enough.
        """
        unknown = set(changes) - {f.name for f in fields(GeneratorState)}
        if unknown:
            raise TypeError(f"generator_state.json has no field {sorted(unknown)}")
        with self._state_lock():
            data = self.read_json(STATE)
            data.update(changes)
            data["updated_at"] = utc_now_iso()
            state = GeneratorState.from_json(data)
            self.write_json(STATE, {**data, **state.to_json()})
            return state

    @contextmanager
    def _state_lock(self) -> Iterator[None]:
        with self._state_guard:
            if not isinstance(self.storage, LocalStorage):
                yield
                return
            path = self.storage.path(STATE + ".lock")
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def read_manifest(self) -> BatchManifest:
        return BatchManifest.from_json(self.read_json(BATCH_MANIFEST))

    def has_manifest(self) -> bool:
        return self.read_text(BATCH_MANIFEST) is not None

    def write_manifest(self, manifest: BatchManifest) -> None:
        self.write_json(BATCH_MANIFEST, manifest.to_json())

    # -- dataset descriptor and token ----------------------------------------------------------

    @property
    def token_location(self) -> str:
        return self.location(TOKEN)

    def read_token(self) -> str | None:
        try:
            text = self.read_text(TOKEN)
        except (OSError, StorageError):
            return None
        return (text or "").strip() or None

    def write_token(self, token: str) -> None:
        """Save a token owner-only (0600 locally) and atomically."""
        self.write_text(TOKEN, token + "\n")

    def delete_token(self) -> None:
        self.delete(TOKEN)

    # -- checkpoints and tables ----------------------------------------------------------------

    def checkpoint_offset_lines(self, query: str, epoch: int) -> list[str]:
        """The lines of a streaming query's offset log entry ``offsets/<epoch>``."""
        text = self.read_text(f"checkpoints/{query}/offsets/{epoch}")
        if text is None:
            raise FileNotFoundError(f"{self.checkpoint(query)}/offsets/{epoch}")
        return text.splitlines()

    def _commit_files(self, table: str) -> list[str]:
        """The names of a Delta table's commit files (``<version>.json``), oldest first."""
        names = self.names(f"delta/{table}/_delta_log")
        return sorted(n for n in names if n.endswith(".json") and n[:20].isdigit())

    def has_commits(self, table: str) -> bool:
        """Whether a table holds a Delta table with at least one commit."""
        return bool(self._commit_files(table))

    def is_empty_table(self, table: str) -> bool:
        """Whether a Delta table holds its creation commit only, and that commit added no file.

        Read from the log's files (two small reads, no Spark job): the companies writer then
        knows a new table's count and newest version without reading it.
        """
        commits = self._commit_files(table)
        if commits != [f"{0:020d}.json"]:
            return False
        log = f"delta/{table}/_delta_log"
        text = self.read_text(f"{log}/{commits[0]}") or ""
        return not any("add" in json.loads(line) for line in text.splitlines() if line.strip())

    # -- the writer's mark ---------------------------------------------------------------------

    def is_fleetgen_dir(self) -> bool:
        """Whether fleetgen made this directory (it holds the writer's marker)."""
        if isinstance(self.storage, LocalStorage):
            path = self.storage.path(MARKER)
            return path.is_file() and not path.is_symlink()
        return self.storage.read_bytes(MARKER) is not None

    def mark(self) -> None:
        """Mark the directory as fleetgen's (clean refuses any other)."""
        if isinstance(self.storage, LocalStorage):
            self.root.mkdir(parents=True, exist_ok=True)
            self.storage.path(MARKER).touch(exist_ok=True)
        elif not self.is_fleetgen_dir():
            self.storage.create(MARKER, b"fleetgen data directory\n")

    def s3a_needed(self) -> bool:
        return self.uri.startswith("s3a://")

    def setting(self, key: str) -> str | None:
        return hadoop_setting(self.conf, key)
