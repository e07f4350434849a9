"""The OpenAPI document tells the truth: schemathesis, with every check, finds nothing against a live service.

A real ``fleetgen run --config small --speedup 900`` (real Spark, real Delta, real uvicorn on a free loopback
port) is tested by the schemathesis command line, once with the service's token (pause, resume and clean really
run) and once without it (every POST must then be refused as the document says).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.spark]

# Bounds: examples per operation, seconds per request and per run (``--max-time`` would fuzz until it is spent).
MAX_EXAMPLES = "30"
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """``fleetgen run`` in a subprocess: its URL, its drawn token (read as a client would) and its log."""
    root = tmp_path_factory.mktemp("openapi")
    data, log = root / "data", root / "run.log"
    port = free_port()
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.pop("FLEETGEN_API_TOKEN", None)
    command = [sys.executable, "-m", "fleetgen_spark.cli", "run", "--master", "local[1]", "--config", "small"]
    command += ["--speedup", "900", "--data-dir", str(data), "--port", str(port)]
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                pytest.fail(f"fleetgen run exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/health", trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("fleetgen run did not answer /health within 600 s")
            time.sleep(0.5)
        token = (data / "manifests" / "api_token").read_text().strip()
        yield url, token, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def schemathesis(url: str, cwd: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``st run`` with every check; in ``cwd``, where it keeps its cache (never the repository)."""
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    command = [st, "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", MAX_EXAMPLES]
    command += ["--workers", "1", "--request-timeout", "10", "--no-color", *options]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, cwd=cwd)


def test_schemathesis_finds_nothing_with_the_token(live: tuple[str, str, Path], tmp_path: Path) -> None:
    url, token, log = live
    run = schemathesis(url, tmp_path, "--header", f"Authorization: Bearer {token}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout and "Authentication failed" not in run.stdout, run.stdout[-6000:]
    assert "Traceback" not in log.read_text()


def test_schemathesis_finds_nothing_without_a_token(live: tuple[str, str, Path], tmp_path: Path) -> None:
    url, _, log = live
    run = schemathesis(url, tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "FAILURES" not in run.stdout and " passed" in run.stdout, run.stdout[-6000:]
    # The only warning: pause, resume and clean answered nothing but 401 without the token, as documented.
    assert "Authentication failed: 3 operations returned only 401/403 responses" in run.stdout, run.stdout[-6000:]
    health = httpx.get(url + "/health", trust_env=False).json()
    assert health["status"] in ("running", "paused", "pausing", "resuming")
    assert "Traceback" not in log.read_text()
