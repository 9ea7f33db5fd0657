"""Per-model V2 endpoints: metadata, readiness, inference, Triton's config and statistics extensions.

Every path exists with and without ``/versions/{v}``; without one the highest ready version answers.
"""

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.status_codes import HTTP_200_OK

from service.errors import ModelNotFound, ModelNotReady
from service.http.auth import requires
from service.http.routes.schemas import (
    BODY,
    MODEL,
    SCOPED,
    InferenceResponse,
    InferOperation,
    ModelConfig,
    ModelMetadata,
    ModelReady,
    ModelStats,
    NotReadyOrError,
    answer,
    answers,
)
from service.protocol.datatypes import triton_config_type
from service.serving import inference
from service.serving.loaded_version import LoadedVersion
from service.serving.registry import ModelRegistry
from service.serving.repository import parse_version
from service.settings import Settings

_V = "/versions/{model_version:str}"


def _version(text: str | None) -> int | None:
    return None if text is None else parse_version(text)


def model_metadata(registry: ModelRegistry, loaded: LoadedVersion) -> dict[str, Any]:
    return {
        "name": loaded.name,
        "versions": [str(v) for v in registry.versions(loaded.name)],
        "platform": "onnxruntime_onnx",
        "inputs": [spec.as_metadata() for spec in loaded.model.inputs],
        "outputs": [spec.as_metadata() for spec in loaded.model.outputs],
        "parameters": {"execution_providers": ",".join(loaded.model.providers)}
        | ({"warnings": loaded.warning} if loaded.warning else {}),
    }


def model_config(loaded: LoadedVersion) -> dict[str, Any]:
    """Triton's ModelConfig in its JSON form; dims leave out the batch axis when max_batch_size > 0."""
    runner = loaded.runner
    max_batch = runner.policy.max_batch_size if runner is not None else 0

    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": spec.name,
                "data_type": triton_config_type(spec.datatype),
                "dims": list(spec.shape[1:] if max_batch > 0 else spec.shape),
            }
            for spec in specs
        ]

    gpu = any(p != "CPUExecutionProvider" for p in loaded.model.providers[:1])
    config: dict[str, Any] = {
        "name": loaded.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": _version_policy(loaded),
        "max_batch_size": max_batch,
        "input": tensors(loaded.model.inputs),
        "output": tensors(loaded.model.outputs),
        "instance_group": [{"name": loaded.name, "kind": "KIND_GPU" if gpu else "KIND_CPU", "count": 1}],
        "parameters": {
            "execution_providers": {"string_value": ",".join(loaded.model.providers)},
            "requested_execution_providers": {"string_value": ",".join(loaded.model.requested_providers)},
        },
    }
    if loaded.batching_off is not None:
        config["parameters"]["batching_off"] = {"string_value": loaded.batching_off}
    if runner is not None:
        policy = runner.policy
        config["dynamic_batching"] = {
            "preferred_batch_size": list(policy.preferred_batch_sizes),
            "max_queue_delay_microseconds": int(policy.max_queue_delay_s * 1e6),
            "default_queue_policy": {"max_queue_size": policy.max_queue_size},
        }
    return config


def _version_policy(loaded: LoadedVersion) -> dict[str, Any]:
    policy = loaded.config.version_policy
    if policy.policy == "latest":
        return {"latest": {"num_versions": policy.latest}}
    if policy.policy == "specific":
        return {"specific": {"versions": list(policy.versions)}}
    return {"all": {}}


class ModelsController(Controller):
    path = "/v2/models"
    opt = requires("infer")
    tags = ["models"]  # noqa: RUF012

    # Registered before "/{model_name}" in spirit: Litestar matches static segments first.
    @get(
        "/stats", sync_to_thread=False, summary="Statistics of every model", responses=answers(ModelStats, *SCOPED, 503)
    )
    def all_stats(self, registry: ModelRegistry) -> dict[str, Any]:
        return {"model_stats": [registry.statistics(lv) for lv in registry.loaded()]}

    @get(
        ["/{model_name:str}/stats", "/{model_name:str}" + _V + "/stats"],
        sync_to_thread=False,
        summary="Model statistics",
        responses=answers(ModelStats, *MODEL),
    )
    def model_stats(self, model_name: str, registry: ModelRegistry, model_version: str | None = None) -> dict[str, Any]:
        version = _version(model_version)
        chosen = [lv for lv in registry.loaded() if lv.name == model_name]
        if version is not None:
            chosen = [lv for lv in chosen if lv.version == version]
        if not chosen:
            registry.get(model_name, version)  # raises the right not-found / not-ready error
            raise ModelNotFound(model_name, version)
        return {"model_stats": [registry.statistics(lv) for lv in chosen]}

    @get(
        ["/{model_name:str}", "/{model_name:str}" + _V],
        sync_to_thread=False,
        summary="Model metadata",
        responses=answers(ModelMetadata, *MODEL),
    )
    def metadata(self, model_name: str, registry: ModelRegistry, model_version: str | None = None) -> dict[str, Any]:
        return model_metadata(registry, registry.get(model_name, _version(model_version)))

    @get(
        ["/{model_name:str}/ready", "/{model_name:str}" + _V + "/ready"],
        sync_to_thread=False,
        summary="Model ready",
        responses=answers(ModelReady, *MODEL)
        | answer(400, NotReadyOrError, "Not ready (loading, unloaded, draining), or a bad version."),
    )
    def ready(
        self, model_name: str, registry: ModelRegistry, model_version: str | None = None
    ) -> Response[dict[str, Any]]:
        version = _version(model_version)
        try:
            registry.get(model_name, version)
        except ModelNotReady:
            return Response({"name": model_name, "ready": False}, status_code=400)
        # tritonclient's is_model_ready reads only the status: a draining server says no with it.
        ready = registry.ready
        return Response({"name": model_name, "ready": ready}, status_code=200 if ready else 400)

    @get(
        ["/{model_name:str}/config", "/{model_name:str}" + _V + "/config"],
        sync_to_thread=False,
        summary="Model configuration (Triton)",
        responses=answers(ModelConfig, *MODEL),
    )
    def config(self, model_name: str, registry: ModelRegistry, model_version: str | None = None) -> dict[str, Any]:
        return model_config(registry.get(model_name, _version(model_version)))

    @post(
        ["/{model_name:str}/infer", "/{model_name:str}" + _V + "/infer"],
        status_code=HTTP_200_OK,
        summary="Inference",
        responses=answers(InferenceResponse, *MODEL, *BODY),
        operation_class=InferOperation,
    )
    async def infer(
        self,
        model_name: str,
        request: Request[Any, Any, Any],
        registry: ModelRegistry,
        settings: Settings,
        model_version: str | None = None,
    ) -> Response[bytes]:
        body = await request.body()
        encoded = await inference.infer(registry, settings, model_name, _version(model_version), body, request.headers)
        return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)
