"""`fleetgen backfill` into Delta as a user runs it, against its yardsticks, whole processes, in turns.

Each round runs, one after the other and each in a fresh directory:

- ``fleetgen``: ``fleetgen backfill --config scaling`` over 41 intervals (about 4 million events; the
  first interval has no eligible company), local[2];
- ``dbldatagen``: the same number of event-shaped rows built with dbldatagen, appended to Delta
  partitioned by event_date (``process_rivals.py``);
- ``ceiling``: the same rows from a Python source re-yielding one cached Arrow batch, streamed into
  Delta with AvailableNow (``process_rivals.py``): what any Python source costs;
- ``start-up``: ``fleetgen backfill --config small`` of one interval: what is fixed per process.

Then the keep-up figure, once per speedup (900x and 1800x): ``fleetgen run --config base --speedup N``
on a fresh directory; once its queries run, ``--keep-up-s`` seconds (180) later, the intervals written
over the intervals its clock made due (``GET /health``: ``batches_generated_count``, and ``lag_s``, the
simulated time the data is behind its clock).

A warm-up round first (jar caches, page cache), then ``--rounds`` counted rounds; the ratios are taken
round by round (the machine's speed drifts, a round's runs share it) and their median reported.
Wall time from start to exit, and where it went: the backfill's phases from its own JSON logs (launch
to its queries' start, each query, the events writer's appends, exit), the yardsticks' from their
last line (session start, write). CPU: the whole machine's busy seconds over each run (``/proc/stat``),
which counts the JVM (a grandchild that ``cpu_s``, the reaped children's rusage, misses) and anything
else that ran meanwhile: on a quiet machine, what the run cost; and the process tree's own CPU by
thread group (JIT compilers, Spark tasks, GC, the JVM's other threads, Python workers, the Python
driver), sampled from ``/proc`` every 0.5 s. Writes results/process.json
and regenerates RESULTS.md.

    .venv/bin/python benchmarks/bench_process.py [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import math
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
from harness import BENCH_DIR, CPU_GROUPS, DEFAULT_OUT, ThreadCpu, machine_busy_s, machine_info, median, write_json
from report import render_results

from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.logs import read_logs

START = datetime(2025, 11, 8, tzinfo=timezone.utc)
FLEETGEN = Path(sys.executable).with_name("fleetgen")
RIVALS = BENCH_DIR / "process_rivals.py"
TIMEOUT_S = 1800


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _run(command: list[str]) -> dict[str, Any]:
    """Run a whole process; its wall and CPU seconds, exit code and last output line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = machine_busy_s()
    launched = time.time()
    began = time.monotonic()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=BENCH_DIR.parent
    ) as child:
        threads = ThreadCpu(child.pid)
        try:
            stdout, stderr = child.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()  # as subprocess.run(timeout=) does; the with-block then reaps it
            raise
        finally:
            by_thread = threads.stop()
    wall = time.monotonic() - began
    machine_cpu = machine_busy_s() - busy
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [line for line in stdout.splitlines() if line.strip()]
    if child.returncode != 0:
        raise SystemExit(f"{command[:3]} failed ({child.returncode}): {stderr.strip()[-2000:]}")
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "machine_cpu_s": round(machine_cpu, 1),
        "cpu_by_thread": by_thread,
        "last_line": lines[-1] if lines else "",
        "launched": launched,
        "exited": launched + wall,
    }


def _instant(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def _fleetgen_phases(data_dir: Path, run: dict[str, Any]) -> dict[str, float]:
    """Where a backfill's wall time went, from its own JSON logs: seconds from launch to its first query's
    start, each query from its start to its last record (a query's end is logged by Spark's listener
    bus, which a process that exits at once may not wait for), the events micro-batches' appends, and
    the exit after the last record."""
    records = read_logs(DataDir(data_dir), limit=100_000)[::-1]
    started = {r["metadata"]["name"]: _instant(r) for r in records if r["message"] == "query started"}
    last = {r["metadata"]["name"]: _instant(r) for r in records if r["message"] == "query progress"}
    done = [r["metadata"] for r in records if r["message"] == "micro-batch done"]
    if not started or not last or not done:
        return {}

    def span(kind: str) -> float:
        return max((last.get(name, t) - t for name, t in started.items() if name.split("_")[1] == kind), default=0.0)

    first, newest = min(started.values()), max(_instant(r) for r in records)
    return {
        "start_up": round(first - run["launched"], 1),
        "writing": round(newest - first, 1),
        "companies_query": round(span("companies"), 1),
        "events_query": round(span("events"), 1),
        "events_append": round(sum(d.get("append_ms", 0) for d in done) / 1000, 1),
        "ledger_append": round(sum(d.get("ledger_ms", 0) for d in done) / 1000, 1),
        "exit": round(run["exited"] - newest, 1),
    }


def _rival_phases(run: dict[str, Any]) -> dict[str, float]:
    found = re.search(r"\(session ([\d.]+) s, write ([\d.]+) s\)", run["last_line"])
    return {"start_up": float(found[1]), "write": float(found[2])} if found else {}


def _backfill(out: Path, config: str, intervals: int) -> list[str]:
    end = START + timedelta(minutes=15 * intervals)
    return [
        str(FLEETGEN), "backfill", "--config", config, "--start", _iso(START), "--end", _iso(end),
        "--data-dir", str(out), "--master", "local[2]",
    ]  # fmt: skip


def _events(line: str) -> int:
    found = re.search(r"backfill done: \d+ intervals, ([\d,]+) events", line)
    if not found:
        raise SystemExit(f"no event count in the backfill's last line: {line!r}")
    return int(found[1].replace(",", ""))


def _startup_s(line: str) -> float | None:
    found = re.search(r"\(\+([\d.]+) s starting Spark and opening the tables\)", line)
    return float(found[1]) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _health(port: int) -> dict[str, Any] | None:
    try:
        return dict(httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json())
    except (httpx.HTTPError, ValueError):
        return None


def _keep_up(out: Path, speedup: int, seconds: float) -> dict[str, Any]:
    """``fleetgen run --config base --speedup N`` for ``seconds`` once its queries run: intervals written ÷ due."""
    port = _free_port()
    command = [
        str(FLEETGEN), "run", "--config", "base", "--speedup", str(speedup), "--data-dir", str(out),
        "--port", str(port), "--master", "local[2]", "--spark-ui", "off",
    ]  # fmt: skip
    # The service logs a line per micro-batch on stderr: into a file, never an unread pipe (once a
    # pipe's 64 KiB are full, the next log line blocks the micro-batch that writes it).
    errors = out.with_name(out.name + ".stderr")
    errors.parent.mkdir(parents=True, exist_ok=True)
    with errors.open("wb") as stderr:
        service = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=BENCH_DIR.parent)
    try:
        deadline = time.monotonic() + 300
        health = None
        while health is None or health.get("status") != "running" or health.get("lag_s") is None:
            if service.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"fleetgen run did not start: {errors.read_text()[-2000:]}")
            time.sleep(0.5)
            health = _health(port)
        first = health["batches_generated_count"]
        time.sleep(seconds)
        health = _health(port) or {}
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(120)
    interval_s = 900  # the base preset's 15 minutes
    written = int(health.get("batches_generated_count", 0))
    due = written + math.floor(float(health.get("lag_s") or 0.0) / interval_s)
    return {
        "speedup": speedup,
        "seconds": seconds,
        "written": written,
        "written_while_watched": written - first,
        "due": due,
        "lag_s": health.get("lag_s"),
        "ratio": round(written / due, 3) if due else None,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--intervals", type=int, default=41, help="intervals of the scaling backfill (41)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 intervals, one round, no warm-up")
    parser.add_argument("--keep-up-s", type=float, default=180.0, help="seconds each keep-up run is watched (180)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    intervals, rounds, warmup = (3, 1, 0) if args.quick else (args.intervals, args.rounds, 1)
    machine = machine_info()
    began = time.monotonic()
    runs: dict[str, list[dict[str, Any]]] = {"fleetgen": [], "dbldatagen": [], "ceiling": [], "start-up": []}
    rows = 0
    with tempfile.TemporaryDirectory(prefix="fleetgen-process-") as tmp:
        for number in range(warmup + rounds):
            counted = number >= warmup
            work = Path(tmp) / f"round-{number}"
            fleet = _run(_backfill(work / "fleetgen", "scaling", intervals))
            rows = _events(fleet["last_line"])
            fleet["startup_s"] = _startup_s(fleet["last_line"])
            fleet["phases"] = _fleetgen_phases(work / "fleetgen", fleet)
            rival = [sys.executable, str(RIVALS)]
            results = {
                "fleetgen": fleet,
                "dbldatagen": _run([*rival, "dbldatagen", "--rows", str(rows), "--out", str(work / "dbl")]),
                "ceiling": _run([*rival, "ceiling", "--rows", str(rows), "--out", str(work / "ceil")]),
                "start-up": _run(_backfill(work / "one", "small", 2)),
            }
            for name in ("dbldatagen", "ceiling"):
                results[name]["phases"] = _rival_phases(results[name])
            results["start-up"]["startup_s"] = _startup_s(results["start-up"]["last_line"])
            shutil.rmtree(work, ignore_errors=True)
            state = "counted" if counted else "warm-up"
            print(f"round {number} ({state}): " + ", ".join(f"{k} {v['wall_s']:.1f} s" for k, v in results.items()))
            if counted:
                for name, result in results.items():
                    runs[name].append(result)

        keep_up = {
            str(speedup): _keep_up(Path(tmp) / f"keep-up-{speedup}", speedup, 20.0 if args.quick else args.keep_up_s)
            for speedup in (900, 1800)
        }
        for k in keep_up.values():
            print(f"keep-up at {k['speedup']}x: {k['written']} of {k['due']} due intervals written ({k['ratio']})")

    def per_round(rival: str) -> float:  # rows/s of fleetgen over the rival's = the rival's time over fleetgen's
        return median([r["wall_s"] / f["wall_s"] for f, r in zip(runs["fleetgen"], runs[rival], strict=True)])

    ratios = {"fleetgen_vs_dbldatagen": per_round("dbldatagen"), "fleetgen_vs_ceiling": per_round("ceiling")}
    summary = {
        name: {
            "wall_s": median([r["wall_s"] for r in results]),
            "cpu_s": median([r["cpu_s"] for r in results]),
            "machine_cpu_s": median([r["machine_cpu_s"] for r in results]),
            "cpu_by_thread": {g: median([r["cpu_by_thread"][g] for r in results]) for g in CPU_GROUPS},
            "rows_per_s": round(rows / median([r["wall_s"] for r in results])) if name != "start-up" else None,
            "startup_s": median([r["startup_s"] for r in results if r.get("startup_s") is not None] or [0.0]),
            # Each phase's median over the rounds (so the phases need not add up to the median wall time).
            "phases": {
                phase: median([r["phases"][phase] for r in results if phase in r.get("phases", {})])
                for phase in ((results[0].get("phases") or {}) if results else {})
            },
        }
        for name, results in runs.items()
    }
    data = {
        "machine": machine,
        "wall_s": round(time.monotonic() - began, 1),
        "rows": rows,
        "intervals": intervals,
        "rounds": rounds,
        "summary": summary,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "keep_up": keep_up,
        "runs": runs,
    }
    write_json(args.out / "process.json", data)
    print(
        f"fleetgen backfill {summary['fleetgen']['wall_s']:.1f} s, dbldatagen {summary['dbldatagen']['wall_s']:.1f} s,"
        f" ceiling {summary['ceiling']['wall_s']:.1f} s ({rows:,} rows); fleetgen ÷ dbldatagen "
        f"{ratios['fleetgen_vs_dbldatagen']:.3f}x, ÷ ceiling {ratios['fleetgen_vs_ceiling']:.3f}x; "
        f"one-interval backfill {summary['start-up']['wall_s']:.1f} s"
    )
    # RESULTS.md shows all three benchmarks: `make bench` runs them in turn, this one last.
    others = all((args.out / name).is_file() for name in ("throughput.json", "latency.json"))
    if others and not args.quick:
        print(f"wrote {render_results(args.out, BENCH_DIR / 'RESULTS.md')}")
    elif not args.quick:
        print(f"RESULTS.md not regenerated: {args.out} lacks throughput.json or latency.json (make bench runs all)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
