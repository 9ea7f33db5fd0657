"""The repository scan: numeric version folders only, anything else skipped with a log line, never a crash."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.errors import InvalidRequest
from service.model_files import version_number
from service.serving.repository import parse_version, scan
from tests.serving.onnx_models import write_config, write_version


@pytest.mark.parametrize(
    ("text", "number"),
    [("1", 1), ("12", 12), ("0", None), ("-1", None), ("²", None), ("١", None), ("1.0", None), ("v1", None), ("", None)],
)
def test_version_numbers_are_positive_ascii_integers(text: str, number: int | None) -> None:
    assert version_number(text) == number


@pytest.mark.parametrize("text", ["²", "٣", "0", "latest", "1" * 19])
def test_a_bad_version_in_a_request_is_a_client_error(text: str) -> None:
    with pytest.raises(InvalidRequest, match="positive integers"):
        parse_version(text)


def test_odd_folders_are_skipped_with_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = write_version(tmp_path, "m", 1)
    for odd in ("²", "٣", "0", "latest"):
        shutil.copytree(good, tmp_path / "m" / odd)
    (tmp_path / "m" / "notes.txt").write_text("not a version")
    write_config(tmp_path, "m", {})
    (tmp_path / "README.md").write_text("repository notes")
    (tmp_path / "bad name!").mkdir()

    with caplog.at_level("INFO", logger="service.serving.repository"):
        specs = scan(tmp_path)

    assert [(spec.name, [v.version for v in spec.versions]) for spec in specs] == [("m", [1])]
    skipped = " ".join(record.getMessage() for record in caplog.records)
    for odd in ("²", "٣", "latest", "notes.txt", "bad name!"):
        assert odd in skipped
