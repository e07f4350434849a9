"""One writing process per data directory: an ``flock`` on ``<data_dir>/.fleetgen.lock``.

The lock is held for the life of the process (the kernel drops it when the process dies, even on
SIGKILL, so a crash never leaves a stale lock). A second process that wants to write the same
directory is refused at once, before Spark starts, with the pid and command of the holder, which
the holder wrote into the file. Readers of the tables and the client commands (status, pause, ...)
take no lock.

Within one process the lock is re-entrant: the service restarts its queries, and a test builds
several pipelines on one directory, without locking itself out (``flock`` locks of two open file
descriptions of one process would conflict, so one descriptor per directory is kept here).

On object storage and HDFS there is no ``flock``: the writer holds a lease instead, the object
``.fleetgen.lease`` created only if absent (S3 ``If-None-Match: *``, WebHDFS ``overwrite=false``), holding
host, pid, command and an expiry that a thread renews every third of the lease's length while the
process lives. A second process finds it and is refused with the same message; a lease whose holder
stopped renewing (a SIGKILL, a lost host) is taken over once it has expired, and the taker says so.
The length is ``FLEETGEN_LEASE_SECONDS`` (default 60): a killed writer blocks its directory that long.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import IO

from fleetgen_spark.core.exceptions import FleetGenError
from fleetgen_spark.storage.clean import finish_interrupted_clean
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.logs import get_logger, log_event

__all__ = ["LEASE", "DataDirBusy", "Lease", "command_line", "hold", "holder", "log_takeover", "release"]

LEASE = ".fleetgen.lease"
_held: dict[str, IO[str] | _Renewer] = {}
_guard = threading.Lock()
_log = get_logger("lock")


class DataDirBusy(FleetGenError):
    """Another process is writing this data directory."""


@dataclass(frozen=True)
class Lease:
    """What ``.fleetgen.lease`` holds: who writes the directory, and until when unless renewed."""

    host: str
    pid: int
    command: str
    expires_at: float  # epoch seconds
    holder_id: str  # tells this holder's renewals from a taker's lease

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command}) on {self.host}"

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, data: bytes | None) -> Lease | None:
        try:
            return cls(**json.loads(data or b""))
        except (ValueError, TypeError):
            return None


def lease_seconds() -> float:
    return float(os.environ.get("FLEETGEN_LEASE_SECONDS") or 60)


def holder(layout: DataDir) -> str:
    """What the lock file says about the process that holds (or last held) it.

    A holder writes its pid just after it takes the lock: a racer may look in between, so an
    empty file is read again for a moment."""
    if not layout.is_local:
        lease = Lease.parse(layout.storage.read_bytes(LEASE))
        return "another process" if lease is None else lease.describe()
    for _ in range(40):
        try:
            text = layout.lock_path.read_text(encoding="utf-8").strip()
        except OSError:
            return "another process"
        if text:
            return text
        time.sleep(0.05)
    return "another process"


def _busy(layout: DataDir, who: str) -> DataDirBusy:
    return DataDirBusy(
        f"data directory {layout.uri} is in use by {who}; "
        "one fleetgen process writes a data directory at a time: stop it, or use another --data-dir"
    )


def command_line(argv: list[str]) -> str:
    """This process' command as the lease and the lock file show it: ``--conf`` values left out (they may
    hold credentials, and the lease is readable by anyone who can list the directory)."""
    words = ["fleetgen"]
    for word in argv:
        key, equals, _ = word.partition("=")
        words.append(f"{key}=..." if equals and (words[-1] == "--conf" or key == "--conf") else word)
    return " ".join(words)


def hold(layout: DataDir, command: str | None = None) -> str | None:
    """Take the data directory for this process, or refuse naming the process that has it.

    Returns the line saying that an expired lease was taken over (None otherwise), for the caller to
    log once its logging is set up: the JSON log lives in the directory this call takes."""
    what = command or command_line(sys.argv[1:])
    took_over = None
    with _guard:
        if layout.uri in _held:
            return None
        if layout.is_local:
            _held[layout.uri] = _flock(layout, what)
        else:
            _held[layout.uri], took_over = _take_lease(layout, what)
    if not layout.is_local:
        layout.mark()
    # A clean that a kill interrupted is completed or undone by the next writer, whoever it is.
    finish_interrupted_clean(layout)
    return took_over


def log_takeover(message: str | None) -> None:
    """Log what :func:`hold` returned, if anything (a WARNING: the terminal shows it)."""
    if message:
        log_event(_log, message, logging.WARNING)


def _flock(layout: DataDir, what: str) -> IO[str]:
    layout.root.mkdir(parents=True, exist_ok=True)
    handle = open(layout.lock_path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the process' life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise _busy(layout, holder(layout)) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} ({what})\n")
    handle.flush()
    return handle


def release(layout: DataDir) -> None:
    """Give the data directory up (the process' end does it too; a lease then expires)."""
    with _guard:
        handle = _held.pop(layout.uri, None)
    if isinstance(handle, _Renewer):
        handle.stop()
    elif handle is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _take_lease(layout: DataDir, command: str) -> tuple[_Renewer, str | None]:
    """Create the lease object if absent; take over an expired one; refuse a live one."""
    length = lease_seconds()
    mine = Lease(socket.gethostname(), os.getpid(), command, time.time() + length, secrets.token_hex(8))
    if layout.storage.create(LEASE, mine.to_bytes()):
        return _Renewer(layout, mine, length), None
    current = Lease.parse(layout.storage.read_bytes(LEASE))
    if current is not None and current.expires_at > time.time():
        raise _busy(layout, current.describe())
    # Expired (its holder stopped renewing), or unreadable: delete it and create ours, still only if absent,
    # so of two takers at once one wins and the other is refused.
    layout.storage.delete(LEASE)
    mine = Lease(mine.host, mine.pid, command, time.time() + length, mine.holder_id)
    if not layout.storage.create(LEASE, mine.to_bytes()):
        raise _busy(layout, holder(layout))
    message = None
    if current is not None:
        late = round(time.time() - current.expires_at)
        message = (
            f"took over the data directory {layout.uri} from {current.describe()}, whose lease expired {late} s ago"
        )
    return _Renewer(layout, mine, length), message


def _release_leases() -> None:
    """At the interpreter's exit: delete this process' leases, so a restart need not wait for them to expire."""
    for uri, handle in list(_held.items()):
        if isinstance(handle, _Renewer):
            _held.pop(uri, None)
            handle.stop()


atexit.register(_release_leases)


class _Renewer:
    """Renews a lease every third of its length until stopped; deletes it on stop (if still ours)."""

    def __init__(self, layout: DataDir, lease: Lease, length: float) -> None:
        self.layout = layout
        self.lease = lease
        self.length = length
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleetgen-lease", daemon=True)
        self._thread.start()

    def _ours(self) -> bool:
        current = Lease.parse(self.layout.storage.read_bytes(LEASE))
        return current is not None and current.holder_id == self.lease.holder_id

    def _run(self) -> None:
        while not self._stop.wait(self.length / 3):
            try:
                if not self._ours():
                    log_event(_log, "lost the data directory's lease to another process", logging.ERROR)
                    return
                self.lease = Lease(**{**asdict(self.lease), "expires_at": time.time() + self.length})
                self.layout.storage.write_bytes(LEASE, self.lease.to_bytes())
            except Exception as err:  # a failed renewal is retried at the next turn; the lease may lapse
                log_event(_log, "could not renew the data directory's lease", logging.WARNING, error=str(err))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            if self._ours():
                self.layout.storage.delete(LEASE)
        except Exception as err:  # it expires by itself
            log_event(_log, "could not delete the data directory's lease", logging.WARNING, error=str(err))
