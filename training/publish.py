"""Publish any `nn.Module` as the next version of a model in a repository: exported, checked, inspectable.

    publish(module, example_inputs, repository, name, input_names=[...], output_names=[...])

exports the module to ONNX (the dynamo exporter, as every built-in model), checks onnxruntime
against torch on the example inputs and on generated batches of other sizes, and only then writes
``<repository>/<name>/<N>/`` with ``model.onnx``, ``weights.safetensors`` (the state_dict) and
``manifest.json`` (provenance, versions, parity, the state_dict -> initializer map), staged in a
temporary folder and renamed into place, so a running server never sees half a version. Example
requests go to ``<repository>/<name>/examples/``. The built-in training tasks publish through here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort
from numpy.typing import NDArray
from safetensors.torch import save_file
from torch import nn

from service.errors import InvalidInput, InvalidRequest
from service.inspection.evaluation import classification_metrics, image_metrics, regression_metrics
from service.protocol.datatypes import FROM_ORT
from service.serving.repository import MANIFEST_FILE, MODEL_FILE, WEIGHTS_FILE, validate_model_name
from training import examples as example_files
from training import export, manifest, parity, store
from training.errors import UsageError
from training.examples import Example
from training.inputs import Inputs, batch_rows, to_array, to_arrays

TASK_KINDS = ("classification", "regression", "image_to_image", "other")

Metrics = Mapping[str, float] | Callable[[list[NDArray[Any]]], Mapping[str, float]]
"""Numbers to record, or a function of onnxruntime's outputs on the example inputs that returns them."""


@dataclass(frozen=True, slots=True)
class PublishedVersion:
    """A version that is now in the repository."""

    name: str
    version: int
    path: Path
    parity: parity.Parity
    manifest: dict[str, Any] = field(repr=False)
    examples: tuple[Path, ...] = ()

    @property
    def metrics(self) -> dict[str, float]:
        found: dict[str, float] = self.manifest["metrics"]
        return found


def publish(
    module: nn.Module,
    example_inputs: Inputs,
    repository: str | os.PathLike[str],
    name: str,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None = None,
    task: str | Mapping[str, Any] | None = None,
    metrics: Metrics | None = None,
    data: Mapping[str, Any] | None = None,
    examples: Mapping[str, Example | Inputs] | None = None,
    finetuned_from: int | None = None,
    opset: int | None = None,
    tolerance: float | None = None,
    split: Mapping[str, Any] | None = None,
    seed: int | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
) -> PublishedVersion:
    """Export `module`, check it, and write it as the next version of model `name` in `repository`.

    example_inputs   what the module's forward takes: an array or tensor, a sequence of them in
                     forward's order, or a mapping by input name. The exporter traces with them and
                     the parity check runs on them (real data makes the best check).
    input_names, output_names   the ONNX (and V2) tensor names, in forward's order.
    dynamic_axes     {tensor name: {axis: dimension name}} (or {name: [axes]}); default: axis 0 of
                     every input and output is one dynamic ``batch`` dimension.
    task             "classification" / "regression" / "image_to_image" / "other", or a mapping
                     with its details: {"kind": "classification", "labels": [...]},
                     {"kind": "regression", "targets": [...]}, {"kind": "image_to_image",
                     "data_range": R}. `/evaluate` computes the metrics of this kind.
    metrics          numbers for the manifest, or a function of onnxruntime's outputs on the
                     example inputs (a list, in output order) that returns them.
    data             provenance notes about the data (the manifest's ``dataset``).
    examples         {name: Example(inputs, targets=None, description=None)} (or just the inputs):
                     written as ``examples/<name>.json`` V2 requests; each is run before anything
                     is written, and an example with targets must fit the task's ``/evaluate``.
    finetuned_from   the version of this model the weights started from.
    opset            ONNX opset (default 20). tolerance: largest absolute difference allowed
                     between onnxruntime and torch on any output value (default 1e-4).
    split, seed, hyperparameters   how the weights were trained, for the manifest.

    Raises UsageError for bad arguments, ExportError when the exporter fails or the graph loses a
    dynamic axis, ParityError when onnxruntime and torch disagree; nothing is written then.
    """
    plan = _plan(
        module, example_inputs, Path(repository), name, input_names, output_names, dynamic_axes, task, metrics,
        {"dataset": data, "split": split, "seed": seed, "hyperparameters": hyperparameters},
        examples, finetuned_from, opset, tolerance,
    )  # fmt: skip
    with _eval_mode(module), store.staging(plan.model_dir) as folder:
        version = max(store.versions(plan.model_dir), default=0) + 1
        onnx_path = folder / MODEL_FILE
        metadata = {"labels": json.dumps(plan.task["labels"])} if plan.task and "labels" in plan.task else {}
        ins, outs = plan.input_names, plan.output_names
        export.export(module, plan.inputs, ins, outs, onnx_path, metadata, plan.axes, plan.opset)
        runner = parity.session(str(onnx_path))
        checked, outputs = parity.check(module, runner, plan.inputs, ins, outs, plan.batched, plan.tolerance)
        measured = _metrics(plan.metrics, outputs)
        bodies = {n: _request_text(n, r, runner, ins, plan.task) for n, r in plan.examples.items()}
        _save_weights(module, folder / WEIGHTS_FILE)
        body = _manifest(plan, version, module, runner, onnx_path, checked, measured)
        (folder / MANIFEST_FILE).write_text(json.dumps(body, indent=2) + "\n")
        directory = store.publish(folder, plan.model_dir, version)
    written = example_files.write(plan.model_dir, bodies) if bodies else []
    return PublishedVersion(name, version, directory, checked, body, tuple(written))


_Request = tuple[list[NDArray[Any]], NDArray[Any] | None, str | None]
"""An example's input arrays, targets and description."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """A publish call with every argument checked: nothing is written before this exists."""

    name: str
    model_dir: Path
    input_names: list[str]
    output_names: list[str]
    inputs: list[NDArray[Any]]
    axes: export.Axes
    batched: bool
    task: dict[str, Any] | None
    metrics: Metrics | None
    provenance: dict[str, Any]
    examples: dict[str, _Request]
    finetuned_from: int | None
    opset: int
    tolerance: float


def _plan(
    module: nn.Module,
    example_inputs: Inputs,
    root: Path,
    name: str,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None,
    task: str | Mapping[str, Any] | None,
    metrics: Metrics | None,
    provenance: dict[str, Any],
    examples: Mapping[str, Example | Inputs] | None,
    finetuned_from: int | None,
    opset: int | None,
    tolerance: float | None,
) -> _Plan:
    ins, outs = _names(input_names, "input_names"), _names(output_names, "output_names")
    if set(ins) & set(outs):
        raise UsageError(f"a name cannot be both an input and an output: {sorted(set(ins) & set(outs))}")
    model_dir = root / _model_name(name)
    store.check_repository(root)
    store.check_model_folder(model_dir)
    if finetuned_from is not None and finetuned_from not in store.versions(model_dir):
        raise UsageError(f"{name} version {finetuned_from} does not exist in {root}")
    _check_module(module)
    arrays = to_arrays(example_inputs, ins, "example_inputs")
    axes = export.normalise_axes(dynamic_axes, ins, outs)
    batched = _shared_batch_axis(ins, axes)
    if batched:
        batch_rows(arrays, "example_inputs")
    task_entry = _task(task)
    _check_json({"task": task_entry, **provenance})
    requests = {example_files.check_name(n): _example(e, ins) for n, e in (examples or {}).items()}
    return _Plan(
        name, model_dir, ins, outs, arrays, axes, batched, task_entry, metrics, provenance, requests,
        finetuned_from, opset or export.OPSET, _tolerance(tolerance),
    )  # fmt: skip


def _manifest(
    plan: _Plan,
    version: int,
    module: nn.Module,
    runner: ort.InferenceSession,
    onnx_path: Path,
    checked: parity.Parity,
    measured: dict[str, float],
) -> dict[str, Any]:
    return {
        "format": manifest.FORMAT,
        "model": plan.name,
        "version": version,
        "created": manifest.now_iso(),
        "task": plan.task,
        "inputs": _signature(runner.get_inputs()),
        "outputs": _signature(runner.get_outputs()),
        **plan.provenance,
        "metrics": measured,
        "finetuned_from": plan.finetuned_from,
        "parity": checked.as_json(),
        "versions": manifest.versions_entry(manifest.model_opset(onnx_path)),
        "files": manifest.files_entry(onnx_path.parent, [MODEL_FILE, WEIGHTS_FILE]),
        "tensors": manifest.tensor_relations(module, onnx_path),
    }


def _tolerance(tolerance: float | None) -> float:
    if tolerance is None:
        return parity.TOLERANCE
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not tolerance >= 0:
        raise UsageError(f"tolerance must be a non-negative number, not {tolerance!r}")
    return float(tolerance)


def _names(names: Sequence[str], what: str) -> list[str]:
    listed = [names] if isinstance(names, str) else list(names)
    if not listed or not all(isinstance(n, str) and n for n in listed):
        raise UsageError(f"{what} must be a non-empty list of non-empty strings")
    if len(set(listed)) != len(listed):
        raise UsageError(f"{what} holds a name twice: {listed}")
    return listed


def _model_name(name: str) -> str:
    try:
        return validate_model_name(name)
    except InvalidRequest as exc:
        raise UsageError(exc.message) from exc


def _check_module(module: nn.Module) -> None:
    if not isinstance(module, nn.Module):
        raise UsageError(f"publish takes a torch.nn.Module, not {type(module).__name__}")
    devices = {t.device.type for t in [*module.parameters(), *module.buffers()]}
    if devices - {"cpu"}:
        raise UsageError(f"the module is on {sorted(devices - {'cpu'})}: move it to the CPU (module.cpu()) first")


def _shared_batch_axis(input_names: Sequence[str], axes: export.Axes) -> bool:
    """Whether axis 0 of every input is one dynamic dimension (then batches of other sizes are checked)."""
    first = {axes.get(n, {}).get(0) for n in input_names}
    return len(first) == 1 and None not in first


def _task(task: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if task is None:
        return None
    entry = {"kind": task} if isinstance(task, str) else dict(task)
    kind = entry.get("kind")
    if kind not in TASK_KINDS:
        raise UsageError(f"task kind must be one of {', '.join(TASK_KINDS)}, not {kind!r}")
    for key in ("labels", "targets"):
        if key in entry and not (isinstance(entry[key], list) and all(isinstance(v, str) for v in entry[key])):
            raise UsageError(f"task {key} must be a list of strings")
    if kind == "image_to_image":
        data_range = entry.get("data_range")
        if isinstance(data_range, bool) or not isinstance(data_range, int | float) or not data_range > 0:
            raise UsageError("an image_to_image task needs data_range, the span of pixel values (e.g. 1.0 or 255)")
    return entry


def _check_json(entries: Mapping[str, Any]) -> None:
    for key, value in entries.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{key} must be JSON-serialisable: {exc}") from exc


def _example(example: Example | Inputs, input_names: Sequence[str]) -> _Request:
    given = example if isinstance(example, Example) else Example(example)
    arrays = to_arrays(given.inputs, input_names, "example inputs")
    targets = None if given.targets is None else to_array(given.targets, "example targets")
    return arrays, targets, given.description


def _request_text(
    name: str,
    request: _Request,
    runner: ort.InferenceSession,
    input_names: Sequence[str],
    task: Mapping[str, Any] | None,
) -> str:
    """The example as a request file, after it ran on the exported model (and, with targets, was
    evaluated as /evaluate will)."""
    arrays, targets, description = request
    try:
        outputs = parity.onnx_outputs(runner, input_names, arrays)
    except Exception as exc:  # onnxruntime raises its own kinds for wrong types and shapes
        raise UsageError(f"example {name!r} does not run on the exported model: {exc}") from exc
    if targets is not None:
        _check_evaluable(name, task, outputs[0], targets)
    return example_files.dumps(example_files.request_body(input_names, arrays, targets, description))


def _check_evaluable(name: str, task: Mapping[str, Any] | None, output: NDArray[Any], targets: NDArray[Any]) -> None:
    kind = (task or {}).get("kind")
    try:
        if kind == "classification":
            classification_metrics(output, targets)
        elif kind == "regression":
            regression_metrics(output, targets)
        elif kind == "image_to_image":
            image_metrics(output, targets, float((task or {})["data_range"]))
        else:
            raise UsageError(
                f"example {name!r} has targets, but only a classification, regression or "
                "image_to_image task can be evaluated"
            )
    except InvalidInput as exc:
        raise UsageError(f"example {name!r}: {exc.message}") from exc


def _metrics(metrics: Metrics | None, outputs: list[NDArray[Any]]) -> dict[str, float]:
    found = metrics(outputs) if callable(metrics) else metrics or {}
    try:
        return {str(k): float(v) for k, v in found.items()}
    except (TypeError, ValueError) as exc:
        raise UsageError(f"metrics must map names to numbers: {exc}") from exc


def _signature(values: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": v.name,
            "datatype": FROM_ORT.get(v.type, v.type),
            "shape": [d if isinstance(d, int) else -1 for d in v.shape],
        }
        for v in values
    ]


def _save_weights(module: nn.Module, path: Path) -> None:
    """The state_dict as safetensors. Tensors that share storage (tied weights) are stored once per
    key, since safetensors refuses shared storage: the file loads back with `load_state_dict`."""
    owners: set[int] = set()
    state = {}
    for key, tensor in module.state_dict().items():
        value = tensor.detach().cpu()
        storage = value.untyped_storage().data_ptr()
        state[key] = value.clone().contiguous() if storage in owners and value.numel() else value.contiguous()
        owners.add(storage)
    save_file(state, str(path))


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Export and check in eval mode; hand the module back in the mode it came in."""
    training = module.training
    try:
        yield
    finally:
        module.train(training)
