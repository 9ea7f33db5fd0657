"""The dashboard: ``GET /ui`` and its static assets, served from the package with validators.

Every response says ``Cache-Control: no-cache`` with a content ETag: browsers keep the files but
ask again each time (a 304 costs a header), so an upgraded service never runs yesterday's script.
The content security policy keeps every request on this origin.
"""

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.status_codes import HTTP_304_NOT_MODIFIED

from service.http.auth import requires
from service.http.ui import Asset, read_asset
from service.serving.registry import ModelRegistry
from service.serving.repository import parse_version

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _respond(asset: Asset, request: Request[Any, Any, Any]) -> Response[bytes]:
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Referrer-Policy": "no-referrer",
    }
    candidates = [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]
    if asset.etag in candidates or "*" in candidates:
        return Response(b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


class UiController(Controller):
    path = "/ui"
    include_in_schema = False
    # The page and its scripts hold no data and must load to ask for a token; the data is behind /v2.
    opt = requires("public")

    @get(["/", "/index.html"], sync_to_thread=False)
    def index(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return _respond(read_asset("index.html"), request)

    @get("/manifest/{model_name:str}/{model_version:str}", sync_to_thread=False, opt=requires("inspect"))
    def manifest(self, model_name: str, model_version: str, registry: ModelRegistry) -> dict[str, Any]:
        """The served version's manifest.json (task, labels, feature names, held-out metrics), or {}."""
        version = None if model_version == "default" else parse_version(model_version)
        return dict(registry.get(model_name, version).spec.manifest or {})

    @get("/{asset_path:path}", sync_to_thread=False)
    def asset(self, asset_path: str, request: Request[Any, Any, Any]) -> Response[bytes]:
        return _respond(read_asset(asset_path.lstrip("/")), request)
