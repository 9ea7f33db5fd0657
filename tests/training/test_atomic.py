"""A failed run leaves the repository exactly as it found it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import train
from training import parity
from training.errors import ParityError, UsageError

pytestmark = pytest.mark.torch


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_parity_failure_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No real export is exact to below zero, so this forces the parity check to refuse.
    monkeypatch.setattr(parity, "TOLERANCE", -1.0)
    with pytest.raises(ParityError, match="onnxruntime differs from torch"):
        train(tmp_path, "diabetes_mlp", epochs=1)
    assert _tree(tmp_path) == []


def test_parity_failure_keeps_existing_versions_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train(tmp_path, "diabetes_mlp", epochs=1)
    before = {p: p.read_bytes() for p in (tmp_path / "diabetes_mlp").rglob("*") if p.is_file()}
    monkeypatch.setattr(parity, "TOLERANCE", -1.0)
    with pytest.raises(ParityError):
        train(tmp_path, "diabetes_mlp", epochs=1)
    after = {p: p.read_bytes() for p in (tmp_path / "diabetes_mlp").rglob("*") if p.is_file()}
    assert after == before


def test_version_taken_while_training_is_not_overwritten(tmp_path: Path) -> None:
    """A non-folder entry named like the next version blocks the rename; the staged folder is removed."""
    model_dir = tmp_path / "diabetes_mlp"
    model_dir.mkdir()
    (model_dir / "1").write_text("someone else's")
    with pytest.raises(UsageError, match="cannot publish"):
        train(tmp_path, "diabetes_mlp", epochs=1)
    assert _tree(tmp_path) == ["diabetes_mlp", "diabetes_mlp/1"]
    assert (model_dir / "1").read_text() == "someone else's"
