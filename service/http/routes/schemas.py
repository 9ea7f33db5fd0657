"""What the OpenAPI document says the routes take and answer: the bodies, as types.

Handlers return plain dicts and raw bytes (the hot paths encode their own JSON), so Litestar cannot
see their shapes; each route declares them here instead, through ``responses=`` (one schema per
status) and, for bodies read raw from the request, an ``operation_class`` that adds the request
body. Nothing here runs per request: these types only describe.

Every error is ``{"error": "..."}`` with the status its class carries (``service.errors``); a route
lists the statuses it can answer with. Numbers that can be NaN or missing are ``null`` in JSON.
"""

from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)

Scalar = str | float | bool
"""A V2 ``parameters`` value."""


# ---- errors -------------------------------------------------------------------------------------
class Error(TypedDict):
    """Every error the service answers, whatever the route and status."""

    error: str


_ERRORS = {
    400: "Bad request: the message names the parameter, tensor or field and what was expected.",
    401: 'No token, or an unknown one (`WWW-Authenticate: Bearer ... error="invalid_token"`).',
    403: "The token lacks the route's scope, or no configured token grants it.",
    404: "Unknown model, version, tensor, example or route.",
    413: "Body larger than WEIGHTSERVE_MAX_REQUEST_BYTES (also after decompression), or a tensor too large.",
    415: "Unsupported Content-Encoding (gzip, deflate and identity are).",
    500: "The model or the server failed; the message says where.",
    503: "Not ready (starting, loading, draining), or a queue or the in-flight limit is full (`Retry-After`).",
    504: "The request waited longer than WEIGHTSERVE_REQUEST_TIMEOUT_S.",
}


def answers(
    ok: Any, *errors: int, description: str = "OK.", media_type: str = "application/json"
) -> dict[int, ResponseSpec]:
    """A route's responses: ``ok`` (a type) for 200, ``{"error": ...}`` for each status in ``errors``."""
    specs = {
        200: ResponseSpec(data_container=ok, description=description, media_type=media_type, generate_examples=False)
    }
    for status in errors:
        specs[status] = ResponseSpec(data_container=Error, description=_ERRORS[status], generate_examples=False)
    return specs


def answer(status: int, body: Any, description: str) -> dict[int, ResponseSpec]:
    """One more status whose body is not an error (readiness says no with its own body)."""
    return {status: ResponseSpec(data_container=body, description=description, generate_examples=False)}


SCOPED = (401, 403)
"""Every route that declares a scope: refused without a token that grants it when the scope is closed."""
MODEL = (400, 401, 403, 404, 503)
"""A route under ``/v2/models/{m}``: a bad name or version, unknown, not ready or loading."""
BODY = (413, 415, 500, 504)
"""A route that reads a V2 inference body and runs the model."""


# ---- V2 protocol: tensors, metadata, inference ----------------------------------------------------
class TensorMetadata(TypedDict):
    """A tensor of the model's signature; -1 marks a variable dimension (the batch axis among them)."""

    name: str
    datatype: str
    shape: list[int]


class RequestInput(TypedDict):
    """One input tensor. ``data`` (flat or nested, row-major) is absent when the tensor travels as
    binary data after the JSON (``parameters.binary_data_size``)."""

    name: str
    shape: list[int]
    datatype: Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                      "FP16", "FP32", "FP64", "BF16", "BYTES"]  # fmt: skip
    parameters: NotRequired[dict[str, Scalar]]
    data: NotRequired[list[Any]]


class RequestOutput(TypedDict):
    """An output to return; ``parameters.binary_data: true`` sends it as binary data."""

    name: str
    parameters: NotRequired[dict[str, Scalar]]


class InferenceRequest(TypedDict):
    """A V2 inference request (JSON form). ``outputs`` omitted: every output, as JSON."""

    id: NotRequired[str]
    parameters: NotRequired[dict[str, Scalar]]
    inputs: list[RequestInput]
    outputs: NotRequired[list[RequestOutput]]


class ResponseOutput(TypedDict):
    """One output tensor; ``data`` is flat, absent when sent as binary (``parameters.binary_data_size``)."""

    name: str
    datatype: str
    shape: list[int]
    parameters: NotRequired[dict[str, Scalar]]
    data: NotRequired[list[Any]]


class InferenceResponse(TypedDict):
    """A V2 inference response (JSON form); ``id`` echoes the request's."""

    model_name: str
    model_version: NotRequired[str]
    id: NotRequired[str]
    parameters: NotRequired[dict[str, Scalar]]
    outputs: list[ResponseOutput]


BINARY_EXTENSION = (
    "Also Triton's binary tensor extension: the JSON header (its byte length in the "
    "`Inference-Header-Content-Length` header) followed by the tensors' raw little-endian bytes, for the inputs "
    "that carry `parameters.binary_data_size` in the order they appear; the body may be gzip- or deflate-"
    "compressed (`Content-Encoding`). Content-Type is not read."
)

_BINARY = Schema(type=OpenAPIType.STRING, format=None, content_media_type="application/octet-stream")


def _body(component: str, description: str) -> RequestBody:
    return RequestBody(
        required=True,
        description=description,
        content={
            "application/json": OpenAPIMediaType(schema=Reference(ref=f"#/components/schemas/{component}")),
            "application/octet-stream": OpenAPIMediaType(schema=_BINARY),
        },
    )


@dataclass
class InferOperation(Operation):
    """``…/infer``: a V2 inference request in; JSON, or JSON plus binary outputs, out."""

    def __post_init__(self) -> None:
        self.request_body = _body("InferenceRequest", f"A V2 inference request. {BINARY_EXTENSION}")
        _also(
            self,
            "application/octet-stream",
            "With binary outputs: the JSON header, then each binary output's bytes in the order of `outputs` "
            "(`Inference-Header-Content-Length` gives the header's length).",
        )


@dataclass
class ActivationsOperation(Operation):
    """``…/activations``: a V2 inference body in; JSON, plus binary tensors for V2 ``outputs`` asked as binary."""

    def __post_init__(self) -> None:
        self.request_body = _body(
            "InferenceRequest",
            "A V2 inference request; options in `parameters`: `values` (names of the values to report), `bins`; "
            f"the V2 `outputs` list returns those intermediate values as raw tensors. {BINARY_EXTENSION}",
        )
        _also(self, "application/octet-stream", "With binary outputs: the JSON header, then their bytes, as `infer`.")


@dataclass
class EvaluateOperation(Operation):
    """``…/evaluate``: a V2 inference body whose last input is ``targets``; JSON out."""

    def __post_init__(self) -> None:
        self.request_body = _body(
            "InferenceRequest",
            "A V2 inference request whose last input is named `targets`, shaped like the scored output (class "
            f"indices for a classifier); `parameters.output` picks the output. {BINARY_EXTENSION}",
        )


@dataclass
class ExplainOperation(Operation):
    """``…/explain``: a V2 inference body in; JSON, or a PNG with ``Accept: image/png``."""

    def __post_init__(self) -> None:
        self.request_body = _body(
            "InferenceRequest",
            "A V2 inference request for an image model (`[N, C, H, W]`); options in `parameters`: `method` "
            f"(cam, grad-cam, occlusion), `target`, `output`, `window`, `stride`, `baseline`. {BINARY_EXTENSION}",
        )
        _also(self, "image/png", "With `Accept: image/png`: the first sample's heat map over its input.")


def _also(operation: Operation, media_type: str, description: str) -> None:
    """A second form of the 200 answer (Litestar declares one media type per status)."""
    ok = (operation.responses or {}).get("200")
    if isinstance(ok, OpenAPIResponse) and ok.content is not None:
        ok.content[media_type] = OpenAPIMediaType(schema=_BINARY)
        ok.description = f"{ok.description} {description}"


def _json_body(properties: dict[str, Schema], description: str) -> RequestBody:
    schema = Schema(type=OpenAPIType.OBJECT, properties=properties)  # type: ignore[arg-type]
    return RequestBody(required=False, description=description, content={"application/json": OpenAPIMediaType(schema)})


@dataclass
class IndexOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _json_body(
            {"ready": Schema(type=OpenAPIType.BOOLEAN, description="only the ready versions (default false)")},
            "Optional; an empty body is `{}` (tritonclient sends none).",
        )


@dataclass
class LoadOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _json_body(
            {
                "parameters": Schema(
                    type=OpenAPIType.OBJECT,
                    description="Triton's load parameters; `unload_dependents` is accepted, an override `config` "
                    "or `file:` uploads are refused (400)",
                )
            },
            "Optional; an empty body is `{}`.",
        )


# ---- server --------------------------------------------------------------------------------------
class Live(TypedDict):
    live: bool


class CrashLooping(TypedDict):
    slot: int
    failures: int
    next_start_in_s: float


class Workers(TypedDict):
    """The server's worker processes: configured, ready, restarts so far, those dying in a loop."""

    configured: int
    ready: int
    restarts: int
    crash_looping: list[CrashLooping]


class Ready(TypedDict):
    """200 when ready; 400 (same body, ``ready: false``) while starting or draining."""

    ready: bool
    workers: Workers


class ServerMetadata(TypedDict):
    name: str
    version: str
    extensions: list[str]


# ---- models --------------------------------------------------------------------------------------
class ModelMetadata(TypedDict):
    """``parameters.execution_providers``: the providers in use, comma-separated; ``warnings`` when the
    version serves with a caveat (no warm-up input ran)."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, str]


class ModelReady(TypedDict):
    """200 when ready; 400 with ``ready: false`` when not (loading, unloaded, draining)."""

    name: str
    ready: bool


NotReadyOrError: Any = ModelReady | Error
"""400 of model readiness: ``ready: false`` (loading, unloaded, draining), or an error (a bad version)."""


class ConfigTensor(TypedDict):
    name: str
    data_type: str
    dims: list[int]


class ModelConfig(TypedDict):
    """Triton's ModelConfig (JSON form). ``dims`` leave out the batch axis when ``max_batch_size`` > 0;
    ``dynamic_batching`` is there when the dynamic batcher runs this version."""

    name: str
    platform: str
    backend: str
    version_policy: dict[str, Any]
    max_batch_size: int
    input: list[ConfigTensor]
    output: list[ConfigTensor]
    instance_group: list[dict[str, Any]]
    parameters: dict[str, dict[str, str]]
    dynamic_batching: NotRequired[dict[str, Any]]


class Duration(TypedDict):
    count: int
    ns: int


class BatchStat(TypedDict):
    batch_size: int
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


class ModelStat(TypedDict):
    """Triton's statistics for one version, summed over every worker process."""

    name: str
    version: str
    last_inference: int
    inference_count: int
    execution_count: int
    inference_stats: dict[str, Duration]
    batch_stats: list[BatchStat]


class ModelStats(TypedDict):
    model_stats: list[ModelStat]


# ---- examples -------------------------------------------------------------------------------------
class ExampleEntry(TypedDict):
    """One example request: ``kind`` ``infer`` or ``evaluate`` (its inputs end with ``targets``);
    ``kind: null`` and ``error`` when the file is not a V2 inference request."""

    name: str
    kind: Literal["infer", "evaluate"] | None
    description: NotRequired[str | None]
    inputs: NotRequired[list[TensorMetadata]]
    targets: NotRequired[TensorMetadata | None]
    error: NotRequired[str]


class ExampleList(TypedDict):
    model_name: str
    examples: list[ExampleEntry]


# ---- repository -----------------------------------------------------------------------------------
class IndexEntry(TypedDict):
    """A version's state (READY, LOADING, UNLOADING, UNAVAILABLE) and why, when it is not served."""

    name: str
    version: NotRequired[str]
    state: Literal["READY", "LOADING", "UNLOADING", "UNAVAILABLE"]
    reason: str


class ModelState(TypedDict):
    name: str
    state: Literal["READY", "UNAVAILABLE"]


# ---- weights --------------------------------------------------------------------------------------
class AnalysisProgress(TypedDict):
    """A version's spectral analysis job: matrices done / running / queued / failed of the total, work in
    multiply-adds, timing (``eta_s`` from the rate measured on this machine)."""

    id: str
    state: str
    layers: dict[str, int]
    work: dict[str, Any]
    progress: float | None
    started_at: float | None
    finished_at: float | None
    elapsed_s: float | None
    eta_s: float | None
    rate_work_per_s: float | None


class AnalysisSummary(AnalysisProgress):
    url: str


class LayerTensor(TypedDict):
    id: str
    role: str
    name: str


class LayerEntry(TypedDict):
    """A compute node that consumes parameter tensors in weight slots; ``spectral`` is its weight's."""

    id: str
    op_type: str
    node: str
    place: str
    module_path: str
    attributes: dict[str, Any]
    num_params: int
    tensors: list[LayerTensor]
    spectral: dict[str, Any] | None
    analysis: str | None


class TensorEntry(TypedDict):
    """A parameter tensor (``kind`` ``effective``: in the ONNX graph; ``trained``: the sidecar's state_dict)
    with its summary statistics (``stats``) and spectral metrics (``spectral``, 2-D / conv weights)."""

    kind: str
    id: str
    name: NotRequired[str]
    shape: list[int]
    bytes: int
    storage_dtype: str
    sha256: str
    stats: dict[str, Any]
    spectral: dict[str, Any] | None


class WeightsReport(TypedDict):
    """Layers, tensors with statistics and spectral metrics, a model summary, the analysis job's state, and
    the trained tensors (``null`` without ``weights.safetensors``)."""

    model: str
    version: str | None
    opset: Any
    producer: dict[str, Any]
    ww_compat: dict[str, Any]
    summary: dict[str, Any]
    analysis: AnalysisSummary
    layers: list[LayerEntry]
    tensors: list[TensorEntry]
    trained: list[TensorEntry] | None


class AnalysisMatrix(TypedDict):
    tensors: list[dict[str, str]]
    layers: list[str]
    state: str
    work: float
    seconds: float | None
    computed_here: bool
    spectral: NotRequired[dict[str, Any] | None]


class AnalysisJob(AnalysisProgress):
    """The job resource: every matrix's state (and metrics once done), and this process's cache events."""

    model: str
    version: str | None
    matrices: list[AnalysisMatrix]
    cache: dict[str, Any]


class TensorReport(TypedDict):
    """One tensor in full: statistics with quantiles, histogram (``bins``, ``range``, ``edges_from``),
    per-channel figures, quantization readiness, spectral metrics with eigenvalues."""

    model: str
    version: str
    kind: str
    id: str
    shape: list[int]
    bytes: int
    storage_dtype: str
    sha256: str
    stats: dict[str, Any]
    spectral: dict[str, Any] | None


class WeightsDiff(TypedDict):
    """What changed between two versions: a verdict with its evidence, per layer and per tensor (ONNX
    tensors; ``trained``: the state_dicts), and both versions' analysis state."""

    model: str
    base: str
    target: str
    verdict: str
    evidence: dict[str, Any]
    architecture: dict[str, Any]
    only_in_base: list[Any]
    only_in_target: list[Any]
    layers: list[dict[str, Any]]
    tensors: list[dict[str, Any]]
    trained: NotRequired[dict[str, Any] | None]
    analysis: NotRequired[dict[str, Any]]


# ---- inside the network ---------------------------------------------------------------------------
class ActivationValue(TypedDict):
    """Statistics of one intermediate value over the batch."""

    name: str
    op_type: str
    kind: str
    shape: list[int]
    numel: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    zero_fraction: float | None
    histogram: dict[str, Any] | None
    batch_axis: int | None
    channel_axis: int | None
    per_channel_mean: list[float | None] | None
    never_active_channels: list[int] | None
    never_active_fraction: float | None


class Activations(TypedDict):
    """Per-value statistics; values inside control-flow bodies are listed in ``not_inspectable``; the V2
    ``outputs`` of the request come back as raw tensors in ``outputs``."""

    model_name: str
    model_version: str
    id: NotRequired[str]
    batch_size: int
    values: list[ActivationValue]
    not_inspectable: list[dict[str, Any]]
    outputs: NotRequired[list[ResponseOutput]]


class Explanation(TypedDict):
    """Heat maps in [0, 1] at input size, per sample, with the method, the scored output, its head's ops and
    the feature map they were computed from."""

    model_name: str
    model_version: str
    id: NotRequired[str]
    method: Literal["cam", "grad-cam", "occlusion"]
    scores_output: str
    targets: list[int]
    predicted: list[int]
    scores: list[list[float | None]]
    heatmap_shape: list[int]
    heatmaps: list[Any]
    labels: NotRequired[list[str] | None]
    feature_map: NotRequired[dict[str, Any] | None]
    head: NotRequired[list[str] | None]


class Evaluation(TypedDict):
    """Task metrics over the samples: accuracy, cross-entropy, confusion matrix (classification); MAE, RMSE,
    R² (regression); MAE, PSNR, SSIM (image to image)."""

    model_name: str
    model_version: str
    id: NotRequired[str]
    output: str
    task: str
    samples: int
    accuracy: NotRequired[float | None]
    cross_entropy: NotRequired[float | None]
    confusion_matrix: NotRequired[list[list[int]]]
    labels: NotRequired[list[str] | None]
    mae: NotRequired[float | None]
    rmse: NotRequired[float | None]
    r2: NotRequired[float | None]
    per_target: NotRequired[list[dict[str, Any]]]
    data_range: NotRequired[float | None]
    psnr: NotRequired[float | None]
    ssim: NotRequired[float | None]
    ssim_window: NotRequired[int]
