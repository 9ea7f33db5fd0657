"""The API's documentation page under ``/schema``: Swagger UI, served by the service itself.

Litestar's own page loads Swagger UI from a public CDN, which leaves the page blank offline and in
clusters that reach nothing outside. Here the page, its stylesheet and scripts all come from this
origin: Swagger UI's files from the ``swagger-ui-py`` distribution (Apache-2.0, its static folder;
the package itself is never imported), and the few lines that start it from this module. The
content security policy keeps every request on this origin, and the page holds no inline script.

Routes (under the OpenAPI router, so ``/schema/...``): ``/`` and ``/swagger`` the page,
``/swagger/assets/{name}`` its files, ``/openapi.json`` the document the page reads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from litestar import Request, Response, Router, get
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.status_codes import HTTP_304_NOT_MODIFIED

from service.errors import NotFound

DIST = "swagger_ui"
"""The import name of the swagger-ui-py distribution, whose ``static/`` folder holds Swagger UI's build."""

PAGE_PATH = "/swagger"
ASSETS = "assets"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
"""Every request stays on this origin. Swagger UI sets styles on its elements, hence 'unsafe-inline'
for styles (never for scripts)."""

# Swagger UI starts from a script file rather than an inline one, so the policy needs no exception
# for scripts. It reads the document's URL from the page, and never calls an online validator.
_START = b"""\
"use strict";
window.addEventListener("load", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    tryItOutEnabled: false,
    persistAuthorization: false,
    displayRequestDuration: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
"""

_FILES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
"""Swagger UI's files the page uses; nothing else of the folder is served."""


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'


def swagger_ui_folder() -> Path:
    """Swagger UI's build inside the installed distribution (found without importing the package)."""
    spec = find_spec(DIST)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise RuntimeError(f"the docs page needs the swagger-ui-py distribution ({DIST!r} is not installed)")
    return Path(locations[0]) / "static"


def _asset(name: str) -> _Asset:
    if name == "start.js":
        return _Asset(_START, "text/javascript")
    content_type = _FILES.get(name)
    if content_type is None:
        raise NotFound(f"no docs asset '{name}'")
    return _Asset((swagger_ui_folder() / name).read_bytes(), content_type)


def _respond(asset: _Asset, request: Request[Any, Any, Any]) -> Response[bytes]:
    # Revalidated on every load (a 304 costs a header), so an upgrade never shows yesterday's page.
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    candidates = [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]
    if asset.etag in candidates:
        return Response(b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


@get(f"{PAGE_PATH}/{ASSETS}/{{name:str}}", sync_to_thread=True, include_in_schema=False)
def docs_asset(name: str, request: Request[Any, Any, Any]) -> Response[bytes]:
    """One file of the docs page."""
    return _respond(_asset(name), request)


class SwaggerPage(OpenAPIRenderPlugin):
    """Swagger UI from this origin: the page links its files under ``/swagger/assets/``."""

    def __init__(self) -> None:
        super().__init__(path=PAGE_PATH, favicon="", style="")
        swagger_ui_folder()  # fail at startup, not on the first visit, when the distribution is missing

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        spec = self.get_openapi_json_route(request)
        assets = f"{spec.rsplit('/', 1)[0]}{PAGE_PATH}/{ASSETS}"
        title = _escape(str(openapi_schema["info"]["title"]))
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} API</title>
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui" data-spec="{_escape(spec)}"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="{assets}/start.js"></script>
</body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        router.register(docs_asset)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
