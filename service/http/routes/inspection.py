"""Inside the network at inference time: activation statistics, heat maps and held-out metrics.

V2 inference bodies in (JSON or binary tensors, gzip / deflate), under every model path with and
without ``/versions/{v}``. The app's `Inspector` is created by the lifespan and kept in app state.
"""

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.status_codes import HTTP_200_OK

from service.http.auth import requires
from service.http.routes.schemas import (
    BODY,
    MODEL,
    Activations,
    ActivationsOperation,
    EvaluateOperation,
    Evaluation,
    ExplainOperation,
    Explanation,
    answers,
)
from service.inspection.inspector import Inspector
from service.protocol.encode import EncodedResponse
from service.serving.loaded_version import LoadedVersion
from service.serving.registry import ModelRegistry
from service.serving.repository import parse_version
from service.settings import Settings

_V = "/versions/{model_version:str}"


def provide_inspector(state: State) -> Inspector:
    inspector: Inspector = state.inspector
    return inspector


InspectionAction = Callable[[LoadedVersion, bytes, Mapping[str, str], int], Coroutine[Any, Any, EncodedResponse]]


async def _inspect(
    action: InspectionAction,
    model_name: str,
    model_version: str | None,
    request: Request[Any, Any, Any],
    registry: ModelRegistry,
    settings: Settings,
) -> Response[bytes]:
    """Read the body, hold the version for the request, run the inspection, send its encoding."""
    body = await request.body()
    version = None if model_version is None else parse_version(model_version)
    async with registry.lease(model_name, version) as loaded:
        encoded = await action(loaded, body, request.headers, settings.max_request_bytes)
    return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)


class InspectionController(Controller):
    path = "/v2/models"
    opt = requires("inspect")
    tags = ["inside the network"]  # noqa: RUF012
    dependencies = {"inspector": Provide(provide_inspector, sync_to_thread=False)}  # noqa: RUF012

    @post(
        ["/{model_name:str}/activations", "/{model_name:str}" + _V + "/activations"],
        status_code=HTTP_200_OK,
        summary="Activation statistics",
        responses=answers(Activations, *MODEL, *BODY),
        operation_class=ActivationsOperation,
    )
    async def activations(
        self,
        model_name: str,
        request: Request[Any, Any, Any],
        registry: ModelRegistry,
        settings: Settings,
        inspector: Inspector,
        model_version: str | None = None,
    ) -> Response[bytes]:
        """Per-value statistics of the intermediate values (layer outputs, activations) for a batch."""
        return await _inspect(inspector.activations, model_name, model_version, request, registry, settings)

    @post(
        ["/{model_name:str}/explain", "/{model_name:str}" + _V + "/explain"],
        status_code=HTTP_200_OK,
        summary="Heat map",
        responses=answers(Explanation, *MODEL, *BODY),
        operation_class=ExplainOperation,
    )
    async def explain(
        self,
        model_name: str,
        request: Request[Any, Any, Any],
        registry: ModelRegistry,
        settings: Settings,
        inspector: Inspector,
        model_version: str | None = None,
    ) -> Response[bytes]:
        """Heat maps (CAM, Grad-CAM or occlusion) for image inputs; a PNG with ``Accept: image/png``."""
        return await _inspect(inspector.explain, model_name, model_version, request, registry, settings)

    @post(
        ["/{model_name:str}/evaluate", "/{model_name:str}" + _V + "/evaluate"],
        status_code=HTTP_200_OK,
        summary="Evaluation on labelled samples",
        responses=answers(Evaluation, *MODEL, *BODY),
        operation_class=EvaluateOperation,
    )
    async def evaluate(
        self,
        model_name: str,
        request: Request[Any, Any, Any],
        registry: ModelRegistry,
        settings: Settings,
        inspector: Inspector,
        model_version: str | None = None,
    ) -> Response[bytes]:
        """Held-out metrics for inputs plus a ``targets`` tensor, fitted to the manifest's task."""
        return await _inspect(inspector.evaluate, model_name, model_version, request, registry, settings)
