"""The one place where errors become HTTP responses: always ``{"error": "..."}`` (V2 error shape)."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from service.errors import ServiceError

log = logging.getLogger("service.http")


def _service_error(request: Request[Any, Any, Any], exc: ServiceError) -> Response[dict[str, str]]:
    if exc.status_code >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    return Response({"error": exc.message}, status_code=exc.status_code, headers=exc.headers())


def _http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, str]]:
    message = exc.detail or "error"
    if isinstance(exc, ValidationException) and exc.extra:
        message = f"{message}: {exc.extra}"
    headers = dict(exc.headers or {})
    return Response({"error": message}, status_code=exc.status_code, headers=headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, str]]:
    log.exception("%s %s raised an unexpected error", request.method, request.url.path, exc_info=exc)
    return Response({"error": f"internal server error: {type(exc).__name__}"}, status_code=500)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ServiceError: _service_error,
    HTTPException: _http_exception,
    Exception: _unexpected,
}
