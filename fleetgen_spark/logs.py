"""One JSON-lines logger for the whole package: files under manifests/logs, readable stderr."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["RUN_ID", "configure_logging", "get_logger", "log_event", "read_logs"]

# One id per process, so every line a process writes can be told apart from another run's.
RUN_ID = str(uuid.uuid4())
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_ROOT = "fleetgen"


class _JsonLinesHandler(logging.Handler):
    """Appends one JSON object per record to manifests/logs/YYYY-MM-DD/generator.log.jsonl."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        self.log_dir = log_dir

    def emit(self, record: logging.LogRecord) -> None:
        try:
            moment = datetime.fromtimestamp(record.created, tz=timezone.utc)
            line = {
                "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "level": record.levelname,
                "component": record.name.removeprefix(_ROOT + ".") or _ROOT,
                "run_id": RUN_ID,
                "message": record.getMessage(),
                "metadata": getattr(record, "metadata", {}),
            }
            path = self.log_dir / moment.strftime("%Y-%m-%d") / "generator.log.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line, default=str) + "\n")
        except Exception:  # a logging failure must never stop generation
            self.handleError(record)


class _ReadableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "metadata", {})
        extra = " ".join(f"{k}={v}" for k, v in meta.items())
        stamp = datetime.fromtimestamp(record.created, tz=timezone.utc).strftime("%H:%M:%S")
        component = record.name.removeprefix(_ROOT + ".")
        return f"{stamp} {record.levelname:<7} [{component}] {record.getMessage()}" + (f" ({extra})" if extra else "")


def configure_logging(
    data_dir: Path | None, *, stderr: bool = True, level: str = "INFO", stderr_level: str = "INFO"
) -> None:
    """Send the package's logs to the data directory's JSON files and, readable, to stderr."""
    root = logging.getLogger(_ROOT)
    root.setLevel(level)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    if data_dir is not None:
        root.addHandler(_JsonLinesHandler(data_dir / "manifests" / "logs"))
    if stderr:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(_ReadableFormatter())
        console.setLevel(stderr_level)
        root.addHandler(console)


def get_logger(component: str) -> logging.Logger:
    return logging.getLogger(f"{_ROOT}.{component}")


def log_event(logger: logging.Logger, message: str, level: int = logging.INFO, **metadata: Any) -> None:
    """Log a message with structured metadata (it lands in the JSON line's ``metadata``)."""
    logger.log(level, message, extra={"metadata": metadata})


def read_logs(
    data_dir: Path, *, min_level: str = "DEBUG", since: datetime | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The newest ``limit`` records at or above ``min_level`` and not before ``since``, newest first.

    Reads day folders and their lines from the newest backwards and stops as soon as it has enough.
    """
    threshold = LEVELS.index(min_level.upper())
    found: list[dict[str, Any]] = []
    for record in _newest_first(data_dir / "manifests" / "logs", since):
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
        path = day / "generator.log.jsonl"
        if not path.is_file():
            continue
        for line in reversed(path.read_text(encoding="utf-8").splitlines()):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if since is not None and _parse_time(record.get("timestamp", "")) < since:
                return
            yield record


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
