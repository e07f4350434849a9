"""The ``fleetgen`` command line: one error line per refusal, exit codes, bounds, quiet output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

import fleetgen_spark
from fleetgen_spark import cli, flags
from fleetgen_spark.progress import Progress
from fleetgen_spark.spark import session
from fleetgen_spark.storage.manifests import read_json

# Variables the CLI reads or sets; each test starts without them and leaves none behind.
_ENV = (*flags.ENVIRONMENT, "SPARK_LOCAL_IP", "FLEETGEN_CONF_DIR")
BACKFILL = ["--config", "small", "--start", "2025-11-08T00:00:00Z", "--end", "2025-11-08T06:00:00Z"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.setenv(name, "")  # records the original value, restored after the test
        monkeypatch.delenv(name)


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as stop:  # argparse: usage errors, --help, --version
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _config_file(tmp_path: Path, **fields: object) -> str:
    values = {
        "number_of_companies": 3,
        "drivers_per_company": 2,
        "event_rate_per_driver": 1.0,
        "company_onboarding_interval": "PT1H",
        **fields,
    }
    path = tmp_path / "bad.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
    return str(path)


# (argv, environment, exit code, words the one error line must contain)
BAD_INPUTS: list[tuple[list[str], dict[str, str], int, tuple[str, ...]]] = [
    (["status"], {"FLEETGEN_PORT": "abc"}, 1, ("FLEETGEN_PORT", "'abc'", "1 to 65535")),
    (["run"], {"FLEETGEN_PORT": "abc"}, 1, ("FLEETGEN_PORT", "1 to 65535")),
    (["backfill", *BACKFILL], {"FLEETGEN_HOST": "a host"}, 1, ("FLEETGEN_HOST", "host name or IP")),
    (["status", "--port", "70000"], {}, 1, ("--port", "'70000'", "1 to 65535")),
    (["run", "--port", "70000"], {}, 1, ("--port", "1 to 65535")),
    (["logs", "--port", "-1"], {}, 1, ("--port", "1 to 65535")),
    (["status", "--host", "http://example.com"], {}, 1, ("--host", "host name or IP")),
    (["pause"], {"FLEETGEN_HOST": "a host"}, 1, ("FLEETGEN_HOST",)),
    (["status"], {"FLEETGEN_API_TOKEN": "two words"}, 1, ("FLEETGEN_API_TOKEN",)),
    (["status"], {"FLEETGEN_VERBOSE": "loud"}, 1, ("FLEETGEN_VERBOSE", "on or off")),
    (["backfill", *BACKFILL], {"FLEETGEN_SPARK_UI": "maybe"}, 1, ("FLEETGEN_SPARK_UI", "on or off")),
    (["backfill", *BACKFILL, "--spark-ui", "perhaps"], {}, 1, ("--spark-ui", "on or off")),
    (["logs", "--limit", "0"], {}, 1, ("--limit", "1 to 1,000")),
    (["backfill", *BACKFILL, "--conf", "novalue"], {}, 1, ("--conf 'novalue'", "KEY=VALUE")),
    (["backfill", *BACKFILL, "--data-dir", "gs://b/x"], {}, 1, ("'gs://b/x'", "not supported", "s3a://bucket/prefix")),
    (["run", "--data-dir", "dbfs:/x"], {}, 1, ("'dbfs:/x'", "not supported", "hdfs://host:port/path")),
    (["logs", "--limit", "many"], {}, 1, ("--limit",)),
    (["backfill", *BACKFILL, "--max-intervals-per-trigger", "0"], {}, 1, ("--max-intervals-per-trigger", "1 to")),
    (["events", "--now", "--speedup", "max"], {}, 1, ("--speedup max", "backfill")),
    (["onboard", "--now", "--speedup", "max"], {}, 1, ("--speedup max",)),
    (["run", "--speedup", "max"], {}, 1, ("--speedup max",)),
    (["events", "--now", "--speedup", "1e10"], {}, 1, ("'speedup'", "'1e10'", "100,000")),
    (["run", "--speedup", "0.5"], {}, 1, ("'speedup'", "100,000")),
    (
        ["backfill", "--config", "small", "--start", "1960-01-01T00:00:00Z", "--end", "2025-11-08T00:00:00Z"],
        {},
        1,
        ("--start", "1960-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
    ),
    (
        ["backfill", "--config", "small", "--start", "2025-11-08T06:00:00Z", "--end", "2025-11-08T00:00:00Z"],
        {},
        1,
        ("--end", "after --start"),
    ),
    (["backfill", "--config", "small", "--start", "yesterday", "--end", "now"], {}, 1, ("--start", "ISO-8601")),
    (["backfill", "--config", "no-such-preset", *BACKFILL[2:]], {}, 1, ("no-such-preset", "presets")),
    (["validate-config", "no-such-preset"], {}, 1, ("no-such-preset",)),
    (["backfill"], {}, 2, ("required", "--start")),
    (["backfill", *BACKFILL, "--seed", "abc"], {}, 2, ("--seed", "'abc'")),
    (["status", "--bogus"], {}, 2, ("--bogus",)),
    (["bogus"], {}, 2, ("'bogus'",)),
    ([], {}, 2, ("required",)),
]


def _id(value: object) -> str | None:
    return " ".join(value) if isinstance(value, list) and value else None


@pytest.mark.parametrize(("argv", "env", "code", "words"), BAD_INPUTS, ids=_id)
def test_every_bad_input_is_one_error_line(
    argv: list[str],
    env: dict[str, str],
    code: int,
    words: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # nothing may be written; a relative data dir would land here
    got, out, err = run_main(argv, capsys)
    assert got == code, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    prog = "fleetgen" + (f" {argv[0]}" if argv and argv[0] in cli.COMMANDS else "")
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in out + err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"company_onboarding_interval": "P99999999999D"}, ("company_onboarding_interval", "longer than")),
        ({"interval": "P99999999999D"}, ("interval",)),
        (
            {"number_of_companies": 10_000_000, "drivers_per_company": 10_000, "event_rate_per_driver": 1000},
            ("number_of_companies x drivers_per_company x event_rate_per_driver", "100,000,000"),
        ),
    ],
)
def test_validate_config_refuses_values_beyond_the_bounds(
    fields: dict[str, object], words: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(["validate-config", _config_file(tmp_path, **fields)], capsys)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("fleetgen validate-config: error: ")
    assert all(word in err for word in words), err


@pytest.mark.parametrize("command", ["backfill", "onboard", "events"])
def test_a_job_lists_only_the_flags_it_uses(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    usage = capsys.readouterr().out
    assert "--port" not in usage  # a job serves no API
    assert "--host HOST the Spark UI's address" in " ".join(usage.split())
    code, _, err = run_main([command, *(BACKFILL if command == "backfill" else []), "--port", "18001"], capsys)
    assert code == 2 and "unrecognized arguments: --port" in err


def test_a_job_does_not_read_the_service_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLEETGEN_PORT", "abc")
    monkeypatch.setenv("FLEETGEN_API_TOKEN", "two words")
    args = cli.build_parser().parse_args(["backfill", *BACKFILL])
    flags.resolve(args)  # neither is checked: a backfill uses neither
    assert not hasattr(args, "port")


def test_validate_config_does_not_read_the_service_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLEETGEN_PORT", "abc")
    monkeypatch.setenv("FLEETGEN_HOST", "not a host")
    code, out, err = run_main(["validate-config", "small"], capsys)
    assert (code, err) == (0, "")
    assert "number_of_companies: 5" in out


def test_a_client_command_without_a_service_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["status", "--port", "1"], capsys)
    assert code == 1
    assert err.startswith("fleetgen status: error: no fleetgen service at http://127.0.0.1:1")
    assert len(err.splitlines()) == 1


def test_an_unexpected_failure_is_one_line_and_verbose_shows_the_trace(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("disk on fire\nsecond line of detail")

    help_text, _, kind = cli.COMMANDS["validate-config"]
    monkeypatch.setitem(cli.COMMANDS, "validate-config", (help_text, broken, kind))
    code, _, err = run_main(["validate-config", "small"], capsys)
    assert code == 1
    assert err == "fleetgen validate-config: error: RuntimeError: disk on fire (--verbose shows the details)\n"
    code, _, err = run_main(["validate-config", "small", "--verbose"], capsys)
    assert code == 1 and "Traceback" in err and err.splitlines()[-1].startswith("fleetgen validate-config: error:")


def test_an_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    help_text, _, kind = cli.COMMANDS["validate-config"]
    monkeypatch.setitem(cli.COMMANDS, "validate-config", (help_text, interrupted, kind))
    code, _, err = run_main(["validate-config", "small"], capsys)
    assert code == 130 and err == "fleetgen validate-config: interrupted\n"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["--version"], capsys)
    assert (code, out) == (0, f"fleetgen {fleetgen_spark.__version__}\n")


def test_every_command_is_in_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    for name in (
        "run",
        "backfill",
        "onboard",
        "events",
        "validate-config",
        "status",
        "pause",
        "resume",
        "clean",
        "logs",
    ):
        assert name in cli.COMMANDS and name in out


def test_the_spark_ui_binds_to_the_host_or_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.build_parser().parse_args(["backfill", *BACKFILL, "--host", "127.0.0.1"])
    args.verbose = False
    flags.resolve(args)
    flags.spark_environment(args)
    assert os.environ["SPARK_LOCAL_IP"] == "127.0.0.1" and os.environ["FLEETGEN_SPARK_UI"] == "on"
    args = cli.build_parser().parse_args(["backfill", *BACKFILL, "--spark-ui", "off"])
    args.verbose = False
    flags.resolve(args)
    flags.spark_environment(args)
    assert os.environ["FLEETGEN_SPARK_UI"] == "off"
    # A driver of a remote cluster must stay reachable: the UI goes off rather than the driver onto loopback.
    del os.environ["SPARK_LOCAL_IP"]
    args = cli.build_parser().parse_args(["backfill", *BACKFILL, "--master", "spark://10.0.0.5:7077"])
    args.verbose = False
    flags.resolve(args)
    flags.spark_environment(args)
    assert os.environ["FLEETGEN_SPARK_UI"] == "off" and "SPARK_LOCAL_IP" not in os.environ


def test_a_jvm_fleetgen_starts_runs_with_its_jit_thresholds_quiet_or_verbose(spark: SparkSession) -> None:
    # The shared session was started by fleetgen_spark.spark_session(), as every fleetgen command's is.
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    arguments = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert set(session.JIT_OPTIONS) <= set(arguments), arguments
    assert any(a.startswith("-Dlog4j2.configurationFile=") for a in arguments), arguments  # still quiet
    settings = session.base_conf()
    session._launch_conf(settings, quiet=True, more_jars=[])
    assert settings["spark.driver.extraJavaOptions"].split() == [
        *session.JIT_OPTIONS,
        f"-Dlog4j2.configurationFile={session._LOG4J_FILE.as_uri()}",
    ]
    settings = session.base_conf()
    session._launch_conf(settings, quiet=False, more_jars=[])
    assert settings["spark.driver.extraJavaOptions"].split() == list(session.JIT_OPTIONS)
    # spark-submit --properties-file spark-defaults.conf starts its driver with the same thresholds.
    defaults = (Path(__file__).parents[1] / "spark-defaults.conf").read_text().splitlines()
    java = [line.split()[1:] for line in defaults if line.startswith("spark.driver.extraJavaOptions")]
    assert java == [list(session.JIT_OPTIONS)]


def _written(manifest: Path) -> Callable[[], tuple[int, int]]:
    """What the CLI hands Progress: the batch manifest's counts, read afresh."""

    def read() -> tuple[int, int]:
        data = read_json(manifest)
        return int(data.get("batch_count", 0)), int(data.get("total_events", 0))

    return read


def test_progress_without_a_terminal_is_a_plain_line_per_micro_batch_with_rate_and_time_left(tmp_path: Path) -> None:
    import io

    manifest = tmp_path / "batch_manifest.json"
    stream = io.StringIO()
    progress = Progress(24, _written(manifest), stream=stream, every_s=0)
    progress.update()
    progress.update()  # nothing moved: no line
    manifest.write_text(json.dumps({"batch_count": 8, "total_events": 480}))
    progress.update()
    manifest.write_text(json.dumps({"batch_count": 24, "total_events": 1200}))
    progress.close()  # the last micro-batch landed after the last update: close shows it
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("intervals 0/24 (0%), 0 events")
    assert lines[1].startswith("intervals 8/24 (33%), 480 events, ")
    assert "events/s" in lines[1] and "left" in lines[1]
    assert lines[2].startswith("intervals 24/24 (100%), 1,200 events")


def test_progress_counts_only_this_runs_events_and_starts_from_what_the_directory_holds(tmp_path: Path) -> None:
    import io

    manifest = tmp_path / "batch_manifest.json"
    manifest.write_text(json.dumps({"batch_count": 8, "total_events": 480}))
    stream = io.StringIO()
    progress = Progress(24, _written(manifest), stream=stream, every_s=0)
    manifest.write_text(json.dumps({"batch_count": 16, "total_events": 1000}))
    progress.close()
    assert stream.getvalue().splitlines()[-1].startswith("intervals 16/24 (66%), 520 events")


def test_progress_on_a_terminal_is_a_bar_with_rate_and_time_left(tmp_path: Path) -> None:
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    manifest = tmp_path / "batch_manifest.json"
    stream = Terminal()
    progress = Progress(24, _written(manifest), stream=stream)
    manifest.write_text(json.dumps({"batch_count": 8, "total_events": 480}))
    progress.update()
    last = stream.getvalue().split("\r")[-1]
    assert "8/24" in last and "33%" in last and "480 events" in last and "events/s" in last
    assert "<" in last  # tqdm's elapsed<remaining
    manifest.write_text(json.dumps({"batch_count": 24, "total_events": 1200}))
    progress.close()
    assert "24/24" in stream.getvalue().split("\r")[-1]


def test_events_now_on_a_new_directory_says_nothing_has_closed(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "new"
    code, out, err = run_main(
        ["events", "--now", "--speedup", "60", "--config", "small", "--data-dir", str(data)], capsys
    )
    assert code == 0, err
    assert out.startswith(f"no interval has closed yet in {data}")
    assert "Traceback" not in out + err
    assert spark.range(3).count() == 3  # the caller's session stays up


def _fleetgen(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV and not k.startswith("PYSPARK_GATEWAY")}
    env["PYSPARK_PYTHON"] = sys.executable
    command = [sys.executable, "-m", "fleetgen_spark.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.spark  # a JVM in a subprocess
@pytest.mark.slow
def test_a_successful_backfill_prints_only_our_lines_and_verbose_brings_sparks_back(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    quiet = _fleetgen(["backfill", *BACKFILL, "--data-dir", data], tmp_path)
    output = quiet.stdout + quiet.stderr
    assert quiet.returncode == 0, output[-3000:]
    assert "backfill done: 24 intervals" in quiet.stdout
    for noise in ("Traceback", "ERROR", "Exception", ":: resolving dependencies ::", "confs:", "WARN", "log4j"):
        assert noise not in output, f"{noise!r} in a quiet backfill's output:\n{output[-3000:]}"
    for line in quiet.stderr.splitlines():  # only our progress lines
        assert line.startswith(("intervals ", "fleetgen backfill: ", "fleetgen: fetching the Delta Lake jars")), line
    assert "fleetgen backfill: starting Spark (local[*]) ..." in quiet.stderr  # the wait has a name

    end = "2025-11-08T07:00:00Z"
    verbose = _fleetgen(["backfill", *BACKFILL[:-1], end, "--data-dir", data, "--verbose"], tmp_path)
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert "backfill done: 28 intervals" in verbose.stdout
    assert " WARN " in verbose.stderr  # Spark's own log, e.g. ResolveWriteToStream on every query start
    assert "[pipeline] query progress" in verbose.stderr  # and our INFO lines
    assert "Traceback" not in verbose.stdout + verbose.stderr


@pytest.mark.slow
def test_a_config_change_is_announced_and_a_range_already_held_has_nothing_to_generate(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    start, end = "2025-11-08T00:00:00Z", "2025-11-08T02:00:00Z"
    code, out, err = run_main(
        ["backfill", "--config", "small", "--start", start, "--end", end, "--data-dir", data], capsys
    )
    assert code == 0, err
    assert "config change" not in err  # the first run records the config; nothing changed
    messy = tmp_path / "messy.yaml"
    messy.write_text(
        (Path(__file__).resolve().parent.parent / "conf" / "small.yaml").read_text() + "late_fraction: 0.2\n"
    )
    argv = ["backfill", "--config", str(messy), "--start", start, "--data-dir", data]
    code, out, err = run_main([*argv, "--end", end], capsys)
    assert code == 0, err
    changes = [line for line in err.splitlines() if "config change recorded" in line]
    assert len(changes) == 1, err
    assert "late_fraction 0.0 -> 0.2, from 20251108T020000Z on; earlier ones keep their rows" in changes[0]
    assert out.startswith("backfill: nothing to generate: ") and "8 intervals, " in out, out
    code, out, err = run_main([*argv, "--end", "2025-11-08T03:00:00Z"], capsys)
    assert code == 0 and "config change" not in err, err  # recorded once, not again
    assert out.startswith("backfill done: 12 intervals"), out
    late = spark.read.format("delta").load(f"{data}/delta/batches").filter("interval_start >= '2025-11-08T02:00:00Z'")
    assert late.agg({"late_events": "sum"}).collect()[0][0] > 0  # the change governs the new intervals
