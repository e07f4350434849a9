"""fleetgen on Spark Connect: an in-process server (``local[2]``) and a separate one on loopback.

Every client runs in a process of its own (tests/connect_scenario.py): the test run holds a
classic SparkSession, and pyspark allows only one kind of session per process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyspark
import pytest

import fleetgen_spark
from fleetgen_spark import OptionError
from fleetgen_spark.spark.jars import DELTA_PACKAGE

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = Path(__file__).resolve().parent / "connect_scenario.py"
ROWS = 377  # small preset, 2025-11-08 00:00-02:00: the same rows as on a classic session (test below)


def _client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "PYTHONPATH")}
    # A local[N] server binds port 15002 unless pyspark runs in its test mode, where it takes a free
    # port and the client asks the server which one (pyspark.sql.connect.client.core.default_port).
    env["SPARK_TESTING"] = "1"
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    return env


def _run_client(remote: str, data_dir: Path, *extra: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(SCENARIO), "--remote", remote, "--data-dir", str(data_dir), *extra],
        capture_output=True, text=True, env=_client_env(), cwd=data_dir.parent, timeout=600, check=False,
    )  # fmt: skip
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise AssertionError(f"client failed ({out.returncode}):\n{out.stderr[-6000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_a_remote_that_is_no_connect_address_is_refused() -> None:
    with pytest.raises(OptionError, match=r"remote 'http://x:1' is not a Spark Connect address; use sc://host:port"):
        fleetgen_spark.spark_session(remote="http://x:1")


def test_the_remote_flag_reaches_the_session(tmp_path: Path) -> None:
    argv = ["backfill", "--remote", "http://x:1", "--data-dir", str(tmp_path / "data"),
            "--start", "2025-11-08T00:00:00Z", "--end", "2025-11-08T01:00:00Z"]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "fleetgen_spark.cli", *argv], capture_output=True, text=True, check=False
    )
    assert out.returncode == 1
    assert "fleetgen backfill: error: remote 'http://x:1' is not a Spark Connect address" in out.stderr
    assert "Traceback" not in out.stderr


def test_without_the_connect_libraries_the_error_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['grpc'] = None\n"  # as if grpcio were not installed
        "import fleetgen_spark\n"
        "try:\n    fleetgen_spark.spark_session(remote='sc://127.0.0.1:1')\n"
        "except fleetgen_spark.OptionError as err:\n    print(err)\n"
    )
    # A script, not python -c: pyspark takes a main module without __file__ for its doctests and exits.
    script = tmp_path / "no_grpc.py"
    script.write_text(code, encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("remote 'sc://127.0.0.1:1' needs the Spark Connect client libraries (")
    assert out.stdout.rstrip().endswith("install them with: pip install 'fleetgen-spark[connect]'")


@pytest.mark.slow
def test_the_classic_session_reads_the_same_rows(spark: Any) -> None:
    options = {"config": "small", "start": "2025-11-08T00:00:00Z", "end": "2025-11-08T02:00:00Z"}
    assert spark.read.format("fleetgen").options(**options).load().count() == ROWS


@pytest.fixture(scope="module")
def local_connect_client(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One client process on a local[2] Connect server (a JVM start of about a minute on 2 cores) for the two
    tests below: the source read and streamed into Delta, then the whole pipeline, then the README's examples."""
    root = tmp_path_factory.mktemp("local-connect")
    return _run_client("local[2]", root / "data", "--readme", "--also-pipeline", str(root / "pipeline"))


@pytest.mark.spark  # a JVM in a subprocess
@pytest.mark.slow
def test_local_connect_server_reads_and_streams_into_delta(local_connect_client: dict[str, Any]) -> None:
    seen = local_connect_client
    assert seen["session"] == "pyspark.sql.connect.session.SparkSession"
    assert (seen["read_rows"], seen.get("delta_rows")) == (ROWS, ROWS), seen.get("stream_error")
    # Delta's DeltaTable API needs Delta's Connect plugin on the server, which this setup lacks.
    assert "NO_HANDLER_FOR_EXTENSION" in seen["delta_table_api"], seen["delta_table_api"]
    # The README's notebook examples, with SPARK_REMOTE set instead of a session of their own.
    assert seen["readme_rows"] > 0
    assert seen["readme_query_active"] is False


@pytest.mark.spark  # a JVM in a subprocess
@pytest.mark.slow
def test_the_whole_pipeline_runs_on_a_connect_session(local_connect_client: dict[str, Any]) -> None:
    assert local_connect_client["session"] == "pyspark.sql.connect.session.SparkSession"
    assert "pipeline_error" not in local_connect_client, local_connect_client["pipeline_error"]
    seen = local_connect_client["pipeline"]
    assert seen["companies"] == 5
    assert seen["driver_events"] == seen["manifest"]["total_events"] > 0
    assert seen["manifest"]["batch_count"] == 8


# A Connect server of its own, as a remote user meets one -------------------------------------------


def _bare_worker_python(where: Path) -> Path:
    """A Python with this environment's libraries (numpy, pyarrow, pandas, pyspark...) but without
    fleetgen_spark: a venv whose site-packages links every entry of ours except the package itself
    and the editable install's hooks (.pth files), so only an artifact can bring the package."""
    venv.EnvBuilder(with_pip=False).create(where)
    ours = Path(pyspark.__file__).resolve().parent.parent
    site = next(where.glob("lib/python3*/site-packages"))
    for entry in ours.iterdir():
        if not entry.name.startswith(("fleetgen", "__editable__")) and entry.suffix != ".pth":
            (site / entry.name).symlink_to(entry)
    python = where / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import numpy, pyarrow, pandas, pydantic, yaml, isodate, pyspark"],
                           capture_output=True, text=True, cwd=where, check=False)  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert subprocess.run([str(python), "-c", "import fleetgen_spark"], capture_output=True, cwd=where).returncode != 0
    return python


def _package_zip(where: Path) -> Path:
    """The built wheel, as the zip that addArtifacts(pyfile=True) takes (it refuses the .whl name)."""
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(where), str(ROOT)],
                   check=True, capture_output=True, cwd=where)  # fmt: skip
    wheel = next(where.glob("fleetgen_spark-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        assert "fleetgen_spark/presets/small.yaml" in zf.namelist()
    return Path(shutil.copy(wheel, where / "fleetgen_spark.zip"))


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``spark-submit --class ...SparkConnectServer`` from the pyspark package, with Delta, on a free
    loopback port, whose Python workers run a Python that has no fleetgen_spark."""
    home = tmp_path_factory.mktemp("connect-server")
    python = _bare_worker_python(home / "worker-venv")
    spark_home = Path(pyspark.__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "PYTHONPATH", "SPARK_TESTING")}
    env.update(PYSPARK_PYTHON=str(python), SPARK_LOCAL_IP="127.0.0.1", SPARK_HOME=str(spark_home))
    log = home / "server.log"
    command = [
        str(spark_home / "bin" / "spark-submit"), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--master", "local[2]", "--packages", DELTA_PACKAGE,
        "--conf", "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
        "--conf", "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
        "--conf", "spark.connect.grpc.binding.port=0",  # a free port, read back from the log
        "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
        "--conf", "spark.ui.enabled=false", "--conf", "spark.sql.shuffle.partitions=2",
    ]  # fmt: skip
    with log.open("wb") as sink:
        # cwd matters: Python workers put it on sys.path, and the checkout holds fleetgen_spark/.
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=home,
                                  start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (found := re.search(rb"Spark Connect server started at: [\d.]+:(\d+)", log.read_bytes())):
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the Connect server did not start:\n{log.read_text(errors='replace')[-5000:]}")
            time.sleep(0.5)
        yield f"sc://127.0.0.1:{int(found.group(1))}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture(scope="module")
def package_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _package_zip(tmp_path_factory.mktemp("wheel"))


@pytest.mark.spark  # a JVM in a subprocess
@pytest.mark.slow
def test_a_remote_server_gets_the_package_as_an_artifact(
    connect_server: str, package_zip: Path, tmp_path: Path
) -> None:
    seen = _run_client(connect_server, tmp_path / "data", "--artifact", str(package_zip))
    assert seen["session"] == "pyspark.sql.connect.session.SparkSession"
    # The server's Python cannot import the package until the artifact arrives: the artifact matters.
    assert seen["worker_before"] == "ImportError: No module named 'fleetgen_spark'"
    assert seen["worker_after"].endswith("/fleetgen_spark.zip/fleetgen_spark/__init__.py")
    assert seen["read_rows"] == ROWS
    # Spark 4.2 runs a streaming query in a clone of the session, and the clone's Python data source
    # planner does not see the session's pyfiles: to stream, the server's Python needs the package
    # installed (README, Spark Connect). When this starts to pass, Spark fixed it: update the README.
    assert "No module named 'fleetgen_spark'" in seen.get("stream_error", ""), seen


# The service and the command line on Spark Connect, as a user runs them ----------------------------

# What only our own lines look like: "HH:MM:SS LEVEL [component] message", the progress lines of a
# command, and its closing lines.
_OURS = re.compile(
    r"^(\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) +\[\w+\] |intervals \d+/\d+ |backfill done: |paused: |fleetgen )"
)


def _only_our_lines(text: str) -> None:
    assert ";token=" not in text, text[:3000]  # Connect's worker printed its URL with the session's token
    assert "Exception in thread" not in text and "\tat " not in text and "Traceback" not in text, text[:3000]
    strangers = [line for line in text.splitlines() if line.strip() and not _OURS.match(line)]
    assert not strangers, strangers[:20]


@pytest.mark.slow
def test_a_connect_backfill_of_one_interval_per_trigger_writes_the_classic_rows(spark: Any, tmp_path: Path) -> None:
    """Empty intervals (nobody eligible yet) once crashed the writer on Connect (CANNOT_INFER_EMPTY_SCHEMA)."""
    data = tmp_path / "data"
    out = subprocess.run(
        [sys.executable, "-m", "fleetgen_spark.cli", "backfill", "--remote", "local[2]", "--config", "small",
         "--start", "2025-11-08T00:00:00Z", "--end", "2025-11-08T02:00:00Z", "--data-dir", str(data),
         "--max-intervals-per-trigger", "1"],
        capture_output=True, text=True, env=_client_env(), cwd=tmp_path, timeout=900, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.startswith("backfill done: 8 intervals, 377 events"), out.stdout
    _only_our_lines(out.stdout + out.stderr)
    options = {"config": "small", "start": "2025-11-08T00:00:00Z", "end": "2025-11-08T02:00:00Z", "seed": "100"}
    classic = spark.read.format("fleetgen").options(**options).load()
    written = spark.read.format("delta").load(str(data / "delta" / "driver_events")).drop("event_date")
    assert written.count() == ROWS
    assert written.exceptAll(classic).count() == 0 and classic.exceptAll(written).count() == 0


@pytest.mark.spark  # a JVM in a subprocess
@pytest.mark.slow
def test_fleetgen_run_on_a_local_connect_server_serves_pauses_and_stops_quietly(tmp_path: Path) -> None:
    """``fleetgen run --remote local[2]`` while port 15002 is taken: the server takes a free port."""
    import httpx

    data, log = tmp_path / "data", tmp_path / "run.log"
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 15002))
            taken.listen(1)
        except OSError:  # somebody else holds it: the point is the same
            pass
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        env = {**_client_env(), "PYSPARK_PYTHON": sys.executable}
        env.pop("FLEETGEN_API_TOKEN", None)
        command = [sys.executable, "-m", "fleetgen_spark.cli", "run", "--remote", "local[2]", "--config", "small",
                   "--speedup", "3600", "--data-dir", str(data), "--port", str(port)]  # fmt: skip
        with log.open("wb") as sink:
            proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, trust_env=False) as client:
                deadline = time.monotonic() + 600
                health: dict[str, Any] = {}
                while health.get("batches_generated_count", 0) < 1:
                    assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
                    time.sleep(1)
                    try:
                        health = client.get("/health").json()
                    except httpx.TransportError:
                        continue
                assert health["status"] == "running" and health["lag_s"] is not None, health
                proc.send_signal(signal.SIGUSR1)
                while (health := client.get("/health").json())["status"] != "paused":
                    assert time.monotonic() < deadline, health
                    time.sleep(0.5)
                assert health["last_error"] is None, health
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=120) == 0, log.read_text()[-4000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    _only_our_lines(log.read_text())
