"""The one place where errors become HTTP responses: always ``{"error": "..."}`` (V2 error shape).

`error_response` is framework-free so the direct infer path (`service.http.infer_fast_path`) answers exactly
as the Litestar exception handlers below do.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from service.errors import ServiceError

log = logging.getLogger("service.http")


def error_response(exc: Exception, method: str, path: str) -> tuple[int, dict[str, str], dict[str, str]]:
    """(status, body, extra headers) for any exception, logged when it is the server's fault."""
    if isinstance(exc, ServiceError):
        if exc.status_code >= 500:
            log.error("%s %s failed: %s", method, path, exc.message)
        return int(exc.status_code), {"error": exc.message}, exc.headers()
    if isinstance(exc, HTTPException):
        message = exc.detail or "error"
        if isinstance(exc, ValidationException) and exc.extra:
            message = f"{message}: {_validation_details(exc.extra)}"
        return exc.status_code, {"error": message}, dict(exc.headers or {})
    log.exception("%s %s raised an unexpected error", method, path, exc_info=exc)
    return 500, {"error": f"internal server error: {type(exc).__name__}"}, {}


def _validation_details(extra: object) -> str:
    """Litestar's validation findings in words: ``query parameter 'bins': Expected `int`, got `str```,
    not the Python repr of its list of dicts."""
    if not isinstance(extra, list):
        return str(extra)
    parts = []
    for item in extra:
        if not isinstance(item, dict):
            parts.append(str(item))
            continue
        key, source, text = item.get("key"), item.get("source"), item.get("message")
        where = f"{getattr(source, 'value', source) or ''} parameter '{key}'".strip() if key else ""
        if where and text:
            parts.append(f"{where}: {text}")
        elif where:
            parts.append(f"{where} is invalid")
        else:
            parts.append(str(text or item))
    return "; ".join(parts)


def _handle(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, str]]:
    status, body, headers = error_response(exc, request.method, request.url.path)
    return Response(body, status_code=status, headers=headers)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {Exception: _handle}
