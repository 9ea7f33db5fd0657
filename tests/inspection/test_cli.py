from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.cli import main as weightserve
from service.inspection.cli import main

from .conftest import gap_classifier


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    gap_classifier(tmp_path / "cls" / "2" / "model.onnx")
    return tmp_path / "cls"


def test_explain_writes_a_png_for_an_npy_input(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(0, 1, size=(2, 1, 6, 6)).astype(np.float32))
    out = tmp_path / "heat.png"

    code = weightserve(["explain", str(model_dir), "--input", str(tmp_path / "x.npy"), "--out", str(out)])

    assert code == 0
    picture = Image.open(io.BytesIO(out.read_bytes()))
    assert picture.format == "PNG"
    assert picture.size == (2 * 6 * 42 + 4, 2 * 6 * 42 + 4)  # input above, heat map below
    assert "wrote" in capsys.readouterr().out


def test_explain_refuses_clearly(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.ones((1, 6, 6), np.float32))
    out = tmp_path / "heat.png"

    unknown_class = main(
        [str(model_dir), "--input", str(tmp_path / "x.npy"), "--target", "9", "--out", str(out)]
    )
    missing = main([str(tmp_path / "nothing"), "--input", str(tmp_path / "x.npy"), "--out", str(out)])

    assert (unknown_class, missing) == (2, 2)
    assert "unknown class 9" in capsys.readouterr().err
    assert not out.exists()


def test_explain_reads_an_example_request_of_the_model(tmp_path: Path) -> None:
    from .conftest import region_scorer

    model = tmp_path / "digits" / "1" / "model.onnx"
    model.parent.mkdir(parents=True)
    region_scorer(model, np.eye(8))
    examples = tmp_path / "digits" / "examples"
    examples.mkdir()
    images = np.random.default_rng(1).uniform(0, 16, size=(2, 1, 8, 8)).astype(np.float32)
    tensor = {"name": "image", "datatype": "FP32", "shape": [2, 1, 8, 8], "data": images.ravel().tolist()}
    (examples / "two.json").write_text(json.dumps({"inputs": [tensor]}))
    out = tmp_path / "digits.png"

    code = main([str(tmp_path / "digits"), "--example", "two", "--out", str(out)])
    unknown = main([str(tmp_path / "digits"), "--example", "nope", "--out", str(tmp_path / "x.png")])

    assert (code, unknown) == (0, 2)
    assert Image.open(out).size == (2 * 8 * 32 + 4, 2 * 8 * 32 + 4)


def test_explain_the_shipped_digit_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = Path(__file__).resolve().parents[2] / "models"
    out = tmp_path / "heat.png"

    code = weightserve(["explain", str(models / "digits_cnn"), "--example", "digit-3", "--out", str(out)])

    assert code == 0
    assert "predicted 3" in capsys.readouterr().out
