"""Beyond one machine: the pipeline on a Spark standalone cluster, and the Docker Compose files.

The cluster test starts a master and two workers on 127.0.0.1 with ``scripts/cluster.sh``
(ports and directories of its own), runs ``fleetgen backfill`` and ``fleetgen onboard`` there
and the same backfill in ``local[2]``, and checks that the Delta tables agree row for row:
the rows are a pure function of (config, seed, interval), not of where Spark ran them. The
cluster's data directory is on HDFS (the mini cluster of conftest): nothing relies on a disk
that the driver and the executors share.
The Docker checks are static: this machine has no Docker daemon.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import HdfsServer
from helpers import free_port

from fleetgen_spark.spark.jars import DELTA_PACKAGE
from fleetgen_spark.spark.session import _loopback_cluster

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SH = ROOT / "scripts" / "cluster.sh"
FLEETGEN = Path(sys.executable).with_name("fleetgen")
DOCKER = ROOT / "docker"

# Three hours of the small preset: twelve 15-minute intervals in one micro-batch.
BACKFILL = ["--config", "small", "--start", "2025-11-08T00:00:00Z", "--end", "2025-11-08T03:00:00Z"]
INTERVALS = 12
# The machine has 2 cores shared with other Spark tests: be patient, but never wait blindly.
RUN_TIMEOUT_S = 900
CLUSTER_TIMEOUT_S = 300
TABLES = {"companies": ["company_id"], "driver_events": ["event_id"], "batches": ["batch_id"]}
WALL_CLOCK_COLUMNS = {"generation_time"}


def job_env(**extra: str) -> dict[str, str]:
    """The environment of a ``fleetgen`` subprocess: this interpreter, loopback only, no parent gateway."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
    env.update(PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1", **extra)
    # Spark options for a driver that Python starts: no UI (no port to find among the other tests).
    env["PYSPARK_SUBMIT_ARGS"] = "--conf spark.ui.enabled=false pyspark-shell"
    return env


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} does not exist)"


@dataclass
class Job:
    """A ``fleetgen`` command running in the background, its output in a log file."""

    name: str
    log: Path
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, name: str, args: list[str], log: Path) -> Job:
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(FLEETGEN), *args], cwd=ROOT, env=job_env(), stdout=out, stderr=subprocess.STDOUT
            )
        return cls(name, log, process)

    def wait(self, timeout: float = RUN_TIMEOUT_S) -> str:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{self.name} did not finish in {timeout} s; its output ends with:\n{tail(self.log)}")
        output = self.log.read_text(errors="replace")
        assert code == 0, f"{self.name} exited with {code}; its output ends with:\n{tail(self.log)}"
        return output

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run(name: str, args: list[str], log: Path) -> str:
    return Job.start(name, args, log).wait()


@dataclass(frozen=True)
class Cluster:
    master: str
    ui: str
    directory: Path

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.ui}/json/", timeout=10) as answer:
            return dict(json.load(answer))

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{tail(p, 15)}" for p in sorted((self.directory / "logs").glob("*.log")))


@pytest.fixture
def local_backfill(tmp_path: Path) -> Iterator[tuple[Job, Path]]:
    """The reference run in local[2], started first so that it overlaps the cluster's start-up."""
    data = tmp_path / "local"
    args = ["backfill", *BACKFILL, "--master", "local[2]", "--data-dir", str(data)]
    job = Job.start("local backfill", args, tmp_path / "local.log")
    try:
        yield job, data
    finally:
        job.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A master and two workers (1 core, 1g each) on loopback; always stopped, even on failure."""
    directory = tmp_path / "cluster"
    master_port, ui_port = free_port(), free_port()
    env = job_env(
        CLUSTER_DIR=str(directory),
        WORKERS="2",
        WORKER_CORES="1",
        WORKER_MEMORY="1g",
        MASTER_PORT=str(master_port),
        MASTER_UI_PORT=str(ui_port),
        WORKER_UI_PORT="0",
        CLUSTER_TIMEOUT=str(CLUSTER_TIMEOUT_S),
    )
    found = Cluster(f"spark://127.0.0.1:{master_port}", f"http://127.0.0.1:{ui_port}", directory)
    try:
        # cluster.sh polls the master's JSON status until it is ALIVE with both workers registered.
        up = subprocess.run(
            [str(CLUSTER_SH), "up"], env=env, capture_output=True, text=True, timeout=CLUSTER_TIMEOUT_S + 60
        )
        assert up.returncode == 0, f"cluster.sh up failed:\n{up.stdout}{up.stderr}\n{found.logs()}"
        yield found
    finally:
        down = subprocess.run([str(CLUSTER_SH), "down"], env=env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, f"cluster.sh down failed:\n{down.stdout}{down.stderr}"


def table_rows(spark: Any, path: Path | str, keys: list[str]) -> list[tuple[Any, ...]]:
    df = spark.read.format("delta").load(str(path))
    columns = sorted(c for c in df.columns if c not in WALL_CLOCK_COLUMNS)
    return [tuple(row) for row in df.select(*columns).orderBy(*keys).collect()]


def executor_dirs(cluster: Cluster, app_name: str) -> list[Path]:
    """The scratch directories of the executors that ran the application named ``app_name``."""
    state = cluster.state()  # one snapshot: an application moves from active to completed
    apps = [a for a in state["completedapps"] + state["activeapps"] if a["name"] == app_name]
    assert apps, f"the master never saw an application named {app_name!r}: {state}"
    return sorted(cluster.directory.glob(f"work/worker-*/{apps[-1]['id']}/*"))


@pytest.mark.spark  # a JVM in a subprocess
@pytest.mark.slow
def test_cluster_run_on_hdfs_equals_local_run(
    local_backfill: tuple[Job, Path],
    cluster: Cluster,
    hdfs_server: HdfsServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    state = cluster.state()
    assert state["status"] == "ALIVE"
    assert sum(w["state"] == "ALIVE" for w in state["workers"]) == 2, state["workers"]

    data = f"{hdfs_server.namenode}/on-cluster"
    on_hdfs = [arg for key, value in hdfs_server.conf().items() for arg in ("--conf", f"{key}={value}")]
    args = ["backfill", *BACKFILL, "--master", cluster.master, "--data-dir", data, *on_hdfs]
    output = run("cluster backfill", args, tmp_path / "cluster-backfill.log")
    assert f"backfill done: {INTERVALS} intervals" in output

    # Both workers ran an executor for the backfill, and each received the Delta jar from the driver.
    executors = executor_dirs(cluster, "fleetgen-backfill")
    assert {p.parent.parent.name for p in executors} == {"worker-1", "worker-2"}, executors
    jar = "{}_{}-{}.jar".format(*DELTA_PACKAGE.split(":"))
    for executor in executors:
        assert (executor / jar).is_file(), f"{jar} missing in {executor}: {sorted(os.listdir(executor))}"

    # Onboarding on the cluster again: nothing is due, and MERGE must not duplicate a company.
    args = ["onboard", "--now", "--config", "small", "--master", cluster.master, "--data-dir", data, *on_hdfs]
    output = run("cluster onboard", args, tmp_path / "cluster-onboard.log")
    assert re.search(r"companies: 5 in ", output), output[-2000:]

    job, local = local_backfill
    assert f"backfill done: {INTERVALS} intervals" in job.wait()

    spark = request.getfixturevalue("spark")
    for table, keys in TABLES.items():
        on_cluster = table_rows(spark, f"{data}/delta/{table}", keys)
        in_local = table_rows(spark, local / "delta" / table, keys)
        assert on_cluster, f"{table} is empty"
        assert len(on_cluster) == len(in_local), (
            f"{table}: {len(on_cluster)} rows on the cluster, {len(in_local)} local"
        )
        differ = [(c, lo) for c, lo in zip(on_cluster, in_local, strict=True) if c != lo]
        assert not differ, f"{table}: {len(differ)} rows differ, first (cluster, local): {differ[0]}"
    assert len(table_rows(spark, f"{data}/delta/batches", ["batch_id"])) == INTERVALS


@pytest.mark.parametrize(
    ("master", "loopback"),
    [
        ("spark://127.0.0.1:17077", True),
        ("spark://localhost:7077", True),
        ("spark://spark-master:7077", False),
        ("local[2]", False),
        (None, False),
    ],
)
def test_a_driver_for_a_cluster_on_loopback_stays_on_loopback(master: str | None, loopback: bool) -> None:
    assert _loopback_cluster(master) is loopback


def test_cluster_script_usage_and_status_without_a_cluster(tmp_path: Path) -> None:
    env = job_env(CLUSTER_DIR=str(tmp_path), MASTER_UI_PORT=str(free_port()))
    wrong = subprocess.run([str(CLUSTER_SH), "up", "WORKERS=1"], env=env, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2
    assert "usage:" in wrong.stderr
    status = subprocess.run([str(CLUSTER_SH), "status"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 3, status.stdout + status.stderr
    assert "not answering" in status.stdout
    down = subprocess.run([str(CLUSTER_SH), "down"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr


# --- Docker: static checks (no Docker daemon here) -------------------------------------------------


def compose() -> dict[str, Any]:
    text = (DOCKER / "docker-compose.yml").read_text()
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        # The real parser, with .env.example standing in for the user's docker/.env.
        env_file = DOCKER / ".env"
        created = not env_file.exists()
        if created:
            shutil.copy(DOCKER / ".env.example", env_file)
        try:
            out = subprocess.run(
                [docker, "compose", "-f", str(DOCKER / "docker-compose.yml"), "config", "--format", "json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        finally:
            if created:
                env_file.unlink()
        return dict(json.loads(out))
    return dict(yaml.safe_load(text))


def memory_bytes(value: str | int) -> int:
    """Compose's memory sizes: bytes as a number (normalised) or with a unit (as written, ``2g``)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)b?", str(value).strip().lower())
    assert match, f"not a memory size: {value!r}"
    return int(float(match[1]) * 1024 ** " kmg".index(match[2] or " "))


def published(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) pairs, from either the short or the long (normalised) syntax."""
    pairs = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            pairs.add((int(port["published"]), int(port["target"])))
        else:
            host, container = str(port).rsplit(":", 2)[-2:]
            pairs.add((int(host), int(container)))
    return pairs


def test_compose_services_ports_limits_and_health_checks() -> None:
    services = compose()["services"]
    assert {"spark-master", "spark-worker", "spark-driver"} <= set(services)
    master, worker, driver = services["spark-master"], services["spark-worker"], services["spark-driver"]

    assert (17080, 8080) in published(master)
    assert {(18000, 18000), (14040, 4040)} <= published(driver)
    command = " ".join(driver["command"])
    assert "fleetgen run" in command
    assert "--master spark://spark-master:7077" in command
    assert "--host 0.0.0.0" in command
    assert "spark://spark-master:7077" in " ".join(worker["command"])

    for name in ("spark-driver", "spark-worker"):
        limits = services[name]["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) == 1.0, (name, limits)
        assert memory_bytes(limits["memory"]) == 2 * 1024**3, (name, limits)
        # Executors write the tables, the driver the checkpoints: one directory, one path.
        targets = [v["target"] if isinstance(v, dict) else str(v).split(":")[1] for v in services[name]["volumes"]]
        assert "/opt/fleetgen/data" in targets, (name, targets)

    assert "18000/health" in " ".join(driver["healthcheck"]["test"])
    assert "8080" in " ".join(master["healthcheck"]["test"])
    assert driver["depends_on"]["spark-master"]["condition"] == "service_healthy"


def test_compose_takes_the_api_token_from_an_env_file() -> None:
    # As written: `docker compose config` folds env_file into environment.
    driver = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())["services"]["spark-driver"]
    assert driver["env_file"] == [".env"], driver["env_file"]
    # Interpolated with `:?`, so that compose stops with a hint when docker/.env has no token.
    assert driver["environment"]["FLEETGEN_API_TOKEN"].startswith("${FLEETGEN_API_TOKEN:?")
    assert compose()["services"]["spark-driver"]["environment"]["FLEETGEN_API_TOKEN"]
    example = (DOCKER / ".env.example").read_text()
    assert re.search(r"^FLEETGEN_API_TOKEN=change-me$", example, re.M)


def makefile_install_commands() -> list[str]:
    """The venv and pip commands of ``make install``, with the Makefile's defaults substituted."""
    text = (ROOT / "Makefile").read_text()
    defaults = dict(re.findall(r"^(PYTHON|VENV) \?= (\S+)$", text, re.M))
    py = re.search(r"^PY := (\S+)$", text, re.M)
    assert py, "the Makefile no longer defines PY"
    commands = []
    for line in text.splitlines():
        if line.startswith("\t") and re.search(r"-m (venv|pip install)", line):
            command = line.strip().replace("$(PY)", py[1])
            for name, value in defaults.items():
                command = command.replace(f"$({name})", value)
            commands.append(command)
    return commands


def dockerfile_run_commands() -> list[str]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    runs = [line.strip()[4:] for line in text.splitlines() if line.strip().startswith("RUN ")]
    return [" ".join(part.split()) for run in runs for part in run.split("&&")]


def test_dockerfile_installs_like_the_makefile() -> None:
    make = makefile_install_commands()
    assert len(make) >= 2, make  # the venv, then at least the package
    docker = dockerfile_run_commands()
    missing = [c for c in make if " ".join(c.split()) not in docker]
    assert not missing, f"the Dockerfile does not run {missing}; its RUN commands: {docker}"
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.M), "the image must run as a non-root user"
    assert "openjdk-17" in dockerfile or "temurin:17" in dockerfile


def _make_n(target: str, venv: Path) -> list[str]:
    """The commands ``make TARGET`` would run (make -n), for a virtual environment at ``venv``."""
    out = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [" ".join(line.split()) for line in out.stdout.splitlines()]


def test_make_run_installs_only_what_running_needs_and_make_test_the_dev_extras(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run = _make_n("run", venv)
    assert f"{venv}/bin/python -m pip install --quiet -e ." in run, run
    assert not [line for line in run if "[dev]" in line], run  # about 1 GB that running does not use
    assert f"{venv}/bin/python -m pip install --quiet -e '.[dev]'" in _make_n("test", venv)
    # Once the dev extras are in, `make run` installs nothing; after `make run`, `make test` adds them.
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    (venv / ".installed-run").touch()
    assert not [line for line in _make_n("run", venv) if "pip install" in line]
    assert [line for line in _make_n("install", venv) if "[dev]" in line]
    (venv / ".installed-dev").touch()
    assert not [line for line in _make_n("test", venv) if "pip install" in line]
