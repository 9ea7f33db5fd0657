"""State-changing endpoints need ``Authorization: Bearer <admin token>``; names never leave the repository."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from service.app import create_app
from service.settings import Settings
from tests.serving.onnx_models import infer_body, write_version

TOKEN = "s3cret-admin-token"
READ_ONLY_POSTS = re.compile(r".*/(infer|activations|evaluate|explain)$|^/v2/repository/index$")
"""POST endpoints that compute an answer and change nothing; every other non-GET must be guarded."""


def _state_changing(app: Litestar) -> list[str]:
    paths = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            methods = set(handler.http_methods) - {"GET", "HEAD", "OPTIONS"}
            if methods and not READ_ONLY_POSTS.fullmatch(route.path):
                paths.add(route.path)
    return sorted(paths)


def _concrete(path: str) -> str:
    return path.replace("{model_name:str}", "m").replace("{model_version:str}", "1")


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    write_version(root, "m", 1)
    return root


@pytest.fixture
def guarded(repository: Path) -> Iterator[TestClient]:  # type: ignore[type-arg]
    with TestClient(create_app(Settings(repository=repository, admin_token=TOKEN))) as client:
        yield client


def test_the_state_changing_endpoints_are_the_repository_controls(guarded: TestClient) -> None:  # type: ignore[type-arg]
    assert _state_changing(guarded.app) == [
        "/v2/repository/models/{model_name:str}/load",
        "/v2/repository/models/{model_name:str}/unload",
    ]


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer wrong"],
)
def test_missing_or_wrong_tokens_are_refused(guarded: TestClient, authorization: str | None) -> None:  # type: ignore[type-arg]
    headers = {} if authorization is None else {"Authorization": authorization}
    for path in _state_changing(guarded.app):
        response = guarded.post(_concrete(path), headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert "error" in response.json()
        assert response.headers["www-authenticate"].startswith("Bearer")
    # Nothing changed: the model still serves.
    assert guarded.post("/v2/models/m/infer", json=infer_body()).status_code == 200


def test_with_no_token_configured_they_answer_403(repository: Path) -> None:
    with TestClient(create_app(Settings(repository=repository))) as client:
        for path in _state_changing(client.app):
            for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
                response = client.post(_concrete(path), headers=headers)
                assert response.status_code == 403, (path, response.text)
                assert "WEIGHTSERVE_ADMIN_TOKEN" in response.json()["error"]


def test_the_right_token_unloads_and_loads(guarded: TestClient) -> None:  # type: ignore[type-arg]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.post("/v2/repository/models/m/unload", headers=auth).status_code == 200
    assert guarded.post("/v2/models/m/infer", json=infer_body()).status_code == 404
    assert guarded.post("/v2/repository/models/m/load", headers=auth).status_code == 200
    assert guarded.post("/v2/models/m/infer", json=infer_body()).status_code == 200


@pytest.mark.parametrize(
    "name",
    ["..", "...", "a..b", ".hidden", "-dash", "x" * 129, "..%2Foutside%2Fevil", "%2Ftmp%2Fevil", "linked", "a%5Cb"],
)
def test_names_cannot_reach_outside_the_repository(repository: Path, tmp_path: Path, name: str) -> None:
    outside = tmp_path / "outside"
    write_version(outside, "evil", 1)
    (repository / "linked").symlink_to(outside / "evil", target_is_directory=True)
    with TestClient(create_app(Settings(repository=repository, admin_token=TOKEN))) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for action in ("load", "unload"):
            response = client.post(f"/v2/repository/models/{name}/{action}", headers=auth)
            assert response.status_code in (400, 404), (name, action, response.status_code, response.text)
            assert "error" in response.json()
        names = {entry["name"] for entry in client.post("/v2/repository/index", json={}).json()}
        assert names == {"m"}
