"""The control service's process: a data directory's two streaming queries behind a REST API and signals.

``fleetgen run`` holds the SparkSession, runs the onboarding and events queries and serves
``/health``, ``/pause``, ``/resume``, ``/clean`` and ``/logs`` with uvicorn in a thread, so
that its own signal handlers (SIGUSR1 pause, SIGUSR2 resume, SIGTERM/SIGINT stop) win over
uvicorn's. Pausing stops the queries; resuming starts them again from their checkpoints, so
intervals missed meanwhile are generated on resume and the dataset has no holes. The paused
flag lives in ``manifests/generator_state.json`` and survives a restart. The state machine behind
the endpoints and signals is :class:`fleetgen_spark.service.control.Controller`.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Mapping
from types import FrameType

import uvicorn
from pyspark.sql import SparkSession

from fleetgen_spark.core.config import Config
from fleetgen_spark.core.exceptions import FleetGenError, OptionError
from fleetgen_spark.service.app import create_app
from fleetgen_spark.service.control import Controller, ServiceError, check_speedup
from fleetgen_spark.service.rest import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    TOKEN_ENV,
    base_url,
    draw_token,
    is_loopback,
)
from fleetgen_spark.spark.pipeline import ProgressListener
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.lock import hold, log_takeover
from fleetgen_spark.storage.logs import configure_logging, get_logger, log_event

__all__ = [
    "Service",
    "check_bind",
    "serve",
]

_log = get_logger("service")
_SIGNAL_COMMANDS = {
    signal.SIGUSR1: "pause",
    signal.SIGUSR2: "resume",
    signal.SIGTERM: "stop",
    signal.SIGINT: "stop",
}


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token: anyone on the network could clean the data."""
    if not token and not is_loopback(host):
        raise OptionError(
            f"--host {host!r} is not a loopback address and {TOKEN_ENV} is not set; refusing to expose "
            f"pause, resume and clean with a token saved on this machine only: set {TOKEN_ENV} (clients send "
            "it as 'Authorization: Bearer <token>') or listen on --host 127.0.0.1"
        )


class Service:
    """One data directory's control service: a controller, its REST API on uvicorn, its signals.

    ``start()``/``stop()`` run it inside a caller's process (tests share one SparkSession);
    ``run_forever()`` is ``fleetgen run``: it installs the signal handlers and blocks until told to stop.
    ``token`` is the bearer token of the POST endpoints; None draws one and saves it owner-only in
    ``manifests/api_token`` for the clients of this data directory.
    """

    def __init__(
        self,
        spark: SparkSession,
        layout: DataDir,
        config: Config,
        speedup: str = "1",
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: str | None = None,
        state_every_s: float = 300.0,
        stop_grace_s: float = 120.0,
    ) -> None:
        check_bind(host, token)
        self.token = token or draw_token()
        saved = None if token else self.token
        self.controller = Controller(spark, layout, config, speedup, stop_grace_s, token=saved)
        self.host = host
        self.port = port
        self.state_every_s = state_every_s
        # Signal handlers only put here: SimpleQueue.put is reentrant, a lock would risk a deadlock.
        self.commands: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self.stop_requested = threading.Event()
        self._stop_trigger = "stop"
        self._listener = ProgressListener(layout)
        self._server: uvicorn.Server | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = False

    @property
    def url(self) -> str:
        return base_url(self.host, self.port)

    def start(self) -> None:
        """Bind the port, recover the saved state, start the queries (unless paused), then serve."""
        sock = _listen(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        spark = self.controller.spark
        spark.streams.addListener(self._listener)
        try:
            self.controller.start()
        except BaseException:
            sock.close()
            spark.streams.removeListener(self._listener)
            raise
        config = uvicorn.Config(
            create_app(self.controller, self.token, self.host, self.port),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = server = uvicorn.Server(config)
        self._threads = [
            threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fleetgen-http", daemon=True),
            threading.Thread(target=self._control_loop, name="fleetgen-control", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not self._threads[0].is_alive() or time.monotonic() > deadline:
                self.stop("failed start")
                raise ServiceError(f"the REST API did not start on {self.url}", status_code=500)
            time.sleep(0.02)
        where = self.controller.layout.token_location if self.controller.token else f"${TOKEN_ENV}"
        log_event(_log, "service listening", url=self.url, status=self.controller.status, pid=os.getpid(), token=where)

    def stop(self, trigger: str = "stop") -> None:
        """Stop the queries cleanly (a pause in progress hurries), save the state, then stop serving."""
        self._stopping = True
        self.controller.shutdown(trigger)
        if self._server is not None:
            self._server.should_exit = True
        self.commands.put(("exit", trigger))
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)
        try:
            self.controller.spark.streams.removeListener(self._listener)
        except Exception as err:  # the session may be stopping too
            log_event(_log, "could not remove the progress listener", error=str(err))

    def request(self, command: str, trigger: str) -> None:
        """Queue a command (pause, resume, stop) for the control thread, as a signal does."""
        self.commands.put((command, trigger))

    def run_forever(self) -> int:
        """``fleetgen run``: serve until SIGTERM or SIGINT; SIGUSR1 pauses and SIGUSR2 resumes."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNAL_COMMANDS}
        try:
            self.start()
            code = 0
            while not self.stop_requested.wait(0.5):
                if not self._threads[0].is_alive():
                    log_event(_log, "the REST API stopped unexpectedly", logging.ERROR)
                    code = 1
                    break
            self.stop(self._stop_trigger)
            return code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        command = _SIGNAL_COMMANDS[signal.Signals(signum)]
        if command == "stop" and self._stopping:
            os._exit(130)  # a second stop signal while stopping: the user insists
        self.commands.put((command, signal.Signals(signum).name))

    def _control_loop(self) -> None:
        """Hand queued commands on without waiting for them, look for a dead query every second, and save
        the state every ``state_every_s``.

        A pause or resume goes to the controller's worker (it returns at once), so a stop queued behind
        one is seen at once and SIGTERM never waits for a pause to finish.
        """
        next_save = time.monotonic() + self.state_every_s
        while True:
            try:
                command, trigger = self.commands.get(timeout=max(0.0, min(1.0, next_save - time.monotonic())))
            except queue.Empty:
                self.controller.watch()
                if time.monotonic() >= next_save:
                    self._save_periodically()
                    next_save = time.monotonic() + self.state_every_s
                continue
            if command == "exit":
                return
            if command == "stop":
                log_event(_log, "stop requested", trigger=trigger)
                self._stop_trigger = trigger
                self.stop_requested.set()
                continue
            try:
                self.controller.request("pause" if command == "pause" else "resume", trigger)
            except FleetGenError as err:
                log_event(_log, f"{command} refused", logging.WARNING, trigger=trigger, reason=str(err))

    def _save_periodically(self) -> None:
        try:
            self.controller.save_if_idle()
        except Exception as err:  # a full disk must not stop generation; the next save retries
            log_event(_log, "could not save the state", logging.ERROR, error=str(err))


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, or one clear error when the port is taken or the host unknown."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, IndexError) as err:
        raise OptionError(f"--host {host!r}: cannot listen there ({err})") from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise OptionError(
            f"--port {port}: cannot listen on {host}:{port} ({err.strerror}); is another fleetgen service "
            "running? Stop it, or pick another --port"
        ) from err
    sock.setblocking(False)
    return sock


def serve(
    config: Config,
    data_dir: str | os.PathLike[str] | DataDir,
    *,
    master: str | None = None,
    remote: str | None = None,
    speedup: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    conf: Mapping[str, str] | None = None,
) -> int:
    """``fleetgen run``: the SparkSession, both queries and the REST API in one process.

    ``conf``: Spark settings (``--conf``), also the data directory's storage settings."""
    token = os.environ.get(TOKEN_ENV) or None  # None: the service draws one and saves it for its clients
    check_bind(host, token)  # before Spark starts: refuse fast
    check_speedup(speedup or "1")
    layout = data_dir if isinstance(data_dir, DataDir) else DataDir(data_dir, conf)
    took_over = hold(layout)  # refuse at once, before Spark starts, when another process writes this directory
    configure_logging(layout)
    log_takeover(took_over)
    from fleetgen_spark.spark.session import spark_session

    spark = spark_session(master, app_name="fleetgen-run", remote=remote, storage=layout.uri, **dict(conf or {}))
    service = Service(spark, layout, config, speedup or "1", host, port, token)
    try:
        return service.run_forever()
    finally:
        spark.stop()
