"""The commands that talk to a running service: status, pause, resume, clean, logs.

The client commands need no Spark: they call the REST API with httpx, send ``Authorization: Bearer TOKEN``
(``FLEETGEN_API_TOKEN`` when set, else the token the service saved in the same ``--data-dir``) and turn
every failure into one readable line (exit code 1). Pause and resume answer ``202`` at once; the client
then polls ``GET /health`` until the service is ``paused`` or ``running`` (dots on a terminal).
``fleetgen run``, which starts the service, is in :mod:`fleetgen_spark.commands`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

import httpx

from fleetgen_spark.core.exceptions import FleetGenError
from fleetgen_spark.service.rest import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, base_url, client_token
from fleetgen_spark.storage.datadir import DataDir

__all__ = ["ClientError", "ServiceClient", "format_health", "format_record"]

# How long the client waits for a pause or resume to finish (the service bounds a pause by its stop grace).
WAIT_S = 300.0


class ClientError(FleetGenError):
    """No service answered, or it refused the request: the message says which and what to do."""


class ServiceClient:
    """A thin client of the control service's REST API."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: str | None = None,
        data_dir: DataDir | str | os.PathLike[str] | None = None,
    ) -> None:
        self.base_url = base_url(host, port)
        self.token = token if token is not None else client_token(data_dir)

    def request(self, method: str, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        timeout = httpx.Timeout(60.0, connect=5.0)
        try:
            response = httpx.request(
                method, self.base_url + path, params=params, headers=headers, timeout=timeout, trust_env=False
            )
        except httpx.ConnectError as err:
            raise ClientError(
                f"no fleetgen service at {self.base_url}: start one with `make run` or `fleetgen run`"
            ) from err
        except httpx.HTTPError as err:
            raise ClientError(f"the fleetgen service at {self.base_url} did not answer: {err}") from err
        try:
            body = response.json()
        except ValueError as err:
            raise ClientError(
                f"{self.base_url} answered {response.status_code} without JSON: is it a fleetgen service?"
            ) from err
        if response.status_code >= 400:
            raise ClientError(_refusal(response.status_code, body))
        return dict(body) if isinstance(body, dict) else {"value": body}

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health")

    def pause(self) -> dict[str, Any]:
        """Ask for a pause; the answer says ``pausing`` (202) or ``paused`` (200, nothing to do)."""
        return self.request("POST", "/pause")

    def resume(self) -> dict[str, Any]:
        """Ask for a resume; the answer says ``resuming`` (202) or ``running`` (200, nothing to do)."""
        return self.request("POST", "/resume")

    def wait_for(
        self, status: str, answer: dict[str, Any], timeout_s: float = WAIT_S, out: TextIO | None = None
    ) -> dict[str, Any]:
        """Poll /health until the service reaches ``status``; a dot every second on a terminal meanwhile."""
        dots = out is not None and out.isatty()
        deadline = time.monotonic() + timeout_s
        health = answer
        shown = 0.0
        while health.get("status") != status:
            if health.get("status") in ("paused", "running"):  # settled elsewhere: the change failed
                reason = health.get("last_error") or "see `fleetgen logs --level warning`"
                raise ClientError(f"the service is {health.get('status')}, not {status}: {reason}")
            if time.monotonic() > deadline:
                raise ClientError(f"the service is still {health.get('status')} after {timeout_s:.0f} s")
            if dots and out is not None and time.monotonic() - shown >= 1.0:
                out.write("." if shown else f"{health.get('status')} ")
                out.flush()
                shown = time.monotonic()
            time.sleep(0.25)
            health = self.health()
        if dots and out is not None and shown:
            out.write("\n")
        return health

    def clean(self) -> dict[str, Any]:
        return self.request("POST", "/clean")

    def logs(self, level: str | None = None, since: str | None = None, limit: int | None = None) -> dict[str, Any]:
        params = {k: v for k, v in {"level": level, "since": since, "limit": limit}.items() if v is not None}
        return self.request("GET", "/logs", params)


def _refusal(status: int, body: Any) -> str:
    error = body.get("error", "error") if isinstance(body, dict) else "error"
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # validation problems: one per parameter
        detail = "; ".join(f"{d.get('parameter')}: {d.get('message')}" for d in detail if isinstance(d, dict))
    hint = (
        f" (set {TOKEN_ENV} to the service's token, or pass the service's --data-dir, whose manifests/api_token"
        " the client reads)"
        if status == 401
        else ""
    )
    return f"the service refused ({status} {error}): {detail}{hint}"


# -- output ---------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def format_health(url: str, health: dict[str, Any]) -> str:
    """A few readable lines about a service's state."""
    pid = f"pid {health['pid']}, " if health.get("pid") else ""
    uptime = _duration(float(health.get("uptime_s", 0)))
    lines = [f"fleetgen service at {url}: {health.get('status')} ({pid}up {uptime})"]
    dataset = health.get("dataset")
    if isinstance(dataset, dict):
        lines.append(
            f"  dataset     {dataset.get('data_dir')}  seed {dataset.get('seed')}  start {dataset.get('start')}"
            f"  speedup {dataset.get('speedup')}"
        )
    else:
        lines.append("  dataset     none yet (cleaned): `fleetgen resume` starts a fresh one")
    lines.append(
        f"  batches     {health.get('batches_generated_count', 0)} intervals, {health.get('total_events', 0)} events;"
        f" last driver batch {health.get('last_driver_batch') or '-'},"
        f" last company batch {health.get('last_company_batch') or '-'}"
    )
    if isinstance(health.get("lag_s"), (int, float)):
        lag = float(health["lag_s"])
        lines.append(f"  lag         the data is {_duration(lag)} of simulated time behind its clock")
    if health.get("last_error"):
        lines.append(f"  error       {health['last_error']}")
    for role, query in (health.get("queries") or {}).items():
        status = query.get("status") or {}
        progress = query.get("lastProgress") or {}
        state = "active" if query.get("isActive") else "stopped"
        line = f"  {role:<11} {state:<8} {status.get('message', '')!s:<28} last batch {progress.get('batchId', '-')}"
        if query.get("exception"):
            line += f"  error: {query['exception']}"
        lines.append(line)
    return "\n".join(lines)


def format_record(record: dict[str, Any]) -> str:
    meta = record.get("metadata") or {}
    extra = " ".join(f"{k}={v}" for k, v in meta.items()) if isinstance(meta, dict) else str(meta)
    line = f"{record.get('timestamp')} {record.get('level', ''):<8} [{record.get('component')}] {record.get('message')}"
    return line + (f" ({extra})" if extra else "")


# -- commands -------------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> ServiceClient:
    data_dir = getattr(args, "data_dir", None)
    layout = None if data_dir is None else DataDir(data_dir, getattr(args, "spark_conf", {}))
    return ServiceClient(args.host, args.port, data_dir=layout)


def _print(args: argparse.Namespace, body: dict[str, Any], text: str) -> int:
    print(json.dumps(body, indent=2, default=str) if args.json else text)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    body = client.health()
    return _print(args, body, format_health(client.base_url, body))


def cmd_pause(args: argparse.Namespace) -> int:
    client = _client(args)
    asked = client.pause()
    body = client.wait_for("paused", asked, out=sys.stderr)
    text = "paused" if asked.get("changed") else "already paused"
    return _print(args, body, f"{text}: {body.get('batches_generated_count', 0)} batches generated so far")


def cmd_resume(args: argparse.Namespace) -> int:
    client = _client(args)
    asked = client.resume()
    body = client.wait_for("running", asked, out=sys.stderr)
    text = "resumed" if asked.get("changed") else "already running"
    return _print(args, body, f"{text}: {body.get('batches_generated_count', 0)} batches generated so far")


def cmd_clean(args: argparse.Namespace) -> int:
    body = _client(args).clean()
    removed = ", ".join(f"{name}/" for name in body.get("removed", [])) or "nothing (already clean)"
    text = f"cleaned {body.get('data_dir')}: removed {removed}; still paused, `fleetgen resume` starts a fresh dataset"
    return _print(args, body, text)


def cmd_logs(args: argparse.Namespace) -> int:
    body = _client(args).logs(args.level, args.since, args.limit)
    records = body.get("records", [])
    # The API answers newest first; a terminal reads best oldest first, the newest at the bottom.
    return _print(args, body, "\n".join(format_record(r) for r in reversed(records)) or "no log records match")
