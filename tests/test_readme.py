"""The README's examples work as pasted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
