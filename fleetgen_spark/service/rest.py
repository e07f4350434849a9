"""The REST contract between the control service and its clients: where it listens, how it is addressed, its token.

The service (:mod:`fleetgen_spark.service.app`, :mod:`~fleetgen_spark.service.process`) and
:mod:`fleetgen_spark.client` import this module and not each other.
It needs neither Spark nor an HTTP library.

The token: mutating endpoints always need ``Authorization: Bearer TOKEN``. The token is ``FLEETGEN_API_TOKEN``
when that is set; otherwise the service draws one at start and saves it owner-only at
``<data_dir>/manifests/api_token``, where a client of the same data directory reads it (the way Jupyter
protects a local server).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket

from fleetgen_spark.storage.datadir import DataDir

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "TOKEN_ENV",
    "allowed_hosts",
    "allowed_origins",
    "base_url",
    "client_token",
    "draw_token",
    "host_header",
    "is_loopback",
    "read_token",
]

TOKEN_ENV = "FLEETGEN_API_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 18000
_WILDCARDS = ("0.0.0.0", "::", "")
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any loopback address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_header(host: str, port: int) -> str:
    """``host:port`` as it appears in a Host header and a URL (IPv6 addresses in brackets)."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def base_url(host: str, port: int) -> str:
    """The URL a client uses for a service listening on ``host``; a wildcard bind answers on loopback."""
    return "http://" + host_header(DEFAULT_HOST if host in _WILDCARDS else host, port)


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The Host header values the service answers (anything else may be a DNS-rebinding page): lower case.

    Its bound host, the loopback names and, when it listens on every address, this machine's names.
    """
    names = {host.strip("[]"), *_LOOPBACK_NAMES}
    if host in _WILDCARDS:
        names.discard(host)
        names |= {socket.gethostname(), socket.getfqdn()}
    return frozenset(host_header(name, port).lower() for name in names if name)


def allowed_origins(host: str, port: int) -> frozenset[str]:
    """The service's own origins (its /docs page sends one of these); any other Origin is refused."""
    return frozenset(f"http://{value}" for value in allowed_hosts(host, port))


def draw_token() -> str:
    return secrets.token_urlsafe(32)


def read_token(data_dir: DataDir | str | os.PathLike[str]) -> str | None:
    """The token a service saved in this data directory, or None when there is none (or it cannot be read)."""
    return (data_dir if isinstance(data_dir, DataDir) else DataDir(data_dir)).read_token()


def client_token(data_dir: DataDir | str | os.PathLike[str] | None) -> str | None:
    """What a client sends: ``FLEETGEN_API_TOKEN`` when set, else the token saved in its data directory."""
    from_env = os.environ.get(TOKEN_ENV) or None
    if from_env is not None or data_dir is None:
        return from_env
    return read_token(data_dir)
