"""Triton's model-repository extension: index (scope ``inspect``), load and unload (scope ``admin``).

The index is read-only and the dashboard lists models with it, so it needs no more than the weights do.
"""

from typing import Any

from litestar import Controller, Request, post
from litestar.status_codes import HTTP_200_OK

from service.errors import InvalidRequest
from service.http.auth import requires
from service.http.routes.schemas import SCOPED, IndexEntry, IndexOperation, LoadOperation, ModelState, answers
from service.protocol.request import parse_json
from service.serving.registry import ModelRegistry
from service.serving.repository import validate_model_name


async def _json_object(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """tritonclient posts an empty body to /index; treat empty as {}."""
    body = await request.body()
    if not body.strip():
        return {}
    document = parse_json(body)
    if not isinstance(document, dict):
        raise InvalidRequest("request body must be a JSON object")
    return document


class RepositoryController(Controller):
    path = "/v2/repository"
    opt = requires("admin")
    tags = ["repository"]  # noqa: RUF012

    @post(
        "/index",
        status_code=HTTP_200_OK,
        opt=requires("inspect"),
        summary="Repository index",
        responses=answers(list[IndexEntry], 400, *SCOPED, 413, 503),
        operation_class=IndexOperation,
    )
    async def index(self, request: Request[Any, Any, Any], registry: ModelRegistry) -> list[dict[str, str]]:
        document = await _json_object(request)
        ready = document.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidRequest("'ready' must be a boolean")
        return [entry.as_json() for entry in registry.index(ready_only=ready)]

    @post(
        "/models/{model_name:str}/load",
        status_code=HTTP_200_OK,
        summary="Load or reload a model",
        responses=answers(ModelState, 400, *SCOPED, 404, 413, 500, 503),
        operation_class=LoadOperation,
    )
    async def load(self, model_name: str, request: Request[Any, Any, Any], registry: ModelRegistry) -> dict[str, str]:
        document = await _json_object(request)
        parameters = document.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidRequest("'parameters' must be an object")
        if "config" in parameters or any(key.startswith("file:") for key in parameters):
            raise InvalidRequest("loading with an override config or uploaded files is not supported")
        await registry.load_model(validate_model_name(model_name))
        return {"name": model_name, "state": "READY"}

    @post(
        "/models/{model_name:str}/unload",
        status_code=HTTP_200_OK,
        summary="Unload a model",
        responses=answers(ModelState, 400, *SCOPED, 404, 413, 503),
        operation_class=LoadOperation,
    )
    async def unload(self, model_name: str, request: Request[Any, Any, Any], registry: ModelRegistry) -> dict[str, str]:
        await _json_object(request)
        await registry.unload_model(validate_model_name(model_name))
        return {"name": model_name, "state": "UNAVAILABLE"}
