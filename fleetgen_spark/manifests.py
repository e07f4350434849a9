"""The JSON and Markdown files under ``manifests/``: written atomically, read leniently."""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fleetgen_spark.exceptions import OptionError

__all__ = [
    "Layout",
    "read_json",
    "update_json",
    "utc_now_iso",
    "write_json_atomic",
    "write_text_atomic",
]


# A URI scheme (s3a://, abfss://, dbfs:/, file:/...): a data directory is a local folder for now.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


class Layout:
    """Where everything lives under a data directory (a local folder; a URI is refused)."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        text = os.fspath(data_dir)
        if _URI.match(text):
            raise OptionError(
                f"--data-dir {text!r}: only a local folder can hold a fleetgen data directory for now "
                "(object stores and DBFS are not supported); give a path such as ./data"
            )
        self.root = Path(text).resolve()

    @property
    def lock_path(self) -> Path:
        """The file a writing process holds locked; its presence marks a directory that fleetgen made
        (clean refuses any other)."""
        return self.root / ".fleetgen.lock"

    def table(self, name: str) -> Path:
        return self.root / "delta" / name

    def checkpoint(self, query: str) -> Path:
        return self.root / "checkpoints" / query

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def dataset_md(self) -> Path:
        return self.manifests / "dataset.md"

    @property
    def batch_manifest(self) -> Path:
        return self.manifests / "batch_manifest.json"

    @property
    def state(self) -> Path:
        return self.manifests / "generator_state.json"


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` (owner-only, as mkstemp makes it), fsync, then rename:
    a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON object atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """The object in a JSON file, or {} when there is none yet."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_json(path: Path, **changes: Any) -> dict[str, Any]:
    """Read, change and atomically rewrite a JSON file under a lock (several jobs share it)."""
    with _locked(path):
        data = read_json(path)
        data.update(changes)
        data["updated_at"] = utc_now_iso()
        write_json_atomic(path, data)
        return data
