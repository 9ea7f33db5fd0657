"""The ``weights`` extension: layers, tensor statistics, raw values, version diffs and the spectral
analysis job over HTTP.

Every path exists with and without ``/versions/{v}``; without one the highest ready version answers.
A version that is on disk but not served (e.g. outside the version policy) can still be inspected.
All work runs in the weight store's worker thread, never on the event loop; spectral analyses of
anything but tiny matrices run in the background (``GET .../weights/analysis`` watches them).
Access scopes: ``inspect`` for all of these but ``.../values`` (raw weights), which needs ``export``.
"""

from typing import Any

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.params import Parameter

from service.errors import ModelNotFound, ModelNotReady
from service.http.auth import requires
from service.http.routes.schemas import MODEL, AnalysisJob, TensorReport, WeightsDiff, WeightsReport, answers
from service.serving.registry import ModelRegistry
from service.serving.repository import VersionSpec, parse_version, scan_model, validate_model_name
from service.settings import Settings
from service.weights.diff import diff_versions
from service.weights.report import analysis_report, model_report, tensor_report, values_npy
from service.weights.store import WeightStore
from service.weights.tensor_stats import DEFAULT_BINS, check_histogram_request
from service.weights.version import VersionWeights

_M = "/{model_name:str}"
_V = "/{model_name:str}/versions/{model_version:str}"


def provide_weight_store(state: State) -> WeightStore:
    store: WeightStore = state.weights
    return store


def _version_number(text: str | None) -> int | None:
    if text is None:
        return None
    return parse_version(text[1:] if text[:1] in ("v", "V") else text)


def resolve_spec(registry: ModelRegistry, settings: Settings, name: str, version: int | None) -> VersionSpec:
    """The served version, or for an explicit version number, the one on disk."""
    try:
        return registry.get(name, version).spec
    except (ModelNotFound, ModelNotReady):
        if version is None:
            raise
        directory = settings.repository / validate_model_name(name)
        if directory.is_dir():
            for spec in scan_model(directory).versions:
                if spec.version == version:
                    return spec
        raise ModelNotFound(name, version) from None


def _open(store: WeightStore, spec: VersionSpec) -> VersionWeights:
    label = f"model '{spec.name}' version {spec.version}"
    return store.open(label, spec.model_path, spec.weights_path, spec.manifest, spec.content_digest)


def _model_body(store: WeightStore, spec: VersionSpec) -> dict[str, Any]:
    return model_report(store, _open(store, spec), spec.name, spec.version)


def _tensor_body(
    store: WeightStore, spec: VersionSpec, tensor_id: str, bins: int, range_name: str, other: VersionSpec | None
) -> dict[str, Any]:
    version = _open(store, spec)
    version.tensor(tensor_id)  # an unknown id is a 404 before anything else is read
    edges_from = _open(store, other) if other is not None else None
    body = tensor_report(store, version, tensor_id, bins, range_name, edges_from)
    return {"model": spec.name, "version": str(spec.version)} | body


def _values_body(store: WeightStore, spec: VersionSpec, tensor_id: str) -> bytes:
    return values_npy(store, _open(store, spec), tensor_id)


def _analysis_body(store: WeightStore, spec: VersionSpec) -> dict[str, Any]:
    return analysis_report(store, _open(store, spec), spec.name, spec.version)


def _diff_body(store: WeightStore, base: VersionSpec, target: VersionSpec) -> dict[str, Any]:
    return diff_versions(store, _open(store, base), _open(store, target), base.name, (base.version, target.version))


class WeightsController(Controller):
    path = "/v2/models"
    opt = requires("inspect")
    tags = ["weights"]  # noqa: RUF012

    @get([_M + "/weights", _V + "/weights"], summary="Layers and tensors", responses=answers(WeightsReport, *MODEL))
    async def weights(
        self,
        model_name: str,
        registry: ModelRegistry,
        settings: Settings,
        weights: WeightStore,
        model_version: str | None = None,
    ) -> dict[str, Any]:
        spec = resolve_spec(registry, settings, model_name, _version_number(model_version))
        return await weights.call(_model_body, weights, spec)

    @get(
        [_M + "/weights/analysis", _V + "/weights/analysis"],
        summary="Spectral analysis job",
        responses=answers(AnalysisJob, *MODEL),
    )
    async def analysis(
        self,
        model_name: str,
        registry: ModelRegistry,
        settings: Settings,
        weights: WeightStore,
        model_version: str | None = None,
    ) -> dict[str, Any]:
        """The version's spectral analysis job: started (or joined) by this request, its progress
        (matrices done / running / queued, work done / total, elapsed, time left) and each matrix's
        state; the same answer from every worker process."""
        spec = resolve_spec(registry, settings, model_name, _version_number(model_version))
        return await weights.call(_analysis_body, weights, spec)

    @get(_M + "/weights/diff", summary="Diff of two versions", responses=answers(WeightsDiff, *MODEL))
    async def diff(
        self,
        model_name: str,
        registry: ModelRegistry,
        settings: Settings,
        weights: WeightStore,
        base: str,
        target: str,
    ) -> dict[str, Any]:
        base_spec = resolve_spec(registry, settings, model_name, _version_number(base))
        target_spec = resolve_spec(registry, settings, model_name, _version_number(target))
        return await weights.call(_diff_body, weights, base_spec, target_spec)

    @get(
        [_M + "/weights/{tensor_id:str}", _V + "/weights/{tensor_id:str}"],
        summary="One tensor in full",
        responses=answers(TensorReport, *MODEL),
    )
    async def tensor(
        self,
        model_name: str,
        tensor_id: str,
        registry: ModelRegistry,
        settings: Settings,
        weights: WeightStore,
        model_version: str | None = None,
        bins: int = DEFAULT_BINS,
        range_name: str = Parameter(query="range", default="minmax"),
        edges_from: str | None = None,
    ) -> dict[str, Any]:
        check_histogram_request(bins, range_name)
        spec = resolve_spec(registry, settings, model_name, _version_number(model_version))
        other = None
        if edges_from is not None:
            other = resolve_spec(registry, settings, model_name, _version_number(edges_from))
        return await weights.call(_tensor_body, weights, spec, tensor_id, bins, range_name, other)

    @get(
        [_M + "/weights/{tensor_id:str}/values", _V + "/weights/{tensor_id:str}/values"],
        opt=requires("export"),
        summary="Raw values (.npy)",
        responses=answers(
            bytes,
            *MODEL,
            413,
            description="The tensor's values as a NumPy .npy file.",
            media_type="application/octet-stream",
        ),
    )
    async def values(
        self,
        model_name: str,
        tensor_id: str,
        registry: ModelRegistry,
        settings: Settings,
        weights: WeightStore,
        model_version: str | None = None,
    ) -> Response[bytes]:
        spec = resolve_spec(registry, settings, model_name, _version_number(model_version))
        body = await weights.call(_values_body, weights, spec, tensor_id)
        filename = f"{spec.name}-{spec.version}-{tensor_id}.npy"
        return Response(
            body,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
