"""The control service: a data directory's two streaming queries behind a REST API and signals.

``fleetgen run`` holds the SparkSession, runs the onboarding and events queries and serves
``/health``, ``/pause``, ``/resume``, ``/clean`` and ``/logs`` with uvicorn in a thread, so
that its own signal handlers (SIGUSR1 pause, SIGUSR2 resume, SIGTERM/SIGINT stop) win over
uvicorn's. Pausing stops the queries; resuming starts them again from their checkpoints, so
intervals missed meanwhile are generated on resume and the dataset has no holes. The paused
flag lives in ``manifests/generator_state.json`` and survives a restart. The state machine behind
the endpoints and signals is :class:`fleetgen_spark.control.Controller`.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from http import HTTPStatus
from types import FrameType
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pyspark.sql import SparkSession
from starlette.exceptions import HTTPException
from starlette.responses import Response

from fleetgen_spark import __version__
from fleetgen_spark.client import TOKEN_ENV
from fleetgen_spark.config import Config
from fleetgen_spark.control import Controller, ServiceError, check_speedup
from fleetgen_spark.exceptions import FleetGenError, OptionError
from fleetgen_spark.logs import configure_logging, get_logger, log_event, read_logs
from fleetgen_spark.manifests import Layout
from fleetgen_spark.pipeline import ProgressListener

__all__ = [
    "TOKEN_ENV",
    "Service",
    "check_bind",
    "create_app",
    "serve",
]

_log = get_logger("service")
_SIGNAL_COMMANDS = {
    signal.SIGUSR1: "pause",
    signal.SIGUSR2: "resume",
    signal.SIGTERM: "stop",
    signal.SIGINT: "stop",
}


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token: anyone on the network could clean the data."""
    if not token and not is_loopback(host):
        raise OptionError(
            f"--host {host!r} is not a loopback address and {TOKEN_ENV} is not set; refusing to expose "
            f"pause, resume and clean without a token: set {TOKEN_ENV} (clients send it as "
            "'Authorization: Bearer <token>') or listen on --host 127.0.0.1"
        )


# -- REST API ---------------------------------------------------------------------------------------

_LEVEL = r"(?i)^(debug|info|warning|error|critical)$"
Level = Annotated[str, Query(pattern=_LEVEL, description="minimum level: DEBUG, INFO, WARNING, ERROR or CRITICAL")]
Since = Annotated[str | None, Query(max_length=64, description="ISO-8601 instant, e.g. 2025-11-08T14:15:00Z")]
Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many records, newest first")]
_BEARER = HTTPBearer(auto_error=False, description=f"the service's {TOKEN_ENV}, when it has one")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


def create_app(controller: Controller, token: str | None = None) -> FastAPI:
    """The REST API over a controller; POST endpoints need ``Authorization: Bearer <token>`` when a token is set."""
    app = FastAPI(
        title="fleetgen control service",
        version=__version__,
        description="Pause, resume and clean the fleetgen streaming queries of one data directory; read its logs.",
    )
    _install_error_handlers(app)

    def authorize(credentials: Credentials) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401,
                detail=f"POST endpoints need the header 'Authorization: Bearer <token>' with the service's {TOKEN_ENV}",
                headers={"WWW-Authenticate": "Bearer"},
            )

    guarded = [Depends(authorize)]

    @app.get("/health", summary="status, uptime, batch counts and the state of both queries")
    def health() -> dict[str, Any]:
        return controller.health()

    @app.post("/pause", dependencies=guarded, summary="stop both queries after their current batch (idempotent)")
    def pause() -> dict[str, Any]:
        changed = controller.pause("api")
        return {**controller.health(), "changed": changed}

    @app.post("/resume", dependencies=guarded, summary="restart both queries from their checkpoints (idempotent)")
    def resume() -> dict[str, Any]:
        changed = controller.resume("api")
        return {**controller.health(), "changed": changed}

    @app.post("/clean", dependencies=guarded, summary="remove tables, checkpoints and manifests (paused only)")
    def clean() -> dict[str, Any]:
        removed = controller.clean("api")
        return {**controller.health(), "removed": removed, "data_dir": str(controller.layout.root)}

    @app.get("/logs", summary="log records at or above a level and not before a time, newest first")
    def logs(level: Level = "DEBUG", since: Since = None, limit: Limit = 100) -> dict[str, Any]:
        records = read_logs(controller.layout.root, min_level=level.upper(), since=_parse_since(since), limit=limit)
        return {"count": len(records), "records": records}

    return app


def _parse_since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError) as err:
        problem = {"loc": ("query", "since"), "msg": f"not an ISO-8601 instant ({err})", "input": text}
        raise RequestValidationError([problem]) from err


def _error(status: int, error: str, detail: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=dict(headers or {}))


def _install_error_handlers(app: FastAPI) -> None:
    """Every error is JSON ``{"error": ..., "detail": ...}``: never an HTML page or a stack trace."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        detail: Any = exc.detail
        if exc.status_code == 404:
            detail = f"no endpoint {request.url.path}; the API is described at /docs"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
        return _error(exc.status_code, _reason(exc.status_code), detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        detail = [
            {
                "parameter": ".".join(str(part) for part in problem.get("loc", ())),
                "message": problem.get("msg", "invalid"),
                "received": repr(problem.get("input"))[:120],
            }
            for problem in exc.errors()
        ]
        return _error(422, "invalid request", detail)

    @app.exception_handler(FleetGenError)
    async def refused(request: Request, exc: FleetGenError) -> Response:
        status = exc.status_code if isinstance(exc, ServiceError) else 409  # e.g. a data dir's dataset.md conflicts
        return _error(status, _reason(status), str(exc))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        log_event(_log, "request failed", logging.ERROR, path=request.url.path, error=f"{type(exc).__name__}: {exc}")
        return _error(500, "internal error", "the service could not answer; see GET /logs?level=ERROR")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


# -- the process ----------------------------------------------------------------------------------


class Service:
    """One data directory's control service: a controller, its REST API on uvicorn, its signals.

    ``start()``/``stop()`` run it inside a caller's process (tests share one SparkSession);
    ``run_forever()`` is ``fleetgen run``: it installs the signal handlers and blocks until told to stop.
    """

    def __init__(
        self,
        spark: SparkSession,
        layout: Layout,
        config: Config,
        speedup: str = "1",
        host: str = "127.0.0.1",
        port: int = 18000,
        token: str | None = None,
        state_every_s: float = 300.0,
        stop_grace_s: float = 120.0,
    ) -> None:
        check_bind(host, token)
        self.controller = Controller(spark, layout, config, speedup, stop_grace_s)
        self.host = host
        self.port = port
        self.token = token or None
        self.state_every_s = state_every_s
        # Signal handlers only put here: SimpleQueue.put is reentrant, a lock would risk a deadlock.
        self.commands: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self.stop_requested = threading.Event()
        self._stop_trigger = "stop"
        self._listener = ProgressListener()
        self._server: uvicorn.Server | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

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
            create_app(self.controller, self.token),
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
        log_event(_log, "service listening", url=self.url, status=self.controller.status, pid=os.getpid())

    def stop(self, trigger: str = "stop") -> None:
        """Stop the queries cleanly, save the state, then stop serving."""
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
        """Run queued commands one at a time, and save the state every ``state_every_s``."""
        next_save = time.monotonic() + self.state_every_s
        while True:
            try:
                command, trigger = self.commands.get(timeout=max(0.0, next_save - time.monotonic()))
            except queue.Empty:
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
                getattr(self.controller, command)(trigger)
            except FleetGenError as err:
                log_event(_log, f"{command} refused", logging.WARNING, trigger=trigger, reason=str(err))
            except Exception as err:
                log_event(_log, f"{command} failed", logging.ERROR, trigger=trigger, error=str(err))

    def _save_periodically(self) -> None:
        try:
            if not self.controller.stopped:
                self.controller.save()
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
    data_dir: str | os.PathLike[str],
    *,
    master: str | None = None,
    speedup: str | None = None,
    host: str = "127.0.0.1",
    port: int = 18000,
) -> int:
    """``fleetgen run``: the SparkSession, both queries and the REST API in one process."""
    token = os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)  # before Spark starts: refuse fast
    check_speedup(speedup or "1")
    layout = Layout(data_dir)
    configure_logging(layout.root)
    from fleetgen_spark.session import spark_session

    spark = spark_session(master, app_name="fleetgen-run")
    service = Service(spark, layout, config, speedup or "1", host, port, token)
    try:
        return service.run_forever()
    finally:
        spark.stop()
