"""A direct ASGI path for ``POST /v2/models/{m}[/versions/{v}]/infer``, the one hot endpoint.

Litestar's routing, dependency injection and response machinery cost more CPU per request than
decoding, batching and running a small model together, so inference requests skip them and go
straight to `service.inference.infer`. Every other request, and any path this module does not
recognise exactly, goes to the Litestar app unchanged. Status codes, error bodies and headers are
the Litestar route's: the route stays registered, for the OpenAPI schema and as the reference.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

from service import inference
from service.errors import ServiceError
from service.registry import ModelRegistry
from service.repository import parse_version
from service.settings import Settings

log = logging.getLogger("service.http")

_TEMPLATE = "/v2/models/{model_name}/infer"
_VERSIONED_TEMPLATE = "/v2/models/{model_name}/versions/{model_version}/infer"


class _Disconnected(Exception):
    """The client went away before its body arrived: nobody is left to answer."""


class _HttpError(Exception):
    """Errors Litestar itself raises while reading a body, with the same status and detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def infer_target(path: str) -> tuple[str, str | None] | None:
    """(model name, version text or None) when ``path`` is an infer endpoint, else None."""
    parts = path.split("/")
    if len(parts) == 5 and parts[4] == "infer":
        version = None
    elif len(parts) == 7 and parts[4] == "versions" and parts[6] == "infer" and parts[5]:
        version = parts[5]
    else:
        return None
    if parts[0] or parts[1] != "v2" or parts[2] != "models" or not parts[3]:
        return None
    return parts[3], version


class InferFastPath:
    """ASGI wrapper: infer requests are answered here, everything else by ``app``."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self._app = app
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] == "POST":
            target = infer_target(scope["path"])
            if target is not None:
                name, version = target
                scope["path_template"] = _TEMPLATE if version is None else _VERSIONED_TEMPLATE
                await self._infer(scope, receive, send, name, version)
                return
        await self._app(scope, receive, send)

    async def _infer(self, scope: HTTPScope, receive: Receive, send: Send, name: str, version: str | None) -> None:
        settings: Settings = self._state.settings
        registry: ModelRegistry = self._state.registry
        # ASGI servers give header names in lower case; the first of repeated headers wins, as in Litestar.
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.decode("latin-1"), value.decode("latin-1"))
        try:
            body = await _read_body(receive, headers.get("content-length"), settings.max_request_bytes)
            number = None if version is None else parse_version(version)
            encoded = await inference.infer(registry, settings, name, number, body, headers)
        except _Disconnected:
            return
        except _HttpError as exc:
            await _send(send, exc.status, orjson.dumps({"error": exc.detail}), "application/json", {})
            return
        except ServiceError as exc:
            if exc.status_code >= 500:
                log.error("%s %s failed: %s", scope["method"], scope["path"], exc.message)
            await _send(send, exc.status_code, orjson.dumps({"error": exc.message}), "application/json", exc.headers())
            return
        except Exception as exc:
            log.exception("%s %s raised an unexpected error", scope["method"], scope["path"], exc_info=exc)
            body = orjson.dumps({"error": f"internal server error: {type(exc).__name__}"})
            await _send(send, 500, body, "application/json", {})
            return
        await _send(send, 200, encoded.body, encoded.media_type, encoded.headers)


async def _read_body(receive: Receive, content_length: str | None, limit: int) -> bytes:
    if content_length is not None:
        try:
            announced = int(content_length)
        except ValueError:
            raise _HttpError(400, f"Invalid content-length: {content_length!r}") from None
        if announced > limit:
            raise _HttpError(413, "Request Entity Too Large")
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _HttpError(413, "Request Entity Too Large")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send(send: Send, status: int, body: bytes, media_type: str, extra: dict[str, str]) -> None:
    headers = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
