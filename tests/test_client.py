"""The ``fleetgen`` client commands: readable output, one clear line on every failure."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port
from pyspark.sql import SparkSession

from fleetgen_spark.cli import main
from fleetgen_spark.client import format_health, format_record
from fleetgen_spark.core.config import load_config
from fleetgen_spark.service.process import Service
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.logs import configure_logging

TOKEN = "client-test-token"


@pytest.fixture(scope="module")
def service(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service that starts paused (so no Spark work runs) and wants a token for POSTs."""
    layout = DataDir(tmp_path_factory.mktemp("client") / "data")
    layout.update_state(paused=True)
    configure_logging(layout, stderr=False)
    running = Service(spark, layout, load_config("small"), "3600", "127.0.0.1", 0, TOKEN)
    running.start()
    yield running
    running.stop()
    configure_logging(None, stderr=False)


def fleetgen(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["status", "pause", "resume", "clean", "logs"])
def test_without_a_service_every_command_says_so_in_one_line(capsys: pytest.CaptureFixture[str], command: str) -> None:
    port = free_port()
    code, out, err = fleetgen(capsys, command, "--port", str(port))
    assert (code, out) == (1, "")
    assert err == (
        f"fleetgen {command}: error: no fleetgen service at http://127.0.0.1:{port}: "
        "start one with `make run` or `fleetgen run`\n"
    )


def test_status_pause_and_logs_print_readable_answers(
    service: Service, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = str(service.port)
    monkeypatch.setenv("FLEETGEN_API_TOKEN", TOKEN)
    code, out, _ = fleetgen(capsys, "status", "--port", port)
    assert code == 0 and f"fleetgen service at {service.url}: paused" in out
    assert "seed 100" in out

    code, out, _ = fleetgen(capsys, "pause", "--port", port)
    assert (code, out.split(":")[0]) == (0, "already paused")

    code, out, _ = fleetgen(capsys, "logs", "--port", port, "--level", "info", "--limit", "5")
    assert code == 0 and "RECOVER" in out
    code, out, _ = fleetgen(capsys, "logs", "--port", port, "--json", "--since", "2000-01-01T00:00:00Z")
    assert code == 0 and json.loads(out)["count"] >= 1


def test_refusals_are_one_line_with_the_reason(
    service: Service, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = str(service.port)
    monkeypatch.setenv("FLEETGEN_API_TOKEN", "wrong")
    code, out, err = fleetgen(capsys, "resume", "--port", port)
    assert (code, out) == (1, "")
    assert "refused (401 unauthorized)" in err and "set FLEETGEN_API_TOKEN" in err and err.count("\n") == 1

    code, _, err = fleetgen(capsys, "logs", "--port", port, "--limit", "0")
    assert code == 1 and "--limit = '0': must be an integer from 1 to 1,000" in err  # refused before asking
    code, _, err = fleetgen(capsys, "logs", "--port", port, "--level", "loud")
    assert code == 1 and "query.level" in err


def test_clean_reports_what_it_removed(
    service: Service, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETGEN_API_TOKEN", TOKEN)
    code, out, _ = fleetgen(capsys, "clean", "--port", str(service.port))
    # The tables exist (empty) from the service's first start, so clean removes them too.
    assert code == 0 and out.startswith(f"cleaned {service.controller.layout.root}: removed delta/, manifests/")
    assert "still paused" in out
    assert not service.controller.layout.dataset_md.exists()


def test_formatting_is_plain_text() -> None:
    health = {
        "status": "running",
        "uptime_s": 3725.0,
        "batches_generated_count": 3,
        "total_events": 120,
        "last_driver_batch": "20251108T141500Z",
        "last_company_batch": None,
        "dataset": {"data_dir": "/d", "seed": 7, "start": "2025-11-08T14:00:00Z", "speedup": "900"},
        "queries": {
            "events": {"isActive": True, "status": {"message": "Waiting for data"}, "lastProgress": {"batchId": 4}}
        },
    }
    text = format_health("http://127.0.0.1:18000", health)
    assert text.splitlines()[0] == "fleetgen service at http://127.0.0.1:18000: running (up 1h 02m 05s)"
    assert "last batch 4" in text and "seed 7" in text
    record = {"timestamp": "T", "level": "INFO", "component": "service", "message": "PAUSE", "metadata": {"a": 1}}
    assert format_record(record) == "T INFO     [service] PAUSE (a=1)"


def test_data_dir_is_not_touched_by_a_failed_client(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = fleetgen(capsys, "status", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"))
    assert code == 1 and not (tmp_path / "d").exists()


def test_the_client_of_a_data_dir_uses_the_token_the_service_drew(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No FLEETGEN_API_TOKEN: the service draws one, saves it owner-only, the CLI of that --data-dir reads it."""
    monkeypatch.delenv("FLEETGEN_API_TOKEN", raising=False)
    layout = DataDir(tmp_path / "data")
    layout.update_state(paused=True)
    configure_logging(layout, stderr=False)
    drawn = Service(spark, layout, load_config("small"), "3600", "127.0.0.1", 0)
    drawn.start()
    try:
        saved = layout.manifests / "api_token"
        assert saved.read_text().strip() == drawn.token and len(drawn.token) >= 32
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        port, data_dir = str(drawn.port), str(layout.root)

        code, out, err = fleetgen(capsys, "pause", "--port", port, "--data-dir", str(tmp_path / "elsewhere"))
        assert (code, out) == (1, "") and "401 unauthorized" in err and "--data-dir" in err

        code, out, _ = fleetgen(capsys, "pause", "--port", port, "--data-dir", data_dir)
        assert (code, out.split(":")[0]) == (0, "already paused")
        code, out, _ = fleetgen(capsys, "clean", "--port", port, "--data-dir", data_dir)
        assert code == 0 and "still paused" in out
        assert saved.read_text().strip() == drawn.token  # clean keeps the token
        code, out, _ = fleetgen(capsys, "pause", "--port", port, "--data-dir", data_dir)
        assert (code, out.split(":")[0]) == (0, "already paused")
    finally:
        drawn.stop()
        configure_logging(None, stderr=False)


def test_resume_and_pause_wait_until_the_change_is_done(
    service: Service, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service answers 202 at once; the command returns only when /health reads running, then paused."""
    monkeypatch.setenv("FLEETGEN_API_TOKEN", TOKEN)
    port = str(service.port)
    code, out, _ = fleetgen(capsys, "resume", "--port", port)
    assert (code, out.split(":")[0]) == (0, "resumed")
    assert service.controller.status == "running" and service.controller.health()["queries"]
    code, out, _ = fleetgen(capsys, "pause", "--port", port, "--json")
    body = json.loads(out)
    assert code == 0 and body["status"] == "paused" and body["last_error"] is None
    assert not any(q["isActive"] for q in body["queries"].values())
