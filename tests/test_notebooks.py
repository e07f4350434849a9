"""The notebooks in examples/ run top to bottom against the installed package, and are kept without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_the_learner_notebooks_are_there() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01_read_the_stream.ipynb",
        "02_backfill_and_query_delta.ipynb",
        "03_windowed_aggregation.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {number} has outputs: clear them before committing"
            assert cell.get("execution_count") is None, f"{path.name} cell {number} has an execution count"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    """Each notebook in a fresh kernel (its own Spark session), in an empty directory."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    where = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources=where).execute()
    text = "\n".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    expected = {
        "01_read_the_stream": "|batch_id",
        "02_backfill_and_query_delta": "intervals whose count differs: 0",
        "03_windowed_aggregation": "|hour",
    }[path.stem]
    assert expected in text, text[-3000:]
