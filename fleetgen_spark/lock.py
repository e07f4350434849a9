"""One writing process per data directory: an ``flock`` on ``<data_dir>/.fleetgen.lock``.

The lock is held for the life of the process (the kernel drops it when the process dies, even on
SIGKILL, so a crash never leaves a stale lock). A second process that wants to write the same
directory is refused at once, before Spark starts, with the pid and command of the holder, which
the holder wrote into the file. Readers of the tables and the client commands (status, pause, ...)
take no lock.

Within one process the lock is re-entrant: the service restarts its queries, and a test builds
several pipelines on one directory, without locking itself out (``flock`` locks of two open file
descriptions of one process would conflict, so one descriptor per directory is kept here).
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO

from fleetgen_spark.clean import finish_interrupted_clean
from fleetgen_spark.exceptions import FleetGenError
from fleetgen_spark.manifests import Layout

__all__ = ["DataDirBusy", "hold", "holder", "release"]

_held: dict[Path, IO[str]] = {}
_guard = threading.Lock()


class DataDirBusy(FleetGenError):
    """Another process is writing this data directory."""


def holder(layout: Layout) -> str:
    """What the lock file says about the process that holds (or last held) it.

    A holder writes its pid just after it takes the lock: a racer may look in between, so an
    empty file is read again for a moment."""
    for _ in range(40):
        try:
            text = layout.lock_path.read_text(encoding="utf-8").strip()
        except OSError:
            return "another process"
        if text:
            return text
        time.sleep(0.05)
    return "another process"


def hold(layout: Layout, command: str | None = None) -> None:
    """Take the data directory for this process, or refuse naming the process that has it."""
    with _guard:
        if layout.root in _held:
            return
        layout.root.mkdir(parents=True, exist_ok=True)
        handle = open(layout.lock_path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the process' life)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DataDirBusy(
                f"data directory {layout.root} is in use by {holder(layout)}; "
                "one fleetgen process writes a data directory at a time: stop it, or use another --data-dir"
            ) from None
        what = command or " ".join(["fleetgen", *sys.argv[1:]]) or "fleetgen"
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} ({what})\n")
        handle.flush()
        _held[layout.root] = handle
    # A clean that a kill interrupted is completed or undone by the next writer, whoever it is.
    finish_interrupted_clean(layout)


def release(layout: Layout) -> None:
    """Give the data directory up (the process' end does it too)."""
    with _guard:
        handle = _held.pop(layout.root, None)
    if handle is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
