"""The outermost ASGI layer: request id, access log, HTTP metrics, and the in-flight limit.

It wraps the whole application (routing included), so 404s, 405s and errors raised before a
handler runs get a request id and are counted too.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

import orjson
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, ReceiveMessage, Scope, Send

from service.http.infer_fast_path import CLIENT_CLOSED, InferFastPath, read_headers
from service.ops.idle_poll import IdlePoll
from service.ops.logs import REQUEST_ID_HEADER, RequestContext, begin_request, end_request, request_id_from
from service.ops.prometheus import ServiceMetrics

log = logging.getLogger("service.access")

CLIENT_CLOSED_REQUEST = CLIENT_CLOSED

_REQUEST_ID_NAME = REQUEST_ID_HEADER.encode()

# Probes and scrapes must answer even when the server is saturated.
_UNLIMITED_PREFIXES = ("/v2/health/", "/metrics")


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        max_in_flight: int,
        access_log: bool = False,
        idle_poll_s: float = 0.0,
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        self._access_log = access_log
        self._in_flight = 0
        """Requests counted against ``max_in_flight`` (probes and scrapes are not)."""
        self._open = 0
        """Every HTTP request being handled: the in-flight gauge, read when metrics apply."""
        metrics.deferred.sample(metrics.in_flight, self._open_requests)
        # The app's entry hands infer requests to `infer`, which goes straight to the infer path when it
        # is the next layer; every other request comes through `__call__`.
        self._direct = app if isinstance(app, InferFastPath) else None
        self._label_cache: dict[tuple[str, str, int, str, str], tuple[Any, ...]] = {}
        # After each response the loop polls a while for the client's next request (see ops.idle_poll).
        self._idle_poll = IdlePoll(idle_poll_s) if idle_poll_s > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        await self._handle(scope, receive, send)

    async def infer(self, scope: HTTPScope, receive: Receive, send: Send, target: tuple[str, str | None]) -> None:
        """An infer request (``target`` from `infer_target`), handed to the infer path directly: the same
        request id, limit, metrics and log line as `_handle` gives every request, without wrapping
        ``send`` and ``receive``. Only when the next layer is the infer path."""
        direct = self._direct
        assert direct is not None, "infer() needs the infer path as the next layer"
        headers = read_headers(scope)
        context, token, header = _begin(headers.get(REQUEST_ID_HEADER))
        status = 500
        self._open += 1
        self._metrics.deferred.touch()
        try:
            if self._in_flight >= self._max_in_flight:
                self._metrics.rejected.labels("in_flight_limit").inc()
                await _overloaded(send, self._max_in_flight, header)
                status = 503
                return
            self._in_flight += 1
            try:
                status = await direct.answer(scope, receive, send, target, header, headers)
            finally:
                self._in_flight -= 1
        finally:
            self._open -= 1
            self._record(scope, context.started, status, context.model, context.version)
            end_request(token)
            if self._idle_poll is not None:
                self._idle_poll.touch()

    async def _handle(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        context, token, header = _begin(_request_id_header(scope))
        status = 500
        disconnected = False
        limited = not scope["path"].startswith(_UNLIMITED_PREFIXES)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        async def watch_disconnect() -> ReceiveMessage:
            nonlocal disconnected
            message: ReceiveMessage = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        self._open += 1
        self._metrics.deferred.touch()
        try:
            if limited and self._in_flight >= self._max_in_flight:
                self._metrics.rejected.labels("in_flight_limit").inc()
                await _overloaded(send_with_id, self._max_in_flight)
                return
            self._in_flight += limited
            try:
                await self._app(scope, watch_disconnect, send_with_id)
            finally:
                self._in_flight -= limited
        finally:
            self._open -= 1
            if disconnected and status >= 500:
                # Nobody was left to answer: not the server's failure, so not counted as a 500.
                status = CLIENT_CLOSED_REQUEST
            self._record(scope, context.started, status, context.model, context.version)
            end_request(token)
            if self._idle_poll is not None:
                self._idle_poll.touch()

    def _open_requests(self) -> float:
        return float(self._open)

    def _children(self, method: str, route: str, status: int, model: str, version: str) -> tuple[Any, ...]:
        """The labelled counters and histograms of one request's label set, resolved once: ``labels()``
        takes a lock and builds a tuple on every call, a measurable share of a small request's CPU.
        (counter, histogram) of the HTTP request, then of the model version when one served it."""
        key = (method, route, status, model, version)
        children = self._label_cache.get(key)
        if children is None:
            metrics = self._metrics
            children = (
                metrics.http_requests.labels(method, route, str(status)),
                metrics.http_latency.labels(method, route),
            )
            if model:
                children += (
                    metrics.inference_requests.labels(model, version, str(status)),
                    metrics.inference_latency.labels(model, version),
                )
            self._label_cache[key] = children
        return children

    def _record(self, scope: HTTPScope, started: float, status: int, model: str, version: str) -> None:
        elapsed = time.perf_counter() - started
        method = scope["method"]
        # The route template, never the raw path: raw paths would make label sets unbounded.
        route = str(scope.get("path_template") or "unmatched")
        self._metrics.deferred.count(self._children(method, route, status, model, version), elapsed)
        if not self._access_log:
            return
        log.info(
            "%s %s %d",
            method,
            scope["path"],
            status,
            extra={"status": status, "duration_ms": round(elapsed * 1000, 3), "model": model, "version": version},
        )


async def _overloaded(send: Send, limit: int, extra_header: tuple[bytes, bytes] | None = None) -> None:
    body = orjson.dumps({"error": f"server is overloaded ({limit} requests in flight); retry later"})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
    ]
    if extra_header is not None:
        headers.append(extra_header)
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _request_id_header(scope: HTTPScope) -> str | None:
    for key, value in scope["headers"]:
        if key == _REQUEST_ID_NAME:
            return value.decode("latin-1")
    return None


def _begin(
    raw_id: str | None,
) -> tuple[RequestContext, contextvars.Token[RequestContext | None], tuple[bytes, bytes]]:
    """The request's context (its id: the client's X-Request-ID or a new one) and the id's response header."""
    context, token = begin_request(request_id_from(raw_id))
    return context, token, (_REQUEST_ID_NAME, context.request_id.encode())
