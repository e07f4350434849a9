"""``fleetgen run`` and the commands that talk to a running service: status, pause, resume, clean, logs.

The client commands need no Spark: they call the REST API with httpx, send
``Authorization: Bearer $FLEETGEN_API_TOKEN`` when that variable is set, and turn every
failure into one readable line (exit code 1).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import httpx

from fleetgen_spark.exceptions import FleetGenError

__all__ = ["TOKEN_ENV", "ClientError", "ServiceClient", "format_health", "format_record"]

TOKEN_ENV = "FLEETGEN_API_TOKEN"


class ClientError(FleetGenError):
    """No service answered, or it refused the request: the message says which and what to do."""


class ServiceClient:
    """A thin client of the control service's REST API."""

    def __init__(self, host: str = "127.0.0.1", port: int = 18000, token: str | None = None) -> None:
        if host in ("0.0.0.0", "::", ""):  # a service bound to every address answers on loopback
            host = "127.0.0.1"
        self.base_url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)

    def request(self, method: str, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        # A pause waits for the batch in flight: allow minutes, but fail fast when nobody listens.
        timeout = httpx.Timeout(300.0, connect=5.0)
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
        return self.request("POST", "/pause")

    def resume(self) -> dict[str, Any]:
        return self.request("POST", "/resume")

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
    hint = f" (set {TOKEN_ENV} to the service's token)" if status == 401 else ""
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
    return ServiceClient(args.host, args.port)


def _print(args: argparse.Namespace, body: dict[str, Any], text: str) -> int:
    print(json.dumps(body, indent=2, default=str) if args.json else text)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from fleetgen_spark.config import load_config
    from fleetgen_spark.service import serve

    overrides: dict[str, Any] = {"seed": args.seed} if args.seed is not None else {}
    config = load_config(args.config, **overrides)
    return serve(config, args.data_dir, master=args.master, speedup=args.speedup, host=args.host, port=args.port)


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    body = client.health()
    return _print(args, body, format_health(client.base_url, body))


def cmd_pause(args: argparse.Namespace) -> int:
    body = _client(args).pause()
    text = "paused" if body.get("changed") else "already paused"
    return _print(args, body, f"{text}: {body.get('batches_generated_count', 0)} batches generated so far")


def cmd_resume(args: argparse.Namespace) -> int:
    body = _client(args).resume()
    text = "resumed" if body.get("changed") else "already running"
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
