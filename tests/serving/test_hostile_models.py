"""Hostile or corrupt model files are refused with a reason in the index; everything else keeps serving."""

from __future__ import annotations

import time
from pathlib import Path

from litestar.testing import TestClient

from service.app import create_app
from service.settings import Settings
from tests.serving.hostile import HOSTILE
from tests.serving.onnx_models import infer_body, write_version

SIZE_CAP = 100_000


def _settings(repository: Path, **overrides: object) -> Settings:
    return Settings(repository=repository, max_model_bytes=SIZE_CAP, **overrides)  # type: ignore[arg-type]


def _index(client: TestClient) -> dict[str, dict[str, str]]:  # type: ignore[type-arg]
    response = client.post("/v2/repository/index", json={})
    assert response.status_code == 200
    return {entry["name"]: entry for entry in response.json() if entry.get("version") in ("1", None)}


def _assert_refused(index: dict[str, dict[str, str]]) -> None:
    for name, (_, words) in HOSTILE.items():
        entry = index[name]
        assert entry["state"] == "UNAVAILABLE", entry
        assert words in entry["reason"], entry


def _assert_good_serves(client: TestClient) -> None:  # type: ignore[type-arg]
    response = client.post("/v2/models/good/infer", json=infer_body())
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1.0] * 4
    assert client.get("/v2/health/ready").status_code == 200


def test_hostile_models_present_at_startup_are_refused(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_version(repository, "good", 1)
    for builder, _ in HOSTILE.values():
        builder(repository, tmp_path / "outside")
    with TestClient(create_app(_settings(repository))) as client:
        _assert_refused(_index(client))
        _assert_good_serves(client)
        for name in HOSTILE:
            assert client.get(f"/v2/models/{name}/ready").status_code == 404
            refused = client.post(f"/v2/models/{name}/infer", json=infer_body())
            assert refused.status_code == 404, refused.text
            assert "error" in refused.json()


def test_hostile_models_dropped_into_a_running_server_are_refused(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_version(repository, "good", 1)
    with TestClient(create_app(_settings(repository, poll_interval_s=0.1))) as client:
        _assert_good_serves(client)
        for builder, _ in HOSTILE.values():
            builder(repository, tmp_path / "outside")
        deadline = time.monotonic() + 60
        while not set(HOSTILE) <= set(_index(client)) and time.monotonic() < deadline:
            time.sleep(0.1)
        _assert_refused(_index(client))
        _assert_good_serves(client)
        metrics = client.get("/metrics").text
        failures = [line for line in metrics.splitlines() if line.startswith("weightserve_model_load_failures_total{")]
        assert len(failures) == len(HOSTILE), failures


def test_a_corrupt_new_version_leaves_the_old_one_serving(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_version(repository, "good", 1)
    with TestClient(create_app(_settings(repository, poll_interval_s=0.1))) as client:
        _assert_good_serves(client)
        broken = repository / "good" / "2"
        broken.mkdir()
        (broken / "model.onnx").write_bytes(b"\xff" * 64)
        deadline = time.monotonic() + 60
        entries: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            entries = [e for e in client.post("/v2/repository/index", json={}).json() if e["name"] == "good"]
            if any(e.get("version") == "2" and e["state"] == "UNAVAILABLE" for e in entries):
                break
            time.sleep(0.1)
        by_version = {e["version"]: e for e in entries}
        assert by_version["1"]["state"] == "READY"
        assert "not a valid ONNX protobuf" in by_version["2"]["reason"]
        _assert_good_serves(client)  # still version 1
        assert client.post("/v2/models/good/infer", json=infer_body()).json()["model_version"] == "1"


def test_corrupt_files_replacing_a_loaded_version_keep_the_loaded_copy(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_version(repository, "good", 1)
    with TestClient(create_app(_settings(repository, admin_token="t"))) as client:
        (repository / "good" / "1" / "model.onnx").write_bytes(b"\xff" * 64)
        refused = client.post("/v2/repository/models/good/load", headers={"Authorization": "Bearer t"})
        assert refused.status_code == 400, refused.text
        assert "not a valid ONNX protobuf" in refused.json()["error"]
        entry = next(e for e in client.post("/v2/repository/index", json={}).json() if e["name"] == "good")
        assert entry["state"] == "READY"
        assert "still serving the previous load" in entry["reason"]
        _assert_good_serves(client)
