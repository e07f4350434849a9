"""A user's install: the wheel (built from the sdist) in a fresh virtual environment, used from a
directory with no conf/ and nothing of this checkout on its paths.

Slow and online on a fresh machine: the new environment installs the wheel's dependencies (pyspark,
delta-spark, ...) through pip, from its cache when they were downloaded before.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import fleetgen_spark

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
# Variables that would lead the new environment back to this checkout or its .venv.
LEAKS = ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV", "SPARK_HOME", "FLEETGEN_CONF_DIR")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build``: the sdist, then the wheel built from that sdist (so the sdist is complete)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def user(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh venv with only the wheel (and its dependencies), and an environment that leads nowhere else."""
    home = tmp_path_factory.mktemp("user")
    env_dir = home / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    wheel = next(dist.glob("fleetgen_spark-*.whl"))
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True, cwd=home)
    env = {k: v for k, v in os.environ.items() if k not in LEAKS}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = home / "work"  # the user's directory: no conf/, no checkout
    work.mkdir()
    yield python, env


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=900, check=False)


def test_the_sdist_and_the_wheel_carry_the_presets_metadata_and_types(dist: Path) -> None:
    wheel = next(dist.glob("fleetgen_spark-*.whl"))
    sdist = next(dist.glob("fleetgen_spark-*.tar.gz"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {
        "fleetgen_spark/py.typed",
        *(f"fleetgen_spark/presets/{p}.yaml" for p in ("base", "small", "scaling")),
    } <= names
    assert f"Version: {fleetgen_spark.__version__}\n" in metadata
    assert wheel.name == f"fleetgen_spark-{fleetgen_spark.__version__}-py3-none-any.whl"
    for field in ("Summary: Realistic", "License: Apache-2.0", "License-File: LICENSE", "Requires-Python: >=3.10",
                  "Classifier: Typing :: Typed", "Description-Content-Type: text/markdown", "Provides-Extra: connect",
                  'Requires-Dist: pyspark[connect]==4.2.0; extra == "connect"'):  # fmt: skip
        assert field in metadata
    assert "## Use it from a notebook" in metadata  # the README is the long description
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    assert {"LICENSE", "README.md", "conf/small.yaml", "fleetgen_spark/presets/small.yaml"} <= members
    assert {f"examples/{p.name}" for p in (ROOT / "examples").glob("*.ipynb")} <= members


@pytest.mark.spark  # a JVM in a subprocess
def test_the_installed_package_is_the_wheel_not_this_checkout(user: tuple[Path, dict[str, str]]) -> None:
    python, env = user
    code = (
        "import sys, importlib.metadata as m, fleetgen_spark; "
        "print(fleetgen_spark.__file__); print(fleetgen_spark.__version__, m.version('fleetgen-spark')); "
        "print('\\n'.join(sys.path))"
    )
    out = _run([str(python), "-c", code], env, python.parent.parent.parent / "work")
    assert out.returncode == 0, out.stderr
    where, versions, *path = out.stdout.splitlines()
    assert where.startswith(str(python.parent.parent / "lib")), where
    assert versions == f"{fleetgen_spark.__version__} {fleetgen_spark.__version__}"
    assert not [p for p in path if p.startswith(str(ROOT))], path


def test_validate_config_finds_a_preset_with_no_conf_directory(user: tuple[Path, dict[str, str]]) -> None:
    python, env = user
    work = python.parent.parent.parent / "work"
    assert not (work / "conf").exists()
    out = _run(["fleetgen", "validate-config", "small"], env, work)
    assert out.returncode == 0, out.stderr
    assert "seed: 100\nnumber_of_companies: 5\n" in out.stdout
    wrong = _run(["fleetgen", "validate-config", "smal"], env, work)
    assert wrong.returncode == 1
    assert "known presets: base, living, messy, scaling, small" in wrong.stderr and "Traceback" not in wrong.stderr


@pytest.mark.spark  # a JVM in a subprocess
def test_the_readme_notebook_snippet_runs(user: tuple[Path, dict[str, str]]) -> None:
    python, env = user
    work = python.parent.parent.parent / "work"
    section = README[README.index("## Use it from a notebook") :]
    blocks = re.findall(r"```python\n(.*?)```", section[: section.index("\n## ", 5)], re.DOTALL)
    script = work / "snippet.py"
    script.write_text("\n".join(blocks) + "\nprint('ROWS', df.count())\n", encoding="utf-8")
    out = _run([str(python), str(script)], env, work)
    assert out.returncode == 0, out.stderr[-5000:]
    assert re.search(r"^ROWS [1-9]\d*$", out.stdout, re.MULTILINE), out.stdout[-3000:]
    assert "|batch_id" in out.stdout


@pytest.mark.spark  # a JVM in a subprocess
def test_a_small_backfill_runs(user: tuple[Path, dict[str, str]]) -> None:
    python, env = user
    work = python.parent.parent.parent / "work"
    argv = ["fleetgen", "backfill", "--config", "small", "--data-dir", "data",
            "--start", "2025-11-08T00:00:00Z", "--end", "2025-11-08T02:00:00Z"]  # fmt: skip
    out = _run(argv, env, work)
    assert out.returncode == 0, out.stderr[-5000:]
    assert "backfill done: 8 intervals" in out.stdout
    assert (work / "data" / "delta" / "driver_events" / "_delta_log").is_dir()
