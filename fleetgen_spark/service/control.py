"""The control state machine: start, pause, resume, clean and shut down one data directory's queries.

A :class:`Controller` holds the onboarding and events queries of a data directory and changes their
state one request at a time, saving and logging each change. Pausing stops the queries after their
current micro-batch; resuming starts them again from their checkpoints, so intervals missed meanwhile
are are generated on resume and the dataset has no holes. The paused flag lives in
``manifests/generator_state.json`` and survives a restart. The REST API and the signals that drive a
controller live in :mod:`fleetgen_spark.service.app` and :mod:`fleetgen_spark.service.process`.

Pause and resume run on the controller's own worker thread (:meth:`Controller.request` returns at once), so
an HTTP request or a signal never waits for a micro-batch; the status reads ``pausing`` or ``resuming``
meanwhile. A shutdown tells a pause in progress to hurry (cut the batch in flight short, which is safe), so
SIGTERM ends the process within 30 s in every state.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Literal

from pyspark.sql import SparkSession
from pyspark.sql.streaming.query import StreamingQuery

from fleetgen_spark.core.clock import parse_instant, parse_speedup
from fleetgen_spark.core.config import Config
from fleetgen_spark.core.exceptions import FleetGenError, OptionError
from fleetgen_spark.spark.failures import first_line
from fleetgen_spark.spark.pipeline import Pipeline
from fleetgen_spark.spark.queries import forget_delta_tables, query_state, stop_after_batch
from fleetgen_spark.storage.clean import CLEANED, clean_data_dir, finish_interrupted_clean
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.logs import RUN_ID, get_logger, log_event

__all__ = [
    "CLEANED",
    "SHUTDOWN_GRACE_S",
    "Command",
    "Controller",
    "ServiceError",
    "check_speedup",
]

Command = Literal["pause", "resume"]
# SIGTERM must end the process within 30 s: wait this long for a batch in flight, then cut it short.
SHUTDOWN_GRACE_S = 15.0
# How long a start waits for the companies query's first micro-batch before it starts the events.
FIRST_COMPANIES_BATCH_S = 180.0
_log = get_logger("service")  # the controller logs as part of the service

# The most intervals (or onboarding ticks) one live micro-batch takes. On time, one closes per
# trigger and a micro-batch holds one; behind (a busy machine, a high --speedup, a resume after a
# pause) it takes every due one up to this: a micro-batch costs mostly its fixed part (two Delta
# commits), so one interval per micro-batch could never catch up once behind. Rows never depend on it.
CATCH_UP = 32


class ServiceError(FleetGenError):
    """A request the service cannot honour in its current state (answered with ``status_code``)."""

    def __init__(self, message: str, status_code: int = 409) -> None:
        super().__init__(message)
        self.status_code = status_code


def check_speedup(speedup: str) -> None:
    """The service follows a clock: ``max`` (everything up to an end, at once) is for ``fleetgen backfill``."""
    if parse_speedup(speedup) is None:
        raise OptionError(
            f"--speedup {speedup!r}: the service needs a paced clock, 1 (wall clock) or a number N > 1; "
            "use `fleetgen backfill --start ... --end ...` to generate a range at full speed"
        )


class Controller:
    """Starts, pauses, resumes and cleans the queries of one data directory; each change is saved and logged.

    Every change holds one lock, so a pause from a signal and a resume from the API run one after the other.
    ``token``, when given, is the service's drawn token: saved owner-only in ``manifests/api_token`` at start
    and kept there across a clean.
    """

    def __init__(
        self,
        spark: SparkSession,
        layout: DataDir,
        config: Config,
        speedup: str = "1",
        stop_grace_s: float = 120.0,
        token: str | None = None,
    ) -> None:
        check_speedup(speedup)
        self.spark = spark
        self.layout = layout
        self.config = config
        self.speedup = speedup
        self.stop_grace_s = stop_grace_s
        self.token = token
        self.paused = False
        self.stopped = False
        self.last_error: str | None = None
        self.started_at = time.monotonic()
        self._lock = threading.Lock()
        self._hurry = threading.Event()  # set by shutdown: a pause in progress stops waiting for its batch
        self._requests_lock = threading.Lock()  # guards _transition and _pending, never held for long
        self._transition: str | None = None  # "pausing" or "resuming" while a request waits or runs
        self._pending = 0
        self._work: queue.SimpleQueue[tuple[Command, str] | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._pipeline: Pipeline | None = None
        self._queries: dict[str, StreamingQuery] = {}
        self._reported: set[str] = set()  # run ids of the dead queries already logged

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover the saved state: a directory that was paused stays paused, otherwise both queries run.

        First a clean that a kill interrupted is completed or undone (:func:`finish_interrupted_clean`).
        """
        with self._lock:
            leftovers = finish_interrupted_clean(self.layout)
            if leftovers:
                log_event(_log, "finished an interrupted clean", logging.WARNING, found=leftovers)
            # The writer lock marks a fleetgen data directory; touch it in case this process made the directory.
            self.layout.mark()
            self._save_token()
            saved = self.layout.read_state()
            self._pipeline = self._new_pipeline()
            self.paused = saved.paused is True
            if saved.to_json():
                self._event("RECOVER", "start", recovered_paused=self.paused, saved_at=saved.updated_at)
            if not self.paused:
                self._start_queries()
            self.save()
        self._worker = threading.Thread(target=self._work_loop, name="fleetgen-controller", daemon=True)
        self._worker.start()

    def request(self, command: Command, trigger: str) -> bool:
        """Start a pause or a resume on the worker thread and return at once; False when there is nothing to do.

        Meanwhile :attr:`status` reads ``pausing`` or ``resuming``; a failed change shows in :attr:`last_error`.
        """
        transition = "pausing" if command == "pause" else "resuming"
        with self._requests_lock:
            self._check_open()
            if self._transition == transition or (self._transition is None and self._settled(command)):
                return False
            self._transition = transition
            self._pending += 1
        self._work.put((command, trigger))
        return True

    def pause(self, trigger: str) -> bool:
        """Stop both queries after their current micro-batch; False when already paused."""
        with self._lock:
            self._check_open()
            if self.paused:
                return False
            self._stop_queries()
            self.paused = True
            self.save()
            self._event("PAUSE", trigger)
            return True

    def resume(self, trigger: str) -> bool:
        """Start the queries again from their checkpoints; False when they are all running already."""
        with self._lock:
            self._check_open()
            if not self.paused and all(q.isActive for q in self._queries.values()) and self._queries:
                return False
            if self._pipeline is None:  # cleaned: a fresh dataset starts now
                self._pipeline = self._new_pipeline()
            self._start_queries()
            self.paused = False
            self.save()
            self._event("RESUME", trigger)
            return True

    def clean(self, trigger: str) -> list[str]:
        """Remove tables, checkpoints and manifests of a paused service; it stays paused (see :mod:`.clean`)."""
        refusal = "clean needs a paused service: POST /pause (or `fleetgen pause`) first, then clean"
        if self._transition:  # answer at once instead of waiting for the change that holds the lock
            raise ServiceError(f"{refusal} (the service is {self._transition})")
        with self._lock:
            self._check_open()
            if not self.paused or self._transition or any(q.isActive for q in self._queries.values()):
                raise ServiceError(refusal)
            removed = clean_data_dir(self.layout, self._state(), self.token)
            self._pipeline = None
            self._queries = {}
            forget_delta_tables(self.spark)
            self._event("CLEAN", trigger, removed=removed)
            return removed

    def shutdown(self, trigger: str) -> None:
        """Stop the queries for good, keeping the paused flag as it was for the next start.

        A pause in progress is told to hurry first, so this never waits the pause's full grace.
        """
        with self._requests_lock:
            if self.stopped:
                return
            self.stopped = True  # no new request from here on
        self._hurry.set()
        with self._lock:
            self._stop_queries(min(self.stop_grace_s, SHUTDOWN_GRACE_S))
            if self._transition == "pausing":  # a pause was asked for: the next start keeps it
                self.paused = True
            self.save()
            self._event("SHUTDOWN", trigger)
        self._work.put(None)

    # -- state ------------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the service's part of generator_state.json (the sinks write the batch part)."""
        self.layout.update_state(**self._state())

    def save_if_idle(self) -> bool:
        """The periodic save: under the lock, so it never writes a paused flag that a change is replacing.

        Skipped (False) while a change holds the lock: that change saves the state itself.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self.stopped:
                return False
            self.save()
            return True
        finally:
            self._lock.release()

    @property
    def status(self) -> str:
        """``running`` or ``paused``, ``pausing``/``resuming`` while a request is on its way, or ``failed``
        when a query died (``last_error`` says why; ``fleetgen resume`` starts it again)."""
        if self._transition:
            return self._transition
        if self.paused:
            return "paused"
        return "failed" if self._failed() else "running"

    def _failed(self) -> list[tuple[str, StreamingQuery]]:
        """The queries that should run but have stopped (none while paused, stopping or cleaned)."""
        if self.paused or self.stopped or self._transition:
            return []
        return [(role, q) for role, q in dict(self._queries).items() if not q.isActive]

    def watch(self) -> None:
        """Notice a query that died: status ``failed``, ``last_error`` and one ERROR line, once per run.

        Called every second by the service; Spark tells a classic session's listener too, but a
        Connect server runs listeners in a process of its own, so the service looks for itself.
        """
        for role, query in self._failed():
            run = str(query.runId)
            with self._requests_lock:  # /health and the service's loop both call this
                if run in self._reported:
                    continue
                self._reported.add(run)
            error = query.exception()
            self.last_error = (
                f"the {role} query stopped: {first_line(error) if error is not None else 'no error given'}"
            )
            log_event(_log, "query failed: generation stopped", logging.ERROR, query=role, error=self.last_error)

    def lag_s(self) -> float | None:
        """How far the data is behind the clock: simulated now minus the end of the last interval written."""
        pipeline = self._pipeline
        now = pipeline.simulated_now() if pipeline is not None else None
        if pipeline is None or now is None or self.paused:
            return None
        end = self.layout.read_state().last_driver_interval_end
        last = parse_instant(end, "last_driver_interval_end") if isinstance(end, str) else pipeline.dataset.start
        return round(max(0.0, (now - last).total_seconds()), 1)

    def counts(self) -> dict[str, Any]:
        manifest = self.layout.read_manifest()
        state = self.layout.read_state()
        return {
            "batches_generated_count": int(manifest.batch_count),
            "total_events": int(manifest.total_events),
            "last_driver_batch": state.last_driver_batch,
            "last_company_batch": state.last_company_batch,
        }

    def health(self) -> dict[str, Any]:
        """What GET /health answers; reads files and query handles only, so it never waits for the lock."""
        self.watch()  # a query that died a moment ago is reported with its error, not only as failed
        state = self.layout.read_state()
        pipeline = self._pipeline
        return {
            "status": self.status,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "pid": os.getpid(),  # for kill -USR1 / -USR2
            **self.counts(),
            "last_company_batch_time": state.last_company_tick,
            "last_driver_batch_time": _batch_start(state.last_driver_batch),
            "last_generated_at": self.layout.read_manifest().last_updated,
            "dataset": pipeline.describe() if pipeline is not None else None,
            "lag_s": self.lag_s(),
            "queries": {role: query_state(q) for role, q in dict(self._queries).items()},
            "last_error": self.last_error,
        }

    # -- the worker thread ------------------------------------------------------------------------

    def _settled(self, command: Command) -> bool:
        if command == "pause":
            return self.paused
        return not self.paused and bool(self._queries) and all(q.isActive for q in self._queries.values())

    def _work_loop(self) -> None:
        while (item := self._work.get()) is not None:
            command, trigger = item
            try:
                getattr(self, command)(trigger)
                self.last_error = None
            except FleetGenError as err:
                self.last_error = str(err)
                log_event(_log, f"{command} refused", logging.WARNING, trigger=trigger, reason=str(err))
            except Exception as err:
                self.last_error = first_line(err)
                log_event(_log, f"{command} failed", logging.ERROR, trigger=trigger, error=self.last_error)
            finally:
                with self._requests_lock:
                    self._pending -= 1
                    if self._pending == 0:
                        self._transition = None

    def _state(self) -> dict[str, Any]:
        return {
            "paused": self.paused,
            "status": "paused" if self.paused else "running",
            "service_run_id": RUN_ID,
            "service_pid": os.getpid(),
        }

    def _save_token(self) -> None:
        """Save the drawn token for clients of this data directory; with an env token, drop a stale file."""
        if self.token is not None:
            self.layout.write_token(self.token)
        else:
            self.layout.delete_token()

    # -- inside the lock --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.stopped:
            raise ServiceError("the service is shutting down", status_code=503)

    def _new_pipeline(self) -> Pipeline:
        return Pipeline(self.spark, self.layout, self.config, speedup=self.speedup, max_intervals_per_trigger=CATCH_UP)

    def _start_queries(self) -> None:
        pipeline = self._pipeline
        if pipeline is None:
            raise RuntimeError("no pipeline to start")
        starters: dict[str, Callable[[], StreamingQuery]] = {
            "companies": pipeline.start_companies,
            "events": pipeline.start_events,
        }
        try:
            for role, start in starters.items():
                query = self._queries.get(role)
                if query is None or not query.isActive:
                    self._queries[role] = start()
                    if role == "companies":
                        self._await_first_batch(self._queries[role])
        except Exception as err:  # half a pipeline is worse than none: stop what did start
            self._stop_queries(0.0)
            cause = first_line(err)
            log_event(_log, "could not start the queries", logging.ERROR, error=cause)
            raise ServiceError(f"could not start the queries: {cause}", status_code=500) from err

    def _await_first_batch(self, companies: StreamingQuery) -> None:
        """Start the events after the companies query's first micro-batch, which MERGEs every tick that is
        due: events never reach the tables before their companies (a first MERGE took 31 s on a busy
        2-core machine, longer than the events writer waits). A shutdown does not wait for it."""
        deadline = time.monotonic() + FIRST_COMPANIES_BATCH_S
        while companies.isActive and companies.lastProgress is None and not self._hurry.is_set():
            if time.monotonic() > deadline:
                log_event(
                    _log, "the companies query's first micro-batch is slow: starting the events anyway", logging.WARNING
                )
                return
            time.sleep(0.2)

    def _stop_queries(self, grace_s: float | None = None) -> None:
        grace = self.stop_grace_s if grace_s is None else grace_s
        active = [q for q in self._queries.values() if q.isActive]
        with ThreadPoolExecutor(max_workers=max(1, len(active))) as pool:
            for done in [pool.submit(stop_after_batch, q, grace, self._hurry) for q in active]:
                done.result()

    def _event(self, name: str, trigger: str, **metadata: Any) -> None:
        status = "paused" if self.paused else "running"  # the state reached, not the request in flight
        log_event(_log, name, event=name, trigger=trigger, status=status, **self.counts(), **metadata)


def _batch_start(batch_id: Any) -> str | None:
    """``20251108T141500Z`` as ``2025-11-08T14:15:00Z``."""
    if not isinstance(batch_id, str):
        return None
    try:
        moment = datetime.strptime(batch_id, "%Y%m%dT%H%M%SZ")
    except ValueError:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
