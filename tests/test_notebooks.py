"""The notebooks in examples/ run top to bottom against the installed package, and are kept without outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
# The grading notebooks (04..08) backfill a data directory each and are not run here: a run costs
# minutes; tests/test_grade.py runs their reference solutions and grading on one shared course.
RUN = [p for p in NOTEBOOKS if p.stem.split("_", 2)[1] != "grade"]


def test_the_learner_notebooks_are_there() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01_read_the_stream.ipynb",
        "02_backfill_and_query_delta.ipynb",
        "03_windowed_aggregation.ipynb",
        "04_grade_dedup.ipynb",
        "05_grade_quarantine.ipynb",
        "06_grade_scd2.ipynb",
        "07_grade_sessions.ipynb",
        "08_grade_late_windows.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {number} has outputs: clear them before committing"
            assert cell.get("execution_count") is None, f"{path.name} cell {number} has an execution count"


def _outputs(notebook: object, stream: str | None = None) -> str:
    """The text a reader sees under the code cells (only one stream's, when given)."""
    return "\n".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells  # type: ignore[attr-defined]
        if cell.cell_type == "code"
        for output in cell.outputs
        if stream is None or output.get("name") == stream
    )


@pytest.mark.spark  # a JVM in a subprocess
@pytest.mark.slow
@pytest.mark.parametrize("path", RUN, ids=lambda p: p.stem)
def test_notebook_runs_twice_in_one_folder(path: Path, tmp_path: Path) -> None:
    """Run All, then Run All again in a fresh kernel (its own Spark session), in one folder, as a learner does."""
    import nbformat
    from nbclient import NotebookClient

    expected = {
        "01_read_the_stream": "|batch_id",
        "02_backfill_and_query_delta": "intervals whose count differs: 0",
        "03_windowed_aggregation": "|hour",
    }[path.stem]
    where = {"metadata": {"path": str(tmp_path)}}
    for run in (1, 2):
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=600, kernel_name="python3", resources=where).execute()
        text = _outputs(notebook)
        assert expected in text, (run, text[-3000:])
        if path.stem == "03_windowed_aggregation":  # data on every run: an hour with its deliveries
            assert re.search(r"\|2025-11-08 0\d:00:00\|\s*[1-9]", text), (run, text[-3000:])
        errors = [line for line in _outputs(notebook, "stderr").splitlines() if "ERROR" in line or "Exception" in line]
        assert not errors, (run, errors[:20])
