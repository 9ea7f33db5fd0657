from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.weights.cli import main
from service.weights.report import model_report
from service.weights.store import WeightStore


def test_table_lists_every_layer_tensor(repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(repository / "clf" / "1")]) == 0
    out = capsys.readouterr().out
    for name in ("conv.weight", "bn.running_var", "head.weight", "onnx::MatMul_9"):
        assert name in out
    assert "4 layers, 9 tensors" in out
    assert out.splitlines()[0].split()[:4] == ["layer", "op", "module", "tensor"]


def test_json_has_the_numbers_of_the_api(repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = repository / "clf" / "2"
    assert main([str(folder), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    store = WeightStore()
    manifest = json.loads((folder / "manifest.json").read_text())
    version = store.open("clf", folder / "model.onnx", folder / "weights.safetensors", manifest)
    expected = json.loads(json.dumps(model_report(store, version, "clf", 2)))
    assert printed["tensors"] == expected["tensors"]
    assert printed["summary"] == expected["summary"]


def test_model_folder_and_onnx_file(repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(repository / "clf")]) == 0  # the highest version
    assert "16x1x3x3" in capsys.readouterr().out
    assert main([str(repository / "clf" / "1" / "model.onnx")]) == 0
    assert "8x1x3x3" in capsys.readouterr().out


def test_missing_target_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nothing")]) == 1
    assert "weightserve inspect:" in capsys.readouterr().err


def test_console_script_dispatches_inspect(repository: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "inspect", str(repository / "clf" / "3")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "head.weight" in done.stdout


async def test_cli_and_http_api_agree(repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litestar.testing import AsyncTestClient

    from service.app import create_app
    from service.settings import Settings

    assert main([str(repository / "clf" / "1"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    async with AsyncTestClient(app=create_app(Settings(repository=repository, warmup=False))) as client:
        served = (await client.get("/v2/models/clf/versions/1/weights")).json()
    assert printed["tensors"] == served["tensors"]
    assert printed["layers"] == served["layers"]
    assert printed["trained"] == served["trained"]


def test_a_progress_bar_while_large_layers_are_analysed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.weights.analysis_helpers import mlp_weights, write_mlp

    folder = tmp_path / "m" / "1"
    write_mlp(folder, mlp_weights(2))
    monkeypatch.setenv("WEIGHTSERVE_WEIGHTS_ANALYSIS_INLINE_WORK", "0")
    assert main([str(folder)]) == 0
    captured = capsys.readouterr()
    bars = [line for line in captured.err.splitlines() if line.startswith("spectral analysis [")]
    assert bars, captured.err
    assert bars[-1].startswith("spectral analysis [########################] 3/3 layers  100% of the work")
    assert "success" in captured.out
    assert main([str(folder), "--no-wait"]) == 0  # analysed already: the same table, at once
    again = capsys.readouterr()
    assert "spectral analysis [" not in again.err
    assert again.out == captured.out


def test_progress_line_shows_counts_work_and_time() -> None:
    from service.weights.cli import progress_line

    status = {"layers": {"done": 3, "running": 1, "queued": 4, "failed": 0, "total": 8}, "progress": 0.41,
              "elapsed_s": 12.2, "eta_s": 17.4}
    assert progress_line(status, width=10) == (
        "spectral analysis [####------] 3/8 layers, 1 running  41% of the work  elapsed 12s  left ~17s")
    assert progress_line(status | {"eta_s": None}, width=10).endswith("left ~?")
