"""The control service's REST API: its models, its endpoints and their errors (FastAPI).

``create_app`` puts ``/health``, ``/pause``, ``/resume``, ``/clean`` and ``/logs`` in front of a
:class:`fleetgen_spark.service.control.Controller`; :mod:`fleetgen_spark.service.process` serves it
with uvicorn beside the queries and the signals.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Response as FastAPIResponse
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from fleetgen_spark import __version__
from fleetgen_spark.core.exceptions import FleetGenError
from fleetgen_spark.service.api_docs import add_docs
from fleetgen_spark.service.control import Controller, ServiceError
from fleetgen_spark.service.rest import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    TOKEN_ENV,
    allowed_hosts,
    allowed_origins,
)
from fleetgen_spark.storage.logs import get_logger, log_event, read_logs

__all__ = ["create_app"]

_log = get_logger("service")

# -- REST API: what it answers ------------------------------------------------------------------------


class Problem(BaseModel):
    """One bad request parameter."""

    parameter: str = Field(examples=["query.limit"])
    message: str = Field(examples=["Input should be less than or equal to 1000"])
    received: str = Field(examples=["5000"])


class ErrorBody(BaseModel):
    """Every error the service answers (401, 403, 404, 405, 409, 422, 503): never HTML, never a stack trace."""

    error: str = Field(description="the HTTP reason phrase, lower case", examples=["conflict"])
    detail: str | list[Problem] = Field(description="what was wrong and what to do; for 422 one entry per parameter")


class Health(BaseModel):
    """The state of the service and its two queries."""

    model_config = ConfigDict(extra="allow")

    status: Literal["running", "paused", "pausing", "resuming", "failed"] = Field(
        description="failed: a query died (last_error says why); POST /resume starts it again"
    )
    uptime_s: float
    pid: int
    batches_generated_count: int
    total_events: int
    last_driver_batch: str | None
    last_company_batch: str | None
    last_company_batch_time: str | None
    last_driver_batch_time: str | None
    last_generated_at: str | None
    dataset: dict[str, Any] | None = Field(description="data dir, seed, start, speedup; null after a clean")
    lag_s: float | None = Field(
        description="simulated now minus the end of the last interval written: how far the data is behind its "
        "clock (null while paused or before the queries start)"
    )
    queries: dict[str, dict[str, Any]] = Field(description="per query: Spark's id, runId, name, isActive, ...")
    last_error: str | None = Field(description="why a query died, or why the last pause or resume failed")


class Changed(Health):
    """The state after a pause or resume request; ``changed`` is false when there was nothing to do."""

    changed: bool


class Cleaned(Health):
    """The state after a clean: still paused, no dataset."""

    removed: list[str] = Field(examples=[["delta", "checkpoints", "manifests"]])
    data_dir: str


class Logs(BaseModel):
    """Log records, newest first."""

    count: int
    records: list[dict[str, Any]]


_EXAMPLES: dict[int, tuple[str, str]] = {
    401: ("a missing or wrong token", "POST endpoints need the header 'Authorization: Bearer <token>' ..."),
    403: ("a Host that is not the service's own address, or an Origin of another site", "Host ... is refused"),
    409: ("not possible in the current state, e.g. clean while running", "clean needs a paused service: ..."),
    422: ("a bad query parameter", "[{parameter, message, received}]"),
    503: ("the service is shutting down", "the service is shutting down"),
}
_AUTH_HEADER = {"WWW-Authenticate": {"description": "always `Bearer`", "schema": {"type": "string"}}}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        description, detail = _EXAMPLES[code]
        example: dict[str, Any] = {"error": _reason(code), "detail": detail}
        if code == 422:
            example = {
                "error": "invalid request",
                "detail": [{"parameter": "query.limit", "message": "...", "received": "0"}],
            }
        responses[code] = {
            "model": ErrorBody,
            "description": description,
            "content": {"application/json": {"example": example}},
            **({"headers": _AUTH_HEADER} if code == 401 else {}),
        }
    return responses


_LEVEL = r"(?i)^(debug|info|warning|error|critical)$"
Level = Annotated[str, Query(pattern=_LEVEL, description="minimum level: DEBUG, INFO, WARNING, ERROR or CRITICAL")]
Since = Annotated[
    str | None,
    Query(
        description="RFC 3339 instant with its offset, e.g. 2025-11-08T14:15:00Z; records not before it",
        json_schema_extra={"format": "date-time"},
    ),
]
# RFC 3339 date-time (what the document's `format: date-time` promises): a number or a bare date is refused.
_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many records, newest first")]
_BEARER = HTTPBearer(
    auto_error=False,
    description=f"{TOKEN_ENV}, or the token the service saved in <data_dir>/manifests/api_token",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
_DESCRIPTION = f"""Pause, resume and clean the fleetgen streaming queries of one data directory; read its logs.

* POST endpoints need `Authorization: Bearer TOKEN`: `{TOKEN_ENV}` when the service has it, else the token it
  saved owner-only in `<data_dir>/manifests/api_token` (401 otherwise).
* Every request whose `Host` is not the service's own address (DNS rebinding) or that carries an `Origin` of
  another site (a web page) is refused with 403 and changes nothing.
* `POST /pause` and `POST /resume` answer 202 at once with the status `pausing` or `resuming`; poll
  `GET /health` until it reads `paused` or `running`. They answer 200 when there is nothing to do.
* Every error is JSON `{{"error", "detail"}}`: 401, 403, 404 (no such path), 405 (another method; `Allow`
  lists the allowed ones), 409, 422, 503.
"""


def create_app(controller: Controller, token: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> FastAPI:
    """The REST API over a controller, answering only as ``host:port``; POST endpoints need the bearer ``token``."""
    # No /redoc: ReDoc comes only from a CDN (a blank page offline); /docs is served from the package.
    app = FastAPI(
        title="fleetgen control service", version=__version__, description=_DESCRIPTION, docs_url=None, redoc_url=None
    )
    add_docs(app)
    app.add_middleware(_SameOrigin, hosts=allowed_hosts(host, port), origins=allowed_origins(host, port))
    _install_error_handlers(app)

    def authorize(credentials: Credentials) -> None:
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401,
                detail=(
                    "POST endpoints need the header 'Authorization: Bearer <token>' with the service's "
                    f"{TOKEN_ENV}, or the token in <data_dir>/manifests/api_token"
                ),
                headers={"WWW-Authenticate": "Bearer"},
            )

    guarded = [Depends(authorize)]

    @app.get("/health", summary="status, uptime, batch counts and the state of both queries", responses=_errors(403))
    def health() -> Health:
        return Health(**controller.health())

    def change(command: Literal["pause", "resume"], response: FastAPIResponse) -> Changed:
        changed = controller.request(command, "api")
        body = controller.health()
        response.status_code = 202 if changed or body["status"] in ("pausing", "resuming") else 200
        return Changed(**body, changed=changed)

    accepted = "accepted: the status is `{}` until the change is done (poll GET /health)"
    done = "nothing to do: already {}"

    @app.post(
        "/pause",
        dependencies=guarded,
        status_code=202,
        summary="stop both queries after their current batch (202 at once; idempotent)",
        responses={
            202: {"description": accepted.format("pausing")},
            200: {"model": Changed, "description": done.format("paused")},
            **_errors(401, 403, 503),
        },
    )
    def pause(response: FastAPIResponse) -> Changed:
        return change("pause", response)

    @app.post(
        "/resume",
        dependencies=guarded,
        status_code=202,
        summary="restart both queries from their checkpoints (202 at once; idempotent)",
        responses={
            202: {"description": accepted.format("resuming")},
            200: {"model": Changed, "description": done.format("running")},
            **_errors(401, 403, 503),
        },
    )
    def resume(response: FastAPIResponse) -> Changed:
        return change("resume", response)

    @app.post(
        "/clean",
        dependencies=guarded,
        summary="remove tables, checkpoints and manifests (paused only; it stays paused)",
        responses=_errors(401, 403, 409, 503),
    )
    def clean() -> Cleaned:
        removed = controller.clean("api")
        return Cleaned(**controller.health(), removed=removed, data_dir=controller.layout.uri)

    @app.get(
        "/logs",
        summary="log records at or above a level and not before a time, newest first",
        responses=_errors(403, 422),
    )
    def logs(level: Level = "DEBUG", since: Since = None, limit: Limit = 100) -> Logs:
        records = read_logs(controller.layout, min_level=level.upper(), since=_parse_since(since), limit=limit)
        return Logs(count=len(records), records=records)

    return app


class _SameOrigin:
    """Refuse (403) a request whose Host is not the service's own address, or whose Origin is another site's.

    A web page can send a "simple" POST to 127.0.0.1 without a preflight (Origin tells it apart), and a DNS
    name rebound to 127.0.0.1 lets a page read the answers (its Host header is that name).
    """

    def __init__(self, app: ASGIApp, hosts: frozenset[str], origins: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = self._problem(Headers(scope=scope))
            if problem is not None:
                await _error(403, "forbidden", problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _problem(self, headers: Headers) -> str | None:
        host = headers.get("host", "")
        if host.lower() not in self.hosts:
            return f"Host {host[:100]!r} is not this service's address; use one of {', '.join(sorted(self.hosts))}"
        origin = headers.get("origin")
        if origin is not None and origin.lower() not in self.origins:
            return f"requests from {origin[:100]!r} are refused: only this service's own pages may call it"
        return None


def _parse_since(text: str | None) -> datetime | None:
    """An RFC 3339 instant in UTC; a leap second counts as :59; before year 1 or after 9999 is clamped."""
    if text is None:
        return None
    match = _RFC3339.fullmatch(text)
    try:
        if match is None:
            raise ValueError("expected an RFC 3339 instant with its offset, e.g. 2025-11-08T14:15:00Z")
        year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
        micros = int((match[7] or ".0")[1:7].ljust(6, "0"))
        zone = timezone.utc
        if match[8] not in ("Z", "z"):
            sign = -1 if match[8][0] == "-" else 1
            zone = timezone(sign * timedelta(hours=int(match[8][1:3]), minutes=int(match[8][4:6])))
        moment = datetime(year, month, day, hour, minute, min(second, 59), micros, zone)
    except ValueError as err:
        problem = {"loc": ("query", "since"), "msg": f"not an RFC 3339 instant ({err})", "input": text}
        raise RequestValidationError([problem]) from err
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # year 1 with a positive offset, or 9999 with a negative one: before or after any log
        edge = datetime.min if year < 2 else datetime.max
        return edge.replace(tzinfo=timezone.utc)


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
        # e.g. a clean refused by the data directory (CleanError), or its dataset.md conflicts
        status = exc.status_code if isinstance(exc, ServiceError) else 409
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
