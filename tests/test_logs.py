"""The JSON-lines logs of ``fleetgen_spark.storage.logs``: read from the newest end, rotated by size and age."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import pytest

from fleetgen_spark.storage import logs
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.logs import LOG_FILE, configure_logging, get_logger, log_event, read_logs

UTC = timezone.utc
DAY = "2026-01-15"


def _record(i: int, level: str = "INFO", day: str = DAY) -> str:
    stamp = (datetime.fromisoformat(f"{day}T00:00:00+00:00") + timedelta(seconds=i)).isoformat()
    line = {"timestamp": stamp.replace("+00:00", "Z"), "level": level, "component": "test", "run_id": "r"}
    return json.dumps({**line, "message": f"record {i}", "metadata": {"i": i, "pad": "x" * 200}}) + "\n"


def _write_day(root: Path, lines: int, day: str = DAY, name: str = LOG_FILE, first: int = 0) -> Path:
    path = root / "manifests" / "logs" / day / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        out.writelines(_record(first + i, day=day) for i in range(lines))
    return path


class _Counting:
    """A binary file that counts the bytes read through it."""

    total = 0

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        _Counting.total += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def __enter__(self) -> _Counting:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Counting]]:
    real = logs._open_log
    _Counting.total = 0
    monkeypatch.setattr(logs, "_open_log", lambda path: _Counting(real(path)))
    yield _Counting


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    configure_logging(None, stderr=False)  # close file handlers pointing into tmp_path


def test_limit_1_on_a_large_file_reads_one_block(tmp_path: Path, counted: type[_Counting]) -> None:
    path = _write_day(tmp_path, 40_000)  # about 11 MB
    assert path.stat().st_size > 10_000_000
    records = read_logs(DataDir(tmp_path), limit=1)
    assert [r["message"] for r in records] == ["record 39999"]
    assert counted.total <= 64 * 1024, f"read {counted.total} bytes of {path.stat().st_size} for one record"


def test_records_come_newest_first_across_blocks_days_and_rotated_files(
    tmp_path: Path, counted: type[_Counting]
) -> None:
    _write_day(tmp_path, 300, day="2026-01-14")
    _write_day(tmp_path, 500, name=f"{LOG_FILE}.1")  # older part of the same day
    _write_day(tmp_path, 500, first=500)
    records = read_logs(DataDir(tmp_path), limit=1200)
    numbers = [r["metadata"]["i"] for r in records]
    assert numbers == list(range(999, -1, -1)) + list(range(299, 99, -1))
    # Every line survived the block boundaries, and the read stopped inside the older day.
    assert len({json.dumps(r) for r in records}) == 1200


def test_since_and_level_filter_from_the_newest_end(tmp_path: Path) -> None:
    path = _write_day(tmp_path, 100)
    with path.open("a", encoding="utf-8") as out:
        out.write(_record(100, "ERROR"))
        out.write('{"cut by a crash\n')
    since = datetime.fromisoformat(f"{DAY}T00:01:30+00:00")
    assert [r["metadata"]["i"] for r in read_logs(DataDir(tmp_path), min_level="ERROR")] == [100]
    assert [r["metadata"]["i"] for r in read_logs(DataDir(tmp_path), since=since)] == list(range(100, 89, -1))


def test_a_file_rotates_beside_itself_when_it_passes_max_bytes(tmp_path: Path) -> None:
    configure_logging(DataDir(tmp_path), stderr=False, max_bytes=4096, backups=3)
    log = get_logger("rotation")
    for i in range(200):
        log_event(log, f"message {i}", logging.INFO, i=i, pad="y" * 100)
    day = next((tmp_path / "manifests" / "logs").iterdir())
    names = sorted(p.name for p in day.iterdir())
    assert names == [LOG_FILE, f"{LOG_FILE}.1", f"{LOG_FILE}.2", f"{LOG_FILE}.3"]
    assert all(p.stat().st_size < 4096 + 400 for p in day.iterdir())
    # The newest records are read back in order across the rotated files.
    newest = [r["metadata"]["i"] for r in read_logs(DataDir(tmp_path), limit=40)]
    assert newest == list(range(199, 159, -1))


def test_day_folders_older_than_keep_days_go_when_a_new_day_begins(tmp_path: Path) -> None:
    today = datetime.now(UTC)
    old = (today - timedelta(days=40)).strftime("%Y-%m-%d")
    recent = (today - timedelta(days=3)).strftime("%Y-%m-%d")
    _write_day(tmp_path, 5, day=old)
    _write_day(tmp_path, 5, day=recent)
    configure_logging(DataDir(tmp_path), stderr=False, keep_days=30)
    log_event(get_logger("age"), "a new day")
    days = sorted(p.name for p in (tmp_path / "manifests" / "logs").iterdir())
    assert days == [recent, today.strftime("%Y-%m-%d")]
