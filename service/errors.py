"""The service's one error tree. Every class carries the HTTP status it maps to.

    ServiceError (500)
    ├── InvalidRequest (400)             malformed body, header, query parameter
    │   └── InvalidInput (400)           tensor name / datatype / shape / data mismatch
    ├── Unauthorized (401)               missing or unknown access token; carries WWW-Authenticate
    ├── Forbidden (403)                  scope closed (no token grants it), or the token lacks it
    ├── NotFound (404)
    │   ├── ModelNotFound (404)          unknown model or version
    │   └── TensorNotFound (404)         unknown weight tensor id
    ├── PayloadTooLarge (413)            body or response over a configured cap
    ├── UnsupportedEncoding (415)        Content-Encoding other than gzip / deflate / identity
    ├── Unavailable (503)
    │   ├── ModelNotReady (503)          loading, unloading, or shutting down
    │   └── Overloaded (503)             queue full; carries Retry-After
    ├── RequestTimeout (504)             the request's deadline passed before it ran
    ├── ModelLoadError (500)             a model version that cannot be loaded (reason kept for the index)
    └── InferenceFailed (500)            the runtime failed on valid input

Nothing here imports a web framework: `service.app` is the one place that turns these into HTTP.
"""

from __future__ import annotations

from http import HTTPStatus


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""

    status_code: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    """HTTP status the error maps to."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        """Extra response headers the error needs (e.g. Retry-After)."""
        return {}


class InvalidRequest(ServiceError):
    status_code = HTTPStatus.BAD_REQUEST


class InvalidInput(InvalidRequest):
    status_code = HTTPStatus.BAD_REQUEST


class Unauthorized(ServiceError):
    status_code = HTTPStatus.UNAUTHORIZED

    def __init__(self, message: str, challenge: str = 'Bearer realm="weightserve"') -> None:
        super().__init__(message)
        self.challenge = challenge

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.challenge}


class Forbidden(ServiceError):
    status_code = HTTPStatus.FORBIDDEN

    def __init__(self, message: str, challenge: str | None = None) -> None:
        super().__init__(message)
        self.challenge = challenge

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.challenge} if self.challenge else {}


class NotFound(ServiceError):
    status_code = HTTPStatus.NOT_FOUND


class ModelNotFound(NotFound):
    def __init__(self, name: str, version: int | str | None = None) -> None:
        if version is None:
            super().__init__(f"Request for unknown model: '{name}' is not found")
        else:
            super().__init__(f"Request for unknown model: '{name}' version {version} is not found")
        self.name = name
        self.version = version


class TensorNotFound(NotFound):
    pass


class PayloadTooLarge(ServiceError):
    status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedEncoding(ServiceError):
    status_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE

    def headers(self) -> dict[str, str]:
        return {"Accept-Encoding": "gzip, deflate"}


class Unavailable(ServiceError):
    status_code = HTTPStatus.SERVICE_UNAVAILABLE


class ModelNotReady(Unavailable):
    pass


class Overloaded(Unavailable):
    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class RequestTimeout(ServiceError):
    status_code = HTTPStatus.GATEWAY_TIMEOUT


class ModelLoadError(ServiceError):
    status_code = HTTPStatus.INTERNAL_SERVER_ERROR


class InferenceFailed(ServiceError):
    status_code = HTTPStatus.INTERNAL_SERVER_ERROR
