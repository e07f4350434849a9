"""One JSON-lines logger for the whole package: files under manifests/logs, readable stderr.

Files: ``manifests/logs/YYYY-MM-DD/generator.log.jsonl``. A file that passes ``max_bytes``
rotates beside itself (``generator.log.jsonl.1`` is the previous one, up to ``backups``), and
day folders older than ``keep_days`` are removed when a new day begins.

On object storage and HDFS a file cannot be appended to: a process writes its lines as whole
segments instead, ``generator.log.jsonl.<start ms>-<run id>``, rewritten whole by the first record
that comes ``FLUSH_S`` seconds or more after the last write, and at exit (so the lines of a quiet end
show up at the next record or the exit); a new one is begun past ``SEGMENT_BYTES``. ``read_logs``
reads both layouts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

from fleetgen_spark.storage.datadir import LOGS, DataDir

__all__ = [
    "BACKUPS",
    "KEEP_DAYS",
    "LOG_FILE",
    "MAX_BYTES",
    "RUN_ID",
    "configure_logging",
    "ensure_logging",
    "get_logger",
    "log_event",
    "read_logs",
]

# One id per process, so every line a process writes can be told apart from another run's.
RUN_ID = str(uuid.uuid4())
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_ROOT = "fleetgen"
LOG_FILE = "generator.log.jsonl"
MAX_BYTES = 10 * 1024 * 1024  # per file; a busy service writes about 1 MB an hour
BACKUPS = 9  # rotated files kept per day: at most 100 MB of logs a day
KEEP_DAYS = 30
_BLOCK = 64 * 1024  # read backwards this much at a time
FLUSH_S = 5.0  # a remote data directory's segment is rewritten at most this often
SEGMENT_BYTES = 4 * 1024 * 1024


class _JsonLinesHandler(logging.Handler):
    """Appends one JSON object per record to manifests/logs/YYYY-MM-DD/generator.log.jsonl."""

    def __init__(
        self, log_dir: Path, *, max_bytes: int = MAX_BYTES, backups: int = BACKUPS, keep_days: int = KEEP_DAYS
    ) -> None:
        super().__init__()
        self.log_dir = log_dir
        self.max_bytes = max_bytes
        self.backups = backups
        self.keep_days = keep_days

    def emit(self, record: logging.LogRecord) -> None:
        try:
            moment = datetime.fromtimestamp(record.created, tz=timezone.utc)
            line = _record(record, moment)
            path = self.log_dir / moment.strftime("%Y-%m-%d") / LOG_FILE
            if not path.parent.is_dir():
                path.parent.mkdir(parents=True, exist_ok=True)
                self._remove_old_days(moment)
            with path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line, default=str) + "\n")
                size = out.tell()
            if size >= self.max_bytes:
                self._rotate(path)
        except Exception:  # a logging failure must never stop generation
            self.handleError(record)

    def _rotate(self, path: Path) -> None:
        """generator.log.jsonl -> .1 -> .2 ...; the oldest beyond ``backups`` goes."""
        for number in range(self.backups, 0, -1):
            older = path.with_name(f"{path.name}.{number}")
            if number == self.backups:
                older.unlink(missing_ok=True)
            elif older.exists():
                os.replace(older, path.with_name(f"{path.name}.{number + 1}"))
        if self.backups > 0:
            os.replace(path, path.with_name(f"{path.name}.1"))
        else:
            path.unlink(missing_ok=True)

    def _remove_old_days(self, today: datetime) -> None:
        oldest = (today - timedelta(days=self.keep_days)).strftime("%Y-%m-%d")
        for day in self.log_dir.iterdir():
            if day.is_dir() and not day.is_symlink() and len(day.name) == 10 and day.name < oldest:
                shutil.rmtree(day, ignore_errors=True)


class _SegmentHandler(logging.Handler):
    """Writes a process' records to a remote data directory as whole segment objects (no append there)."""

    def __init__(self, data_dir: DataDir) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.lines: list[str] = []
        self.size = 0
        self.name_: str | None = None
        self.dirty = False
        self.flushed_at = time.monotonic()
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            moment = datetime.fromtimestamp(record.created, tz=timezone.utc)
            with self.guard:
                day = moment.strftime("%Y-%m-%d")
                if self.name_ is None or not self.name_.startswith(day) or self.size > SEGMENT_BYTES:
                    self._flush_locked()
                    self.lines, self.size = [], 0
                    self.name_ = f"{day}/{LOG_FILE}.{int(record.created * 1000):015d}-{RUN_ID[:8]}"
                line = json.dumps(_record(record, moment), default=str)
                self.lines.append(line)
                self.size += len(line) + 1
                self.dirty = True
                # Flushed from here when due, by read_logs in this process, and at close (exit). A timer
                # thread that flushed quiet periods too was tried: in a running service it stopped flushing
                # after its first write, with no error (cause not found in the time there was), so the lines
                # of a quiet end wait for a read here (/logs) or the exit.
                if time.monotonic() - self.flushed_at >= FLUSH_S:
                    self._flush_locked()
        except Exception:  # a logging failure must never stop generation
            self.handleError(record)

    def _flush_locked(self) -> None:
        if self.dirty and self.name_ is not None:
            self.data_dir.write_text(f"{LOGS}/{self.name_}", "\n".join(self.lines) + "\n")
            self.dirty = False
            self.flushed_at = time.monotonic()

    def flush(self) -> None:
        try:
            with self.guard:
                self._flush_locked()
        except Exception:
            pass

    def close(self) -> None:
        self.flush()
        super().close()


def _record(record: logging.LogRecord, moment: datetime) -> dict[str, Any]:
    return {
        "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": record.levelname,
        "component": record.name.removeprefix(_ROOT + ".") or _ROOT,
        "run_id": RUN_ID,
        "message": record.getMessage(),
        "metadata": getattr(record, "metadata", {}),
    }


class _ReadableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "metadata", {})
        extra = " ".join(f"{k}={_one_line(v)}" for k, v in meta.items())
        stamp = datetime.fromtimestamp(record.created, tz=timezone.utc).strftime("%H:%M:%S")
        component = record.name.removeprefix(_ROOT + ".")
        return f"{stamp} {record.levelname:<7} [{component}] {record.getMessage()}" + (f" ({extra})" if extra else "")


def configure_logging(
    data_dir: DataDir | None,
    *,
    stderr: bool = True,
    level: str = "INFO",
    stderr_level: str = "INFO",
    max_bytes: int = MAX_BYTES,
    backups: int = BACKUPS,
    keep_days: int = KEEP_DAYS,
) -> None:
    """Send the package's logs to the data directory's JSON files and, readable, to stderr."""
    root = logging.getLogger(_ROOT)
    root.setLevel(level)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    if data_dir is not None and data_dir.is_local:
        root.addHandler(
            _JsonLinesHandler(data_dir.local_path(LOGS), max_bytes=max_bytes, backups=backups, keep_days=keep_days)
        )
    elif data_dir is not None:
        root.addHandler(_SegmentHandler(data_dir))
    if stderr:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(_ReadableFormatter())
        console.setLevel(stderr_level)
        root.addHandler(console)


def _one_line(value: Any) -> str:
    """A metadata value as the terminal shows it: its first line (an error's full text, with its
    stack traces, stays in the JSON log)."""
    text = str(value)
    first = text.split("\n", 1)[0]
    return first[:500] + " ..." if len(first) < len(text) or len(first) > 500 else first


def ensure_logging(data_dir: DataDir) -> None:
    """In a process that has not set logging up (a Spark Connect server's foreachBatch worker), send
    the package's records to the data directory's JSON files only: the worker's stderr is the
    server's, and a user reads the records with /logs or `fleetgen logs`."""
    if not logging.getLogger(_ROOT).handlers:
        configure_logging(data_dir, stderr=False)


def get_logger(component: str) -> logging.Logger:
    return logging.getLogger(f"{_ROOT}.{component}")


def log_event(logger: logging.Logger, message: str, level: int = logging.INFO, **metadata: Any) -> None:
    """Log a message with structured metadata (it lands in the JSON line's ``metadata``)."""
    logger.log(level, message, extra={"metadata": metadata})


def read_logs(
    data_dir: DataDir, *, min_level: str = "DEBUG", since: datetime | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The newest ``limit`` records at or above ``min_level`` and not before ``since``, newest first.

    Reads day folders, their files and each file's lines from the newest end backwards, a block
    at a time, and stops as soon as it has enough: ``limit=1`` on a 100 MB file reads one block.
    On a remote data directory this process' own segment is written out first, so that a reader
    in the process that logs (the service's ``/logs``) sees its lines up to now, a quiet end's too.
    """
    if not data_dir.is_local:
        for handler in logging.getLogger(_ROOT).handlers:
            if isinstance(handler, _SegmentHandler):
                handler.flush()
    threshold = LEVELS.index(min_level.upper())
    found: list[dict[str, Any]] = []
    records = _newest_first(data_dir.local_path(LOGS), since) if data_dir.is_local else _remote(data_dir, since)
    for record in records:
        if record.get("level") in LEVELS and LEVELS.index(record["level"]) >= threshold:
            found.append(record)
            if len(found) >= limit:
                break
    return found


def _newest_first(log_dir: Path, since: datetime | None) -> Iterator[dict[str, Any]]:
    if not log_dir.is_dir():
        return
    since_day = since.astimezone(timezone.utc).strftime("%Y-%m-%d") if since else ""
    for day in sorted((p for p in log_dir.iterdir() if p.is_dir()), reverse=True):
        if day.name < since_day:
            return
        for path in _day_files(day):
            yield from _until(_lines_backwards(path), since)


def _until(lines: Iterator[bytes], since: datetime | None) -> Iterator[dict[str, Any]]:
    for line in lines:
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a line cut by a crash
        if not isinstance(record, dict):
            continue
        if since is not None and _parse_time(record.get("timestamp", "")) < since:
            return
        yield record


def _remote(data_dir: DataDir, since: datetime | None) -> Iterator[dict[str, Any]]:
    """A remote directory's segments, newest first (several processes' segments of a day, by start time).

    Segments of processes that ran at the same time interleave, so ``since`` filters each line rather
    than stopping at the first older one.
    """
    since_day = since.astimezone(timezone.utc).strftime("%Y-%m-%d") if since else ""
    for day in sorted((d for d in data_dir.names(LOGS) if len(d) == 10), reverse=True):
        if day < since_day:
            return
        segments = [n for n in data_dir.names(f"{LOGS}/{day}") if n.startswith(LOG_FILE + ".")]
        for name in sorted(segments, reverse=True):
            text = data_dir.read_text(f"{LOGS}/{day}/{name}") or ""
            lines = [line.encode("utf-8") for line in reversed(text.splitlines()) if line.strip()]
            for record in _until(iter(lines), None):
                if since is None or _parse_time(record.get("timestamp", "")) >= since:
                    yield record


def _day_files(day: Path) -> list[Path]:
    """A day's log files, newest first: generator.log.jsonl, then .1, .2 ..."""
    rotated = []
    for path in day.glob(f"{LOG_FILE}.*"):
        suffix = path.name.removeprefix(LOG_FILE + ".")
        if suffix.isdigit():
            rotated.append((int(suffix), path))
    current = [day / LOG_FILE] if (day / LOG_FILE).is_file() else []
    return current + [path for _, path in sorted(rotated)]


def _open_log(path: Path) -> IO[bytes]:
    """Opens a log file for reading (a seam for tests that count the bytes read)."""
    return path.open("rb")


def _lines_backwards(path: Path) -> Iterator[bytes]:
    """The file's lines from the last to the first, reading ``_BLOCK`` bytes at a time from the end."""
    try:
        handle = _open_log(path)
    except OSError:
        return
    with handle:
        position = handle.seek(0, os.SEEK_END)
        tail = b""
        while position > 0:
            step = min(_BLOCK, position)
            position -= step
            handle.seek(position)
            block = handle.read(step) + tail
            lines = block.split(b"\n")
            tail = lines[0]  # maybe the end of a line that starts in an earlier block
            for line in reversed(lines[1:]):
                if line.strip():
                    yield line
        if tail.strip():
            yield tail


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
