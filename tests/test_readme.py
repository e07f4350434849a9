"""The README's examples work as pasted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def test_notebook_examples_run(spark: SparkSession, tmp_path: Path, monkeypatch: object) -> None:
    blocks = re.findall(r"```python\n(.*?)```", _section("Use it from a notebook"), re.DOTALL)
    assert len(blocks) >= 2
    namespace: dict[str, object] = {}
    monkeypatch.chdir(tmp_path)  # type: ignore[attr-defined]
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    df = namespace["df"]
    assert df.count() > 0  # type: ignore[attr-defined]
    assert not namespace["query"].isActive  # type: ignore[attr-defined]


@pytest.mark.spark  # a JVM in a subprocess
def test_the_stream_snippet_shows_rows_and_stops_quietly_twice_in_one_folder(tmp_path: Path) -> None:
    """As a user pastes it: a fresh Python each time, in the same folder; output is ours and Spark's console only."""
    blocks = re.findall(r"```python\n(.*?)```", _section("Use it from a notebook"), re.DOTALL)
    script = tmp_path / "snippet.py"
    script.write_text(blocks[0], encoding="utf-8")
    for run in (1, 2):
        out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, (run, out.stderr[-5000:])
        batches = re.split(r"^-+\nBatch: (\d+)\n-+\n", out.stdout, flags=re.MULTILINE)
        shown = {int(number): text for number, text in zip(batches[1::2], batches[2::2], strict=True)}
        ids = {n: set(re.findall(r"\|(2025\d{4}T\d{6}Z)\|", text)) for n, text in shown.items()}
        with_rows = {n: found for n, found in ids.items() if found}
        assert min(with_rows, default=None) == 2, (run, out.stdout[-3000:])  # as the README says
        intervals = [f"20251108T{h:02d}{m:02d}00Z" for h in (0, 1) for m in (0, 15, 30, 45)]
        assert sorted(set().union(*with_rows.values())) == intervals[1:], (run, out.stdout[-3000:])
        for line in (out.stdout + out.stderr).splitlines():
            assert "ERROR" not in line and "Exception" not in line, (run, line)


def test_the_messy_window_exercise_runs_twice_with_the_same_counts(spark: SparkSession) -> None:
    """Messy streams, exercise 1, pasted twice into one session: its memory sink has no checkpoint to trip on."""
    from pyspark.sql import functions as F

    block = next(b for b in re.findall(r"```python\n(.*?)```", _section("Messy streams"), re.DOTALL) if "windows" in b)
    counts = []
    for _ in range(2):
        exec(compile(block, "README.md", "exec"), {"spark": spark, "F": F})
        counts.append(
            sorted(tuple(r) for r in spark.sql("SELECT window.start, max(count) FROM windows GROUP BY 1").collect())
        )
    assert counts[0] and counts[1] == counts[0]


def test_validate_config_example_gives_one_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("number_of_companies: 5\ndrivers_per_company: 0\nevent_rate_per_driver: 2\n"
                      "company_onboarding_interval: PT1H\n")  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "fleetgen_spark.cli", "validate-config", str(broken)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "field 'drivers_per_company' = 0: Input should be greater than or equal to 1" in out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1
