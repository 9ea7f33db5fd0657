"""Bad input through the command line: one line on stderr, a non-zero exit, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.cli import main

pytestmark = pytest.mark.torch


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _fails_cleanly(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1
    assert err.startswith("weightserve train: error: ")
    assert message in err
    assert "Traceback" not in err


def test_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails_cleanly(capsys, ["digits_cnn", "nope", "--repository", str(tmp_path)], "unknown model 'nope'")
    assert _tree(tmp_path) == []


def test_missing_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent"
    _fails_cleanly(capsys, ["diabetes_mlp", "--repository", str(missing)], "does not exist")
    assert not missing.exists()


def test_repository_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "models"
    target.write_text("not a folder")
    _fails_cleanly(capsys, ["diabetes_mlp", "--repository", str(target)], "is not a directory")
    assert target.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "models"
    target.mkdir(mode=0o555)
    _fails_cleanly(capsys, ["diabetes_mlp", "--repository", str(target)], "is not writable")
    assert _tree(target) == []


def test_model_folder_that_cannot_be_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "diabetes_mlp").write_text("in the way")
    _fails_cleanly(capsys, ["diabetes_mlp", "--repository", str(tmp_path)], "is not a directory")
    assert _tree(tmp_path) == ["diabetes_mlp"]


def test_finetune_from_a_missing_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails_cleanly(
        capsys, ["digits_cnn", "--finetune-from", "3", "--repository", str(tmp_path)], "version 3 does not exist"
    )
    assert _tree(tmp_path) == []


def test_epochs_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails_cleanly(capsys, ["diabetes_mlp", "--epochs", "0", "--repository", str(tmp_path)], "--epochs")


def test_module_entry_point_reports_without_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "training", "nope", "--repository", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "weightserve train: error: unknown model 'nope'; known: diabetes_mlp, digits_autoencoder, digits_cnn"
    ]


def test_cli_trains_and_publishes_the_next_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diabetes_mlp", "--epochs", "1", "--repository", str(tmp_path)]) == 0
    assert main(["diabetes_mlp", "--epochs", "1", "--repository", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "diabetes_mlp v1" in out
    assert "diabetes_mlp v2" in out
    assert sorted(p.name for p in (tmp_path / "diabetes_mlp").iterdir()) == ["1", "2", "examples"]


def test_default_names_are_the_known_tasks() -> None:
    from training.defaults import MODEL_NAMES
    from training.tasks import TASKS

    assert sorted(MODEL_NAMES) == sorted(TASKS)
