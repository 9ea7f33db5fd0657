"""A model version's files as the service reads them: the version folder's name, every tensor of a
graph, and external-data references that must stay inside the version folder.

ONNX files are an attack surface. The loader (``serving.model_checks``) and the weights reader
(``weights.stored``) both follow external-data references themselves, so both go through the one
check here rather than trusting onnx or onnxruntime to have made it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

from service.errors import ModelLoadError


def subgraphs(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    """A node's control-flow bodies with the attribute that holds each (``then_branch``, ``body``;
    ``name[i]`` for a list of graphs)."""
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.name, attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            for index, sub in enumerate(attribute.graphs):
                yield f"{attribute.name}[{index}]", sub


def node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    """Tensors stored in a node's attributes (a Constant's value, sparse or dense), subgraphs aside."""
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.TENSOR:
            yield attribute.t
        elif attribute.type == onnx.AttributeProto.SPARSE_TENSOR:
            yield attribute.sparse_tensor.values
            yield attribute.sparse_tensor.indices
        elif attribute.type == onnx.AttributeProto.TENSORS:
            yield from attribute.tensors


def version_number(text: str) -> int | None:
    """The version a folder name or URL segment stands for: a positive integer in ASCII digits (Triton's
    rule; ``str.isdigit`` alone would take ``²`` or Arabic-Indic digits), else None."""
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    value = int(text)
    return value if value >= 1 else None


def graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in a graph: initializers, tensor attributes (Constant nodes), and the same
    inside control-flow subgraphs (If / Loop / Scan bodies, nested), depth first."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from node_tensors(node)
        for _, sub in subgraphs(node):
            yield from graph_tensors(sub)


def model_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of the main graph and of the model-local functions."""
    yield from graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from node_tensors(node)
            for _, sub in subgraphs(node):
                yield from graph_tensors(sub)


def inside_folder(directory: Path, location: str) -> Path:
    """Resolve a relative file reference, refusing anything that leaves ``directory``: absolute paths,
    ``..``, backslashes, and symbolic links anywhere on the way."""
    if not location or os.path.isabs(location) or "\\" in location or ".." in Path(location).parts:
        raise ModelLoadError(f"file reference {location!r} must be a relative path inside the version folder")
    candidate = directory / location
    probe = candidate
    while probe != directory:
        if probe.is_symlink():
            raise ModelLoadError(f"file reference {location!r} goes through a symbolic link")
        probe = probe.parent
    if not candidate.resolve().is_relative_to(directory.resolve()):
        raise ModelLoadError(f"file reference {location!r} escapes the version folder")
    return candidate


@dataclass(frozen=True, slots=True)
class ExternalData:
    """Where a tensor's bytes live outside the protobuf, checked to be inside the version folder."""

    path: Path
    offset: int
    length: int


def external_data(tensor: onnx.TensorProto, directory: Path) -> ExternalData | None:
    """The checked external-data reference of a tensor, or None when its data is inline.

    Refused: a location outside the folder (see `inside_folder`), a missing file, a file with several
    hard links (it could be another folder's file), and an offset or length outside the file.
    """
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    path = inside_folder(directory, location)
    if not path.is_file():
        raise ModelLoadError(f"external data {location!r} of tensor '{tensor.name}' is missing")
    stat = path.stat()
    if stat.st_nlink > 1:
        raise ModelLoadError(f"external data {location!r} is a hard link")
    try:
        offset = int(info.get("offset", "0") or 0)
        length = int(info["length"]) if info.get("length") else _implied_length(tensor, stat.st_size - offset)
    except ValueError:
        raise ModelLoadError(f"external data of tensor '{tensor.name}' has a non-numeric offset or length") from None
    if offset < 0 or length < 0 or offset + length > stat.st_size:
        raise ModelLoadError(
            f"external data of tensor '{tensor.name}' (offset {offset}, length {length}) "
            f"runs past the end of {location!r} ({stat.st_size} bytes)"
        )
    return ExternalData(path, offset, length)


def _implied_length(tensor: onnx.TensorProto, rest_of_file: int) -> int:
    """Without a recorded length the tensor's own size says how many bytes it takes."""
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError):
        return rest_of_file
    count = 1
    for dim in tensor.dims:
        count *= int(dim)
    return count * itemsize
