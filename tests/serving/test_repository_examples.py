"""The repository's examples folder: known to the scan (never a version, no log line), and read safely."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from service.errors import InvalidRequest, NotFound
from service.serving.repository import describe_example, example_names, read_example, scan, scan_model
from tests.serving.onnx_models import write_version

CAP = 1 << 20


def _request(*tensors: tuple[str, list[int], str], description: str | None = None) -> str:
    body: dict[str, object] = {
        "inputs": [{"name": n, "shape": s, "datatype": d, "data": [0] * max(1, _size(s))} for n, s, d in tensors]
    }
    if description is not None:
        body["parameters"] = {"description": description}
    return json.dumps(body)


def _size(shape: list[int]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    write_version(tmp_path / "repo", "m", 1)
    folder = tmp_path / "repo" / "m" / "examples"
    folder.mkdir()
    (folder / "one.json").write_text(_request(("x", [1, 4], "FP32"), description="one row"))
    (folder / "labelled.json").write_text(_request(("x", [2, 4], "FP32"), ("targets", [2, 4], "FP32")))
    (folder / "broken.json").write_text("{not json")
    (folder / ".staging-abc.json").write_text(_request(("x", [1, 4], "FP32")))
    (folder / "notes.txt").write_text("not a request")
    (folder / "bad name.json").write_text(_request(("x", [1, 4], "FP32")))
    (folder / "nested.json").mkdir()
    outside = tmp_path / "secret.json"
    outside.write_text(_request(("x", [1, 4], "FP32")))
    (folder / "linked.json").symlink_to(outside)
    return tmp_path / "repo" / "m"


def test_the_examples_folder_is_never_a_version_and_never_logged(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (model_dir / "drafts").mkdir()
    with caplog.at_level(logging.INFO, logger="service.serving.repository"):
        spec = scan_model(model_dir)
        scan(model_dir.parent)
    assert [v.version for v in spec.versions] == [1]
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert skipped
    assert all("drafts" in line for line in skipped)


def test_only_regular_json_files_with_valid_names_are_examples(model_dir: Path) -> None:
    assert example_names(model_dir) == ["broken", "labelled", "one"]
    assert example_names(model_dir.parent / "absent") == []


def test_an_example_is_described_by_kind_description_and_tensors(model_dir: Path) -> None:
    assert describe_example(model_dir, "one", CAP) == {
        "name": "one",
        "kind": "infer",
        "description": "one row",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4]}],
        "targets": None,
    }
    labelled = describe_example(model_dir, "labelled", CAP)
    assert (labelled["kind"], labelled["description"]) == ("evaluate", None)
    assert labelled["targets"] == {"name": "targets", "datatype": "FP32", "shape": [2, 4]}
    broken = describe_example(model_dir, "broken", CAP)
    assert broken["kind"] is None
    assert "malformed JSON" in broken["error"]


def test_reading_an_example_returns_its_bytes(model_dir: Path) -> None:
    assert read_example(model_dir, "one", CAP) == (model_dir / "examples" / "one.json").read_bytes()
    with pytest.raises(InvalidRequest, match="larger than the 10-byte request cap"):
        read_example(model_dir, "one", 10)


@pytest.mark.parametrize("name", ["../1/model", "..", "a/b", "", ".staging-abc", "bad name"])
def test_names_that_could_leave_the_folder_are_invalid(model_dir: Path, name: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid example name"):
        read_example(model_dir, name, CAP)


@pytest.mark.parametrize("name", ["absent", "linked", "nested", "notes"])
def test_unknown_examples_and_links_are_not_found(model_dir: Path, name: str) -> None:
    with pytest.raises(NotFound, match=f"model 'm' has no example '{name}'"):
        read_example(model_dir, name, CAP)
