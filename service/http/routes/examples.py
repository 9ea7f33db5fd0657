"""Example requests shipped with a model: ``models/<name>/examples/<example>.json``.

Each is a complete V2 inference request body, usable as it is with ``…/infer`` (and ``activations``,
``explain``); an evaluation example's inputs end with ``targets`` and go to ``…/evaluate``. The files
are read from the repository on each request (small; polling may change them), in a worker thread.
"""

from pathlib import Path
from typing import Any

from litestar import Controller, Response, get

from service.errors import ModelNotFound
from service.http.auth import requires
from service.http.routes.schemas import MODEL, ExampleList, InferenceRequest, answers
from service.serving.repository import describe_example, example_names, read_example, validate_model_name
from service.settings import Settings


def _model_dir(settings: Settings, model_name: str) -> Path:
    directory = settings.repository / validate_model_name(model_name)
    if not directory.is_dir() or directory.is_symlink():
        raise ModelNotFound(model_name)
    return directory


class ExamplesController(Controller):
    path = "/v2/models"
    opt = requires("infer")
    tags = ["models"]  # noqa: RUF012

    @get(
        "/{model_name:str}/examples",
        sync_to_thread=True,
        summary="Example requests of a model",
        responses=answers(ExampleList, *MODEL),
    )
    def examples(self, model_name: str, settings: Settings) -> dict[str, Any]:
        """Every example request of the model: name, kind (infer / evaluate), description, tensors."""
        directory = _model_dir(settings, model_name)
        cap = settings.max_request_bytes
        return {
            "model_name": model_name,
            "examples": [describe_example(directory, name, cap) for name in example_names(directory)],
        }

    @get(
        "/{model_name:str}/examples/{example:str}",
        sync_to_thread=True,
        summary="One example request",
        responses=answers(InferenceRequest, *MODEL, 413, description="The example: a V2 inference request body."),
    )
    def example(self, model_name: str, example: str, settings: Settings) -> Response[bytes]:
        """One example request body, as stored."""
        directory = _model_dir(settings, model_name)
        body = read_example(directory, example, settings.max_request_bytes)
        return Response(body, media_type="application/json")
