"""The app's inspection desk: inspection sessions built on first use and kept in a small LRU, and the
three request flows (activations, explain, evaluate) from V2 body to response.

One `Inspector` belongs to one app; nothing here is module-level state. A model nobody inspects
never gets an inspection session.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import Mapping
from functools import partial
from typing import Any

import anyio.to_thread
import numpy as np

from service.errors import InvalidInput, InvalidRequest
from service.inspection.activations import DEFAULT_BINS, MAX_BINS, value_stats
from service.inspection.evaluation import classification_metrics, image_metrics, regression_metrics
from service.inspection.explain import ExplainOptions, Explanation, explain
from service.inspection.render import heatmap_png
from service.inspection.session import InspectionSession
from service.protocol.datatypes import NUMPY
from service.protocol.decode import decode_inputs
from service.protocol.encode import EncodedResponse, encode_response
from service.protocol.request import InferRequest, parse_request
from service.protocol.signature import TensorSpec, request_rows
from service.serving.loaded_version import LoadedVersion
from service.settings import InspectionSettings

_Key = tuple[str, int, tuple[int, int]]


class Inspector:
    def __init__(self, settings: InspectionSettings) -> None:
        self.settings = settings
        self._sessions: OrderedDict[_Key, InspectionSession] = OrderedDict()
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(self.settings.concurrency)

    def cached(self) -> list[tuple[str, int]]:
        """(model, version) of the inspection sessions built so far, least recently used first."""
        return [(name, version) for name, version, _ in self._sessions]

    async def session(self, loaded: LoadedVersion) -> InspectionSession:
        """The version's inspection session, built (off the event loop) on first use."""
        key: _Key = (loaded.name, loaded.version, loaded.fingerprint)
        async with self._lock:
            found = self._sessions.get(key)
            if found is not None:
                self._sessions.move_to_end(key)
                return found
            build = partial(
                InspectionSession, loaded.spec.model_path, threads=self.settings.threads, label=loaded.model.label
            )
            session = await anyio.to_thread.run_sync(build)
            # A swapped version (same name and number, new files) leaves its old session behind.
            for stale in [k for k in self._sessions if k[:2] == key[:2]]:
                del self._sessions[stale]
            self._sessions[key] = session
            while len(self._sessions) > self.settings.sessions:
                self._sessions.popitem(last=False)
            return session

    # ------------------------------------------------------------------------------ activations

    async def activations(
        self, loaded: LoadedVersion, body: bytes, headers: Mapping[str, str], max_bytes: int
    ) -> EncodedResponse:
        request, feeds = _decode(loaded, body, headers, max_bytes)
        rows = request_rows(loaded.model.inputs, feeds)
        session = await self.session(loaded)
        bins = _bins(request.parameters)
        watched = {v.name: v for v in session.watched}
        unreachable = {v.name: v for v in session.unreachable}
        names, skipped = _chosen_values(request.parameters, watched, unreachable)
        raw = _raw_outputs(request, session, unreachable)
        skipped += [name for name, _ in raw if name in unreachable and name not in skipped]
        raw = [(name, binary) for name, binary in raw if name not in unreachable]
        wanted = list(dict.fromkeys([*names, *(name for name, _ in raw)]))
        session.check_budget(wanted, feeds, self.settings.max_bytes)

        def work() -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
            values = session.run(feeds, wanted, self.settings.max_bytes)
            blocks = [
                {"name": n, "op_type": watched[n].op_type, "node": watched[n].node, "kind": watched[n].kind}
                | value_stats(values[n], bins, session.value_batch_axis(n))
                for n in names
            ]
            return blocks, values

        async with self._slots:
            blocks, values = await anyio.to_thread.run_sync(work)
        fields: dict[str, Any] = {
            "batch_size": rows,
            "values": blocks,
            "not_inspectable": [unreachable[name].as_json() for name in skipped],
        }
        outputs = [(name, values[name], binary) for name, binary in raw]
        return _answer(loaded, request, headers, fields, outputs or None)

    # ---------------------------------------------------------------------------------- explain

    async def explain(
        self, loaded: LoadedVersion, body: bytes, headers: Mapping[str, str], max_bytes: int
    ) -> EncodedResponse:
        request, feeds = _decode(loaded, body, headers, max_bytes)
        if request_rows(loaded.model.inputs, feeds) == 0:
            raise InvalidInput("explain needs at least one image; the request has none (a batch of 0)")
        options = ExplainOptions.from_parameters(request.parameters)
        session = await self.session(loaded)
        labels = _task(loaded).get("labels")
        run = partial(
            explain,
            session,
            feeds,
            options,
            labels=labels if isinstance(labels, list) else None,
            cap_bytes=self.settings.max_bytes,
            max_windows=self.settings.max_occlusion_windows,
        )
        async with self._slots:
            result: Explanation = await anyio.to_thread.run_sync(run)
        if "image/png" in headers.get("accept", ""):
            assert session.image is not None
            images = feeds[session.image.name]
            png = await anyio.to_thread.run_sync(
                partial(heatmap_png, images, result.heatmaps, self.settings.png_size)
            )
            return EncodedResponse(png, {}, "image/png")
        return _answer(loaded, request, headers, _explanation_fields(result, labels))

    # --------------------------------------------------------------------------------- evaluate

    async def evaluate(
        self, loaded: LoadedVersion, body: bytes, headers: Mapping[str, str], max_bytes: int
    ) -> EncodedResponse:
        request = parse_request(body, headers, max_bytes)
        targets_name = str(request.parameters.get("targets", "targets"))
        given = [t for t in request.inputs if t.name == targets_name]
        if len(given) != 1:
            raise InvalidRequest(f"evaluate needs the targets as one input tensor named '{targets_name}'")
        target_tensor = given[0]
        if target_tensor.datatype == "BYTES":
            raise InvalidInput("targets must be numbers (class indices or values), not BYTES")
        model_request = dataclasses.replace(
            request, inputs=[t for t in request.inputs if t is not target_tensor]
        )
        feeds = decode_inputs(model_request, loaded.model.inputs, loaded.name, max_bytes)
        target_spec = TensorSpec(
            targets_name,
            target_tensor.datatype,
            (-1,) * len(target_tensor.shape),
            NUMPY[target_tensor.datatype],
        )
        targets = decode_inputs(
            dataclasses.replace(request, inputs=[target_tensor]), [target_spec], loaded.name, max_bytes
        )[targets_name]
        output = str(request.parameters.get("output", loaded.model.outputs[0].name))
        if output not in loaded.model.output_names:
            raise InvalidRequest(
                f"unknown output '{output}'; the model's outputs are {list(loaded.model.output_names)}"
            )
        rows = request_rows(loaded.model.inputs, feeds)
        if rows == 0:
            raise InvalidInput("evaluate needs at least one sample; the request has none (a batch of 0)")
        outcome = await loaded.infer(feeds, rows)
        spec = next(s for s in loaded.model.outputs if s.name == output)
        predictions, targets = _samples_first(outcome.outputs[output], targets, spec.batch_axis)
        metrics = await anyio.to_thread.run_sync(partial(_metrics, _task(loaded), predictions, targets))
        return _answer(loaded, request, headers, {"output": output} | metrics)


def _answer(
    loaded: LoadedVersion,
    request: InferRequest,
    headers: Mapping[str, str],
    fields: dict[str, Any],
    outputs: list[tuple[str, np.ndarray, bool]] | None = None,
) -> EncodedResponse:
    """A V2 response document for this version and request, carrying the endpoint's own fields."""
    return encode_response(
        model_name=loaded.name,
        model_version=str(loaded.version),
        request_id=request.id,
        outputs=outputs,
        accept_encoding=headers.get("accept-encoding"),
        fields=fields,
    )


def _decode(
    loaded: LoadedVersion, body: bytes, headers: Mapping[str, str], max_bytes: int
) -> tuple[InferRequest, dict[str, np.ndarray]]:
    request = parse_request(body, headers, max_bytes)
    return request, decode_inputs(request, loaded.model.inputs, loaded.name, max_bytes)


def _samples_first(
    outputs: np.ndarray, targets: np.ndarray, axis: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Outputs (and targets given in the output's layout) with the samples on axis 0, as the metrics
    count them: a time-major [T, batch, ...] output is one sample per batch row, not per step."""
    if axis is None or axis == 0 or axis >= outputs.ndim:
        return outputs, targets
    moved = np.moveaxis(outputs, axis, 0)
    return moved, np.moveaxis(targets, axis, 0) if targets.shape == outputs.shape else targets


def _bins(params: Mapping[str, Any]) -> int:
    value = params.get("bins", DEFAULT_BINS)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BINS:
        raise InvalidRequest(f"parameter 'bins' must be an integer between 1 and {MAX_BINS}")
    return value


def _chosen_values(
    params: Mapping[str, Any], watched: Mapping[str, Any], unreachable: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """(watched values to report, values inside subgraphs to list as not inspectable), from the
    comma-separated parameter `values`, or all of them."""
    if "values" not in params:
        return list(watched), list(unreachable)
    names = [name.strip() for name in str(params["values"]).split(",") if name.strip()]
    unknown = [name for name in names if name not in watched and name not in unreachable]
    if unknown:
        raise InvalidRequest(
            f"unknown intermediate value(s) {unknown}; this model's values are {list(watched)}"
        )
    return [n for n in names if n in watched], [n for n in names if n in unreachable]


def _raw_outputs(
    request: InferRequest, session: InspectionSession, unreachable: Mapping[str, Any]
) -> list[tuple[str, bool]]:
    """Values whose raw tensors the request asks for through the V2 `outputs` list."""
    if not request.outputs:
        return []
    chosen = []
    for output in request.outputs:
        if output.name not in session.available and output.name not in unreachable:
            raise InvalidRequest(
                f"unknown intermediate value '{output.name}'; ask for one of {sorted(session.available)}"
            )
        binary = request.binary_output_default if output.binary is None else output.binary
        chosen.append((output.name, binary))
    return chosen


def _task(loaded: LoadedVersion) -> dict[str, Any]:
    manifest = loaded.spec.manifest or {}
    task = manifest.get("task")
    return task if isinstance(task, dict) else {}


def _metrics(task: Mapping[str, Any], outputs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    kind = task.get("kind")
    if kind == "classification":
        labels = task.get("labels")
        return classification_metrics(outputs, targets, labels if isinstance(labels, list) else None)
    if kind == "regression":
        names = task.get("targets")
        return regression_metrics(outputs, targets, names if isinstance(names, list) else None)
    if kind == "image_to_image":
        data_range = task.get("data_range")
        if isinstance(data_range, bool) or not isinstance(data_range, int | float):
            raise InvalidRequest("the model's manifest gives no task.data_range, which PSNR and SSIM need")
        return image_metrics(outputs, targets, float(data_range))
    raise InvalidRequest(
        "the model's manifest names no task kind (classification, regression or image_to_image) to evaluate"
    )


def _explanation_fields(result: Explanation, labels: object) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "method": result.method,
        "scores_output": result.scores_name,
        "targets": result.targets.tolist(),
        "predicted": result.predicted.tolist(),
        "scores": np.ascontiguousarray(result.scores),
        "heatmap_shape": list(result.heatmaps.shape),
        "heatmaps": np.ascontiguousarray(result.heatmaps),
    }
    if isinstance(labels, list):
        fields["labels"] = labels
    if result.feature_map is not None and result.coarse is not None:
        fields["feature_map"] = {
            "name": result.feature_map,
            "shape": list(result.feature_map_shape or ()),
            "heatmaps": np.ascontiguousarray(result.coarse),
        }
        fields["head"] = list(result.head)
    return fields
