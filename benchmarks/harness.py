"""What both benchmark scripts share: the machine, process memory, timing and the JSON files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "BENCH_DIR",
    "DEFAULT_OUT",
    "Peaks",
    "ProcessSampler",
    "cpu_seconds",
    "error_line",
    "jvm_heap_peak_mb",
    "jvm_pid",
    "machine_info",
    "median",
    "read_json",
    "reset_jvm_heap_peak",
    "run_worker",
    "write_json",
]

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results"
_KB = 1024


def _first_line(command: list[str], stream: str = "stdout") -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = done.stdout if stream == "stdout" else done.stderr
    return text.strip().splitlines()[0] if text.strip() else "unknown"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: cores, memory, CPU model and the software versions."""
    import numpy
    import pyarrow
    import pyspark

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / _KB / _KB, 1)
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "nproc": os.cpu_count(),
        "memory_gb": mem_gb,
        "cpu_model": cpu,
        "python": platform.python_version(),
        "java": _first_line(["java", "-version"], stream="stderr"),
        "pyspark": pyspark.__version__,
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- process memory ----------------------------------------------------------------------


def jvm_pid(spark: Any) -> int:
    """The pid of the driver JVM (in local mode also the executor)."""
    return int(spark._jvm.java.lang.ProcessHandle.current().pid())


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _stat(path: str) -> tuple[str, list[str]] | None:
    """(command name, the fields after it) of a ``/proc`` stat file; None once its process has gone."""
    try:
        stat = Path(path).read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the other fields follow the last ")".
    return stat[stat.find("(") + 1 : stat.rfind(")")], stat[stat.rfind(")") + 2 :].split()


def _ticks(fields: list[str], children: bool = False) -> int:
    # utime, stime (fields 14, 15 of stat) and cutime, cstime (16, 17) of reaped children.
    ticks = int(fields[11]) + int(fields[12])
    return ticks + (int(fields[13]) + int(fields[14]) if children else 0)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(f"/proc/{entry.name}/stat")) is not None:
            children.setdefault(int(stat[1][1]), []).append(int(entry.name))
    return children


def _descendants(pid: int) -> list[int]:
    tree = _children_map()
    found, todo = [], list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(tree.get(child, []))
    return found


def _cpu_ticks(pid: int, children: bool = False) -> int:
    stat = _stat(f"/proc/{pid}/stat")
    return 0 if stat is None else _ticks(stat[1], children)


def cpu_seconds(jvm: int) -> float:
    """CPU time used so far by the JVM, its live descendants and the children it reaped.

    Less sensitive than wall time to other work on the machine: a run's cost in CPU is
    the difference of two readings.
    """
    ticks = _cpu_ticks(jvm, children=True) + sum(_cpu_ticks(pid, children=True) for pid in _descendants(jvm))
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``: all but idle and iowait).

    The difference of two readings is what a run of whole processes cost, its JVM grandchild
    included (which a parent's rusage does not see), plus whatever else ran meanwhile.
    """
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


# Thread groups of a whole process's CPU, by the name the JVM gives its threads.
CPU_GROUPS = ("JIT compilers", "Spark tasks", "GC", "JVM, other", "Python workers", "Python driver")


def _group(comm: str, pid: int, root: int) -> str:
    if pid == root:
        return "Python driver"
    if comm.startswith("python"):
        return "Python workers"
    if "CompilerThre" in comm:  # "C2 CompilerThread0", "C1 CompilerThread0"
        return "JIT compilers"
    if comm.startswith("Executor task"):
        return "Spark tasks"
    if comm.startswith(("GC Thread", "G1 ")):
        return "GC"
    return "JVM, other"  # the driver's planning (py4j, stream execution, main), Spark's services


class ThreadCpu:
    """CPU seconds of a process tree by :data:`CPU_GROUPS`, from each thread's ``/proc`` stat.

    Sampled every ``every_s`` while the tree runs, so a thread's last moments before it ends (a
    Python worker's, a task thread's) are missed: the groups add up to a little less than the
    machine's busy time. One thread reads ~100 small files a sample: about 1% of a core.
    """

    def __init__(self, root: int, every_s: float = 0.5) -> None:
        self.root, self.every_s = root, every_s
        self._seen: dict[tuple[int, int], tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="thread-cpu", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.wait(self.every_s):
            for pid in (self.root, *_descendants(self.root)):
                with suppress(OSError):
                    for task in os.listdir(f"/proc/{pid}/task"):
                        if (stat := _stat(f"/proc/{pid}/task/{task}/stat")) is not None:
                            comm, fields = stat
                            self._seen[(pid, int(task))] = (_group(comm, pid, self.root), _ticks(fields) / tick)

    def stop(self) -> dict[str, float]:
        """Stop sampling; CPU seconds per group."""
        self._stop.set()
        self._thread.join()
        out = dict.fromkeys(CPU_GROUPS, 0.0)
        for group, cpu in self._seen.values():
            out[group] += cpu
        return {k: round(v, 1) for k, v in out.items()}


def _is_python(pid: int) -> bool:
    # By the command name, not the command line: a JVM child forked for a shell command
    # carries the JVM's command line (full of ".../python3.11/site-packages/...") until exec.
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("python")
    except OSError:
        return False


def _reset_peak(pid: int) -> None:
    """Reset a process's VmHWM to its current RSS (Linux clear_refs 5); harmless if refused."""
    with suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _role(pid: int) -> str:
    """What a Python process under the JVM does: the module it runs (``pyspark.worker``, ...)."""
    try:
        args = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return "python"
    return args[-1] if len(args) > 1 else "python"


@dataclass
class Peaks:
    """Peak resident memory seen while a measurement ran, in MB."""

    jvm_rss_mb: float = 0.0
    python_worker_rss_mb: float = 0.0
    python_workers_seen: int = 0
    jvm_heap_mb: float = 0.0
    by_role: dict[str, float] = field(default_factory=dict)

    def merge(self, other: Peaks) -> Peaks:
        roles = dict(self.by_role)
        for role, mb in other.by_role.items():
            roles[role] = max(roles.get(role, 0.0), mb)
        return Peaks(
            max(self.jvm_rss_mb, other.jvm_rss_mb),
            max(self.python_worker_rss_mb, other.python_worker_rss_mb),
            max(self.python_workers_seen, other.python_workers_seen),
            max(self.jvm_heap_mb, other.jvm_heap_mb),
            roles,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "jvm_rss_peak_mb": round(self.jvm_rss_mb, 1),
            "jvm_heap_peak_mb": round(self.jvm_heap_mb, 1),
            "python_worker_rss_peak_mb": round(self.python_worker_rss_mb, 1),
            "python_workers_seen": self.python_workers_seen,
            "python_rss_peak_mb_by_role": {k: round(v, 1) for k, v in sorted(self.by_role.items())},
        }


@dataclass
class ProcessSampler:
    """Tracks the peak RSS of the driver JVM and of its Python worker processes.

    A background thread walks the JVM's descendants in /proc every ``period`` seconds and
    reads VmHWM (the kernel's own peak, so nothing between two samples is missed); peaks
    are reset when a measurement starts, so each measurement reports its own.
    """

    jvm: int
    period: float = 0.05
    _stop: threading.Event = field(default_factory=threading.Event)
    _peaks: dict[int, int] = field(default_factory=dict)
    _roles: dict[int, str] = field(default_factory=dict)

    def _python_workers(self) -> list[int]:
        return [pid for pid in _descendants(self.jvm) if _is_python(pid)]

    def _sample(self) -> None:
        for pid in self._python_workers():
            peak = max(_status_kb(pid, "VmHWM:"), _status_kb(pid, "VmRSS:"))
            self._peaks[pid] = max(self._peaks.get(pid, 0), peak)
            if pid not in self._roles:
                self._roles[pid] = _role(pid)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    @contextmanager
    def measure(self) -> Iterator[Callable[[], Peaks]]:
        """Within the block, Python workers are sampled; the yielded callable gives the peaks."""
        self._peaks = {}
        self._stop = threading.Event()
        _reset_peak(self.jvm)
        for pid in self._python_workers():
            _reset_peak(pid)
        thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        thread.start()
        result = Peaks()

        def peaks() -> Peaks:
            return result

        try:
            yield peaks
        finally:
            self._stop.set()
            thread.join()
            self._sample()
            result.jvm_rss_mb = _status_kb(self.jvm, "VmHWM:") / _KB
            result.python_worker_rss_mb = max(self._peaks.values(), default=0) / _KB
            result.python_workers_seen = len(self._peaks)
            for pid, kb in self._peaks.items():
                role = self._roles.get(pid, "python")
                result.by_role[role] = max(result.by_role.get(role, 0.0), kb / _KB)


def _heap_pools(spark: Any) -> list[Any]:
    jvm = spark._jvm
    pools = jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans()
    return [p for p in pools if str(p.getType().toString()) == "Heap memory"]


def reset_jvm_heap_peak(spark: Any) -> None:
    for pool in _heap_pools(spark):
        pool.resetPeakUsage()


def jvm_heap_peak_mb(spark: Any) -> float:
    """The sum of the heap pools' peak usage since the last reset (an upper bound of the peak heap)."""
    return sum(int(p.getPeakUsage().getUsed()) for p in _heap_pools(spark)) / _KB / _KB


def run_python(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``python <args>`` with this interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=BENCH_DIR.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_line(err: BaseException, width: int = 200) -> str:
    """``Type: first line of the message``, cut to ``width`` characters, for a results file."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:width] if lines else ''}"


def run_worker(args: list[str], timeout: float) -> tuple[dict[str, Any] | None, str]:
    """Run a benchmark script as a worker process and take the JSON object it prints last.

    Returns ``(result, "")``, or ``(None, error)`` with the last line of its stderr when it
    failed or printed no JSON.
    """
    done = run_python(args, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return None, (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
    result: dict[str, Any] = json.loads(lines[-1])
    return result, ""


def now() -> float:
    return time.perf_counter()
