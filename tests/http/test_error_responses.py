"""The one place errors become HTTP: every class of the error tree, Litestar's own errors, and surprises."""

from __future__ import annotations

import inspect
import re
from http import HTTPStatus
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.enums import ParamType
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    ValidationException,
)
from litestar.testing import TestClient

from service import errors
from service.errors import ModelNotFound, Overloaded, ServiceError
from service.http.error_responses import EXCEPTION_HANDLERS, error_response

SERVICE_ERRORS = sorted(
    (cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, ServiceError)),
    key=lambda cls: cls.__name__,
)


def _instance(cls: type[ServiceError]) -> ServiceError:
    if cls is ModelNotFound:
        return ModelNotFound("m", 3)
    if cls is Overloaded:
        return Overloaded("queue is full", retry_after_s=2)
    return cls(f"{cls.__name__} happened")


def _app(raised: Exception) -> Litestar:
    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise raised

    return Litestar([boom], exception_handlers=EXCEPTION_HANDLERS, logging_config=None)  # as create_app


def test_the_tree_in_the_docstring_lists_every_class() -> None:
    assert errors.__doc__ is not None
    documented = set(re.findall(r"(?:── |^    )(\w+) \(\d{3}\)", errors.__doc__, re.MULTILINE))
    assert documented == {cls.__name__ for cls in SERVICE_ERRORS}


def test_every_class_declares_a_status() -> None:
    for cls in SERVICE_ERRORS:
        assert isinstance(cls.status_code, HTTPStatus)
        assert cls.status_code >= 400


@pytest.mark.parametrize("cls", SERVICE_ERRORS, ids=lambda cls: cls.__name__)
def test_every_service_error_maps_to_its_status_and_body(cls: type[ServiceError]) -> None:
    exc = _instance(cls)
    with TestClient(_app(exc)) as client:
        response = client.get("/boom")
    assert response.status_code == cls.status_code
    assert response.json() == {"error": exc.message}
    for key, value in exc.headers().items():
        assert response.headers[key] == value
    assert error_response(exc, "GET", "/boom") == (int(cls.status_code), {"error": exc.message}, exc.headers())


def test_retry_after_and_authenticate_headers_travel() -> None:
    assert _instance(Overloaded).headers() == {"Retry-After": "2"}
    assert "Bearer" in errors.Unauthorized("no").headers()["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("exc", "status", "body"),
    [
        (NotFoundException(), 404, {"error": "Not Found"}),
        (MethodNotAllowedException(), 405, {"error": "Method Not Allowed"}),
        (NotAuthorizedException("who are you"), 401, {"error": "who are you"}),
        (ValidationException("Validation failed", extra=[{"key": "x"}]), 400, {"error": "Validation failed: parameter 'x' is invalid"}),
        (
            ValidationException(
                "Validation failed",
                extra=[
                    {"key": "bins", "message": "Expected `int`, got `str`", "source": ParamType.QUERY},
                    {"message": "body is not an object"},
                ],
            ),
            400,
            {"error": "Validation failed: query parameter 'bins': Expected `int`, got `str`; body is not an object"},
        ),
        (HTTPException(status_code=413, detail="Request Entity Too Large"), 413, {"error": "Request Entity Too Large"}),
    ],
    ids=["404", "405", "401", "validation", "validation-in-words", "413"],
)
def test_litestar_errors_share_the_shape(exc: Exception, status: int, body: dict[str, Any]) -> None:
    with TestClient(_app(exc)) as client:
        response = client.get("/boom")
    assert (response.status_code, response.json()) == (status, body)


def test_an_unexpected_exception_is_a_500_that_names_only_its_type(caplog: pytest.LogCaptureFixture) -> None:
    with TestClient(_app(KeyError("secret detail"))) as client, caplog.at_level("ERROR"):
        response = client.get("/boom")
    assert (response.status_code, response.json()) == (500, {"error": "internal server error: KeyError"})
    assert any("raised an unexpected error" in record.getMessage() for record in caplog.records), caplog.records
