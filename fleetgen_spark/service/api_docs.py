"""The control service's ``/docs`` page, with Swagger UI served from the installed package.

FastAPI's own ``/docs`` loads Swagger UI's JavaScript and CSS from a CDN, so the page is blank
offline, behind a proxy or on a cluster without internet access. Here the assets come from
the ``swagger-ui-bundle-v2`` package (Swagger UI 5, as package data), following FastAPI's
recipe for self-hosted docs assets; the original ``swagger-ui-bundle`` stops at Swagger UI
4.15, which cannot render OpenAPI 3.1, the version FastAPI writes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]  # ships no py.typed

__all__ = ["ASSETS", "add_docs"]

# The files the page loads, with their media types; nothing else of the bundle is served.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


def add_docs(app: FastAPI, path: str = "/docs") -> None:
    """Serve Swagger UI for ``app`` at ``path`` and its assets under ``path/``; ``app`` needs ``docs_url=None``."""
    folder = Path(swagger_ui_path)
    missing = [name for name in ASSETS if not (folder / name).is_file()]
    if missing:  # a broken install: say so at start, not as a blank page
        raise RuntimeError(f"Swagger UI assets {missing} are missing from {folder}; reinstall swagger-ui-bundle-v2")

    @app.get(path, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{path}/swagger-ui-bundle.js",
            swagger_css_url=f"{path}/swagger-ui.css",
            swagger_favicon_url=f"{path}/favicon-32x32.png",
        )

    for name, media_type in ASSETS.items():
        app.add_api_route(f"{path}/{name}", _serve(folder / name, media_type), methods=["GET"], include_in_schema=False)


def _serve(file: Path, media_type: str) -> Callable[[], FileResponse]:
    # A closure, not default arguments: FastAPI would turn those into query parameters.
    def asset() -> FileResponse:
        return FileResponse(file, media_type=media_type)

    return asset
