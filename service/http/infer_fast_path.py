"""A direct ASGI path for ``POST /v2/models/{m}[/versions/{v}]/infer``, the one hot endpoint.

Litestar's routing, dependency injection and response machinery cost more CPU per request than
decoding, batching and running a small model together, so inference requests skip them and go
straight to `service.serving.inference.infer`. Every other request, and any path this module does not
recognise exactly, goes to the Litestar app unchanged. Status codes, error bodies and headers are
the Litestar route's: the route stays registered, for the OpenAPI schema and as the reference.
Litestar's guard never sees these requests, so the ``infer`` scope is checked here, when it is closed.
"""

from __future__ import annotations

from typing import Any

import orjson
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.exceptions import ClientException
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

from service.errors import PayloadTooLarge
from service.http.auth import AccessPolicy
from service.http.error_responses import error_response
from service.serving import inference
from service.serving.registry import ModelRegistry
from service.serving.repository import parse_version
from service.settings import Settings

_READ = {
    name.encode(): name
    for name in (
        "authorization",
        "content-length",
        "content-encoding",
        "accept-encoding",
        "inference-header-content-length",
        "x-request-id",
    )
}
"""The request headers an infer request's handling reads (the only ones it decodes)."""

_MEDIA_TYPES = {name: name.encode() for name in ("application/json", "application/octet-stream")}
"""The infer path's response media types, encoded once."""
_HEADER_NAMES = {name: name.lower().encode() for name in ("Inference-Header-Content-Length", "Content-Encoding")}
"""The response headers `encode` sets, as ASGI names, encoded once."""

_TEMPLATE = "/v2/models/{model_name}/infer"
_VERSIONED_TEMPLATE = "/v2/models/{model_name}/versions/{model_version}/infer"


CLIENT_CLOSED = 499
"""Status recorded (never sent) for a request whose client went away before its answer, as nginx logs it."""


class _Disconnected(Exception):
    """The client went away before its body arrived: nobody is left to answer."""


def read_headers(scope: HTTPScope) -> dict[str, str]:
    """The headers an infer request's handling reads, in one pass over them. ASGI servers give header
    names in lower case; the first of repeated headers wins, as in Litestar."""
    headers: dict[str, str] = {}
    for key, value in scope["headers"]:
        wanted = _READ.get(key)
        if wanted is not None and wanted not in headers:
            headers[wanted] = value.decode("latin-1")
    return headers


def infer_target(path: str) -> tuple[str, str | None] | None:
    """(model name, version text or None) when ``path`` is an infer endpoint, else None."""
    if not path.startswith("/v2/models/") or not path.endswith("/infer"):
        return None
    middle = path[11:-6]  # "{name}" or "{name}/versions/{version}"
    if "/" not in middle:
        return (middle, None) if middle else None
    name, _, version = middle.partition("/versions/")
    if not name or not version or "/" in name or "/" in version:
        return None
    return name, version


class InferFastPath:
    """ASGI wrapper: infer requests are answered here, everything else by ``app``."""

    def __init__(self, app: ASGIApp, state: State, access: AccessPolicy) -> None:
        self._app = app
        self._state = state
        self._access = access
        # Decided once: with infer open (the default) the hot path pays one attribute check.
        self._infer_closed = not access.is_open("infer")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] == "POST":
            target = infer_target(scope["path"])
            if target is not None:
                await self.answer(scope, receive, send, target)
                return
        await self._app(scope, receive, send)

    async def answer(
        self,
        scope: HTTPScope,
        receive: Receive,
        send: Send,
        target: tuple[str, str | None],
        extra_header: tuple[bytes, bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Answer one infer request (``target`` from `infer_target`); the status sent, or
        ``CLIENT_CLOSED`` when the client went away before its body arrived. ``extra_header`` goes
        into the response as it is (the request middleware's ``X-Request-ID``, without a wrapper);
        ``headers`` are the request's from `read_headers`, when the caller has read them already."""
        name, version = target
        scope["path_template"] = _TEMPLATE if version is None else _VERSIONED_TEMPLATE
        # Subscripts, not attributes: State's attribute access runs only after Python's own lookup
        # has failed, which costs six times as much (0.36 against 0.05 µs, twice per request).
        settings: Settings = self._state["settings"]
        registry: ModelRegistry = self._state["registry"]
        if headers is None:
            headers = read_headers(scope)
        try:
            if self._infer_closed:  # before the body: a refused client never gets to send it
                self._access.authorize("infer", headers.get("authorization"))
            body = await _read_body(receive, headers.get("content-length"), settings.max_request_bytes)
            number = None if version is None else parse_version(version)
            encoded = await inference.infer(registry, settings, name, number, body, headers)
        except _Disconnected:
            return CLIENT_CLOSED
        except Exception as exc:
            status, error, extra = error_response(exc, scope["method"], scope["path"])
            await _send(send, status, orjson.dumps(error), "application/json", extra, extra_header)
            return status
        await _send(send, 200, encoded.body, encoded.media_type, encoded.headers, extra_header)
        return 200


async def _read_body(receive: Receive, content_length: str | None, limit: int) -> bytes:
    if content_length is not None:
        try:
            announced = int(content_length)
        except ValueError:
            raise ClientException(f"Invalid content-length: {content_length!r}") from None
        if announced > limit:
            raise PayloadTooLarge("Request Entity Too Large")
    message: Any = await receive()
    if message["type"] == "http.disconnect":
        raise _Disconnected
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise PayloadTooLarge("Request Entity Too Large")
    if not message.get("more_body", False):  # the whole body at once: most requests of a few kilobytes
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge("Request Entity Too Large")
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(
    send: Send,
    status: int,
    body: bytes,
    media_type: str,
    extra: dict[str, str],
    extra_header: tuple[bytes, bytes] | None,
) -> None:
    content_type = _MEDIA_TYPES.get(media_type) or media_type.encode()
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    for key, value in extra.items():  # a loop, not a comprehension: no function frame for one header
        headers.append((_HEADER_NAMES.get(key) or key.lower().encode("latin-1"), value.encode("latin-1")))
    if extra_header is not None:
        headers.append(extra_header)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
