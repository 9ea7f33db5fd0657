"""The one external-data check, shared by the loader and the weights reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from service.errors import ModelLoadError
from service.model_files import external_data, graph_tensors, inside_folder


def _external(name: str, location: str, **extra: str) -> onnx.TensorProto:
    tensor = numpy_helper.from_array(np.zeros((2, 3), np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in {"location": location, **extra}.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("../outside.bin", "relative path inside the version folder"),
        ("/etc/hostname", "relative path inside the version folder"),
        ("sub\\data.bin", "relative path inside the version folder"),
        ("", "relative path inside the version folder"),
        ("linked/data.bin", "symbolic link"),
        ("alias.bin", "symbolic link"),
    ],
)
def test_references_that_leave_the_folder_are_refused(tmp_path: Path, location: str, message: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.bin").write_bytes(bytes(24))
    version = tmp_path / "1"
    version.mkdir()
    (version / "linked").symlink_to(outside)
    (version / "alias.bin").symlink_to(outside / "data.bin")
    with pytest.raises(ModelLoadError, match=message):
        inside_folder(version, location)


def test_external_data_is_checked_against_its_file(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(bytes(48))
    checked = external_data(_external("w", "data.bin", offset="24"), tmp_path)
    assert checked is not None
    assert (checked.path.name, checked.offset, checked.length) == ("data.bin", 24, 24)  # length from the dims
    with pytest.raises(ModelLoadError, match="runs past the end"):
        external_data(_external("w", "data.bin", offset="40"), tmp_path)
    with pytest.raises(ModelLoadError, match="missing"):
        external_data(_external("w", "nope.bin"), tmp_path)
    (tmp_path / "copy.bin").hardlink_to(tmp_path / "data.bin")
    with pytest.raises(ModelLoadError, match="hard link"):
        external_data(_external("w", "data.bin"), tmp_path)


def test_inline_tensors_have_no_external_data(tmp_path: Path) -> None:
    assert external_data(numpy_helper.from_array(np.ones(3, np.float32), "b"), tmp_path) is None


def test_every_tensor_is_found_inside_subgraphs(tmp_path: Path) -> None:
    def branch(value: float, tag: str) -> onnx.GraphProto:
        const = helper.make_node(
            "Constant", [], [f"{tag}_c"], value=numpy_helper.from_array(np.full(2, value, np.float32), f"{tag}_w")
        )
        out = helper.make_tensor_value_info(f"{tag}_c", onnx.TensorProto.FLOAT, [2])
        return helper.make_graph([const], tag, [], [out])

    cond = helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch(1.0, "then"), else_branch=branch(2.0, "else"))
    graph = helper.make_graph([node], "g", [cond], [y], [numpy_helper.from_array(np.ones(1, np.float32), "top")])
    names = [t.name for t in graph_tensors(graph)]
    assert sorted(names) == ["else_w", "then_w", "top"]
