"""One onnxruntime session per model version; onnxruntime's errors are translated here and only here."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from service.errors import InferenceFailed, InvalidInput, ModelLoadError
from service.protocol.datatypes import FROM_ORT, NUMPY
from service.protocol.signature import TensorSpec, name_batch_axes
from service.settings import GraphOptimization

__all__ = ["OnnxModel", "SessionOptions", "TensorSpec", "available_providers", "map_load_errors", "map_run_errors"]

log = logging.getLogger(__name__)

_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

# onnxruntime's pybind errors derive from Exception only, so they are named one by one.
# Caller mistakes: a shape or type that the signature allowed but the graph does not, and the feeds
# check onnxruntime's Python layer makes itself (missing or extra inputs: ValueError).
_INPUT_ERRORS: tuple[type[Exception], ...] = (ort_state.InvalidArgument, ort_state.InvalidProtobuf, ValueError)
_LOAD_ERRORS: tuple[type[Exception], ...] = (RuntimeError, ValueError)
_RUN_ERRORS: tuple[type[Exception], ...] = (
    ort_state.Fail,
    ort_state.RuntimeException,
    ort_state.EPFail,
    ort_state.NotImplemented,
    ort_state.ModelLoaded,
    ort_state.NoModel,
    ort_state.NoSuchFile,
    ort_state.EngineError,
    ort_state.InvalidGraph,
)


SPINNING_KEYS = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


@dataclass(frozen=True, slots=True)
class SessionOptions:
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    strict_providers: bool = False
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization: GraphOptimization = "all"
    allow_spinning: bool = False
    """Whether onnxruntime's pool threads spin after a run waiting for the next one. Off: a spinning
    thread burns a core that the event loop (and the other workers) need, and a server's runs do not
    follow each other closely enough to win the wake-up it saves."""


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


@contextlib.contextmanager
def map_run_errors(label: str) -> Iterator[None]:
    """The one translation of onnxruntime's run errors: a caller mistake is InvalidInput (400), a
    failure inside the model is InferenceFailed (500). Every session run in the service goes through it."""
    try:
        yield
    except _INPUT_ERRORS as exc:
        raise InvalidInput(f"model '{label}' rejected the input: {_first_line(exc)}") from exc
    except _RUN_ERRORS as exc:
        raise InferenceFailed(f"model '{label}' failed to run: {_first_line(exc)}") from exc


@contextlib.contextmanager
def map_load_errors(label: str) -> Iterator[None]:
    """The one translation of onnxruntime's errors while building a session: ModelLoadError."""
    try:
        yield
    except _INPUT_ERRORS + _RUN_ERRORS + _LOAD_ERRORS as exc:
        raise ModelLoadError(f"onnxruntime cannot load {label}: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OnnxModel:
    """An onnxruntime session with its V2 signature. ``run`` is safe to call from many threads."""

    def __init__(self, session: ort.InferenceSession, label: str, requested: tuple[str, ...]) -> None:
        self._session = session
        self.label = label
        self.requested_providers = requested
        self.providers: tuple[str, ...] = tuple(session.get_providers())
        self.inputs, self.outputs = signature(session)
        self.output_names = tuple(spec.name for spec in self.outputs)
        # numpy has no bfloat16 that onnxruntime's run() accepts; such models go through OrtValues.
        self._bfloat16 = any(spec.datatype == "BF16" for spec in (*self.inputs, *self.outputs))
        meta = session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map)
        self.producer = f"{meta.producer_name} {meta.version}".strip()
        self.session_config: dict[str, str] = {}
        """The session configuration entries this service sets (spinning), as onnxruntime holds them."""

    @classmethod
    def load(cls, path: Path, options: SessionOptions, label: str) -> OnnxModel:
        """Build the session (blocking: call it in a worker thread)."""
        providers = _resolve_providers(options, label)
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.intra_op_threads
        session_options.inter_op_num_threads = options.inter_op_threads
        session_options.graph_optimization_level = _OPTIMIZATION[options.graph_optimization]
        session_options.log_severity_level = 3
        spinning = "1" if options.allow_spinning else "0"
        for key in SPINNING_KEYS:
            session_options.add_session_config_entry(key, spinning)
        with map_load_errors(label):
            # From a path, never bytes: onnxruntime checks external-data locations against the model dir.
            session = ort.InferenceSession(os.fspath(path), session_options, providers=list(providers))
        model = cls(session, label, providers)
        model.session_config = {key: session_options.get_session_config_entry(key) for key in SPINNING_KEYS}
        if options.strict_providers and model.providers[0] != providers[0]:
            raise ModelLoadError(
                f"{label}: requested provider {providers[0]} is not in use (got {list(model.providers)}); "
                "strict providers refuse to fall back"
            )
        log.info("loaded %s with providers %s", label, list(model.providers))
        return model

    def run_sync(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs else list(self.output_names)
        with map_run_errors(self.label):
            if self._bfloat16:
                results = _run_with_ort_values(self._session, names, feeds)
            else:
                results = self._session.run(names, feeds)
        return dict(zip(names, results, strict=True))

    async def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run off the event loop; onnxruntime releases the GIL while it computes."""
        return await anyio.to_thread.run_sync(self.run_sync, feeds, outputs)



def _run_with_ort_values(
    session: ort.InferenceSession, names: list[str], feeds: dict[str, np.ndarray]
) -> list[np.ndarray]:
    values = {}
    for name, array in feeds.items():
        if array.dtype == NUMPY["BF16"]:
            bits = np.ascontiguousarray(array).view(np.uint16)
            values[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, onnx.TensorProto.BFLOAT16)
        else:
            values[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
    results = []
    for value in session.run_with_ort_values(names, values):
        if value.data_type() == "tensor(bfloat16)":
            raw = ctypes.string_at(value.data_ptr(), value.tensor_size_in_bytes())
            results.append(np.frombuffer(raw, dtype=NUMPY["BF16"]).reshape(value.shape()))
        else:
            results.append(value.numpy())
    return results


def _resolve_providers(options: SessionOptions, label: str) -> tuple[str, ...]:
    available = set(available_providers())
    missing = [name for name in options.providers if name not in available]
    if missing and options.strict_providers:
        raise ModelLoadError(
            f"{label}: execution provider(s) {missing} not available in this onnxruntime build "
            f"(available: {sorted(available)}); strict providers refuse to fall back"
        )
    usable = tuple(name for name in options.providers if name in available)
    if missing:
        log.warning("%s: providers %s unavailable, falling back to %s", label, missing, usable or ["CPU"])
    return usable or ("CPUExecutionProvider",)


def signature(session: ort.InferenceSession) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """A session's inputs and outputs as V2 tensor specs, batch axes placed by their dimension names."""
    inputs = tuple(tensor_spec(arg) for arg in session.get_inputs())
    outputs = tuple(tensor_spec(arg) for arg in session.get_outputs())
    return name_batch_axes(inputs, outputs)


def tensor_spec(arg: Any) -> TensorSpec:
    """One onnxruntime NodeArg as a spec; a type the V2 protocol cannot carry refuses the model."""
    datatype = FROM_ORT.get(arg.type)
    if datatype is None:
        raise ModelLoadError(f"tensor '{arg.name}' has type {arg.type}, which the V2 protocol cannot carry")
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape)
    names = tuple(dim if isinstance(dim, str) and dim else None for dim in arg.shape)
    return TensorSpec(arg.name, datatype, shape, NUMPY[datatype], names)
