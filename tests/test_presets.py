"""The presets travel inside the package: found by name from anywhere, even from a zip."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import fleetgen_spark
from fleetgen_spark import ConfigError, load_config
from fleetgen_spark.core.config import preset_names, resolve_config_path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(fleetgen_spark.__file__).resolve().parent
MINIMAL_YAML = (
    "number_of_companies: 3\ndrivers_per_company: 2\nevent_rate_per_driver: 1.0\ncompany_onboarding_interval: PT1H\n"
)


@pytest.fixture(autouse=True)
def _empty_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs where no conf/ exists, as a user outside the checkout would."""
    monkeypatch.delenv("FLEETGEN_CONF_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


def test_conf_in_the_repository_holds_the_same_presets_as_the_package() -> None:
    repo = {p.name: p.read_bytes() for p in (ROOT / "conf").glob("*.yaml")}
    packaged = {p.name: p.read_bytes() for p in (PACKAGE / "presets").glob("*.yaml")}
    assert sorted(repo) == ["base.yaml", "living.yaml", "messy.yaml", "scaling.yaml", "small.yaml"]
    assert packaged == repo, "conf/*.yaml and fleetgen_spark/presets/*.yaml differ: copy the one you changed"


@pytest.mark.parametrize("name", ["small", "small.yaml", "small.yml"])
def test_a_bare_name_is_found_among_the_package_presets(name: str) -> None:
    found = resolve_config_path(name)
    assert Path(str(found)).resolve() == PACKAGE / "presets" / "small.yaml"
    assert load_config(name).seed == 100


def test_conf_of_the_working_directory_comes_before_the_package(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "small.yaml").write_text(MINIMAL_YAML, encoding="utf-8")
    assert load_config("small").number_of_companies == 3
    assert "small" in preset_names()


def test_a_path_is_not_looked_up_among_the_presets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'sub/small\.yaml' not found"):
        load_config("sub/small.yaml")


def test_an_unknown_name_lists_the_presets_found(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mine.yaml").write_text(MINIMAL_YAML, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config("smal")
    assert str(err.value) == (
        "config 'smal' not found in ./conf/, the working directory or fleetgen's presets; "
        "known presets: base, living, messy, mine, scaling, small"
    )


def test_presets_load_when_the_package_is_imported_from_a_zip(tmp_path: Path) -> None:
    """Spark Connect ships the package to the server's Python workers as a zip (addArtifacts)."""
    archive = tmp_path / "fleetgen_spark.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in PACKAGE.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, path.relative_to(PACKAGE.parent).as_posix())
    code = (
        f"import sys; sys.path.insert(0, {str(archive)!r}); import fleetgen_spark; "
        "assert fleetgen_spark.__file__.startswith(sys.path[0]), fleetgen_spark.__file__; "
        "from fleetgen_spark.core.config import resolve_config_path; "
        "print(resolve_config_path('small'), fleetgen_spark.load_config('small').seed)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [f"{archive}/fleetgen_spark/presets/small.yaml", "100"]
