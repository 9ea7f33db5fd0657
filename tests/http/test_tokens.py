"""Where tokens come from (environment, a file, the admin shorthand), what a valid one is, and which
scopes need one; the secrets themselves never appear in an error."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.settings import Settings, TokenSpec
from tests.http.access import bearer
from tests.serving.onnx_models import infer_body, write_version

SECRET = "file-secret-3c9e1b7a5d"


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    write_version(root, "m", 1)
    return root


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean slate: no WEIGHTSERVE_* variable of the machine running the tests leaks in."""
    import os

    for key in list(os.environ):
        if key.startswith("WEIGHTSERVE_"):
            monkeypatch.delenv(key)
    return monkeypatch


def _values_path(client: TestClient[Litestar]) -> str:
    tensor = client.get("/v2/models/m/weights").json()["tensors"][0]["id"]
    return f"/v2/models/m/weights/{tensor}/values"


def test_tokens_from_the_environment_and_a_file(
    environment: pytest.MonkeyPatch, repository: Path, tmp_path: Path
) -> None:
    tokens_file = tmp_path / "tokens.json"
    # A file may hold digests only: the server never needs the token itself.
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    tokens_file.write_text(json.dumps([{"name": "from-file", "sha256": digest, "scopes": ["export", "admin"]}]))
    environment.setenv("WEIGHTSERVE_REPOSITORY", str(repository))
    environment.setenv("WEIGHTSERVE_AUTH_TOKENS", json.dumps([{"name": "ci", "token": "env-token-8d2f4a", "scopes": ["export"]}]))
    environment.setenv("WEIGHTSERVE_AUTH_TOKENS_FILE", str(tokens_file))
    environment.setenv("WEIGHTSERVE_AUTH_OPEN_SCOPES", '["inspect"]')
    environment.setenv("WEIGHTSERVE_ADMIN_TOKEN", "shorthand-admin-71c")
    environment.setenv("WEIGHTSERVE_ACCESS_LOG", "false")  # a neighbouring name, still its own setting
    settings = Settings()
    assert settings.auth.open_scopes == {"inspect"}
    with TestClient(create_app(settings)) as client:
        values = _values_path(client)
        assert client.get(values, headers=bearer("env-token-8d2f4a")).status_code == 200
        assert client.get(values, headers=bearer(SECRET)).status_code == 200
        assert client.get(values, headers=bearer("shorthand-admin-71c")).status_code == 403
        for token in (SECRET, "shorthand-admin-71c"):
            assert client.post("/v2/repository/models/m/load", headers=bearer(token)).status_code == 200
        assert client.post("/v2/repository/models/m/load", headers=bearer("env-token-8d2f4a")).status_code == 403
        # infer is closed here and no token grants it: nothing infers, whoever asks
        refused = client.post("/v2/models/m/infer", json=infer_body(), headers=bearer(SECRET))
        assert refused.status_code == 403
        assert "the 'infer' scope" in refused.json()["error"]


def test_a_missing_tokens_file_adds_no_tokens_and_says_so(
    repository: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A secret not mounted yet (optional in the manifests) leaves every closed scope closed."""
    settings = Settings.model_validate({"repository": repository, "auth": {"tokens_file": tmp_path / "absent.json"}})
    with caplog.at_level(logging.WARNING, logger="service"), TestClient(create_app(settings)) as client:
        assert client.get(_values_path(client)).status_code == 403
        assert client.post("/v2/repository/models/m/load").status_code == 403
    assert any("absent.json does not exist" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not json", "Invalid JSON"),
        (json.dumps({"name": "x"}), "file: Input should be a valid"),
        (json.dumps([{"name": "x", "token": SECRET, "scopes": ["exprt"]}]), "0.scopes"),
        (json.dumps([{"name": "x", "token": SECRET, "sha256": "0" * 64, "scopes": ["admin"]}]), "exactly one of"),
        (json.dumps([{"name": "x", "scopes": ["admin"]}]), "exactly one of"),
        (json.dumps([{"name": "x", "token": SECRET, "scopes": []}]), "0.scopes"),
        (json.dumps([{"name": "has space", "token": SECRET, "scopes": ["admin"]}]), "0.name"),
        (json.dumps([{"name": "x", "token": SECRET + " tail", "scopes": ["admin"]}]), "printable ASCII"),
        (json.dumps([{"name": "x", "token": SECRET, "scopes": ["admin"], "extra": 1}]), "0.extra"),
    ],
)
def test_a_bad_tokens_file_stops_the_server_without_echoing_secrets(
    repository: Path, tmp_path: Path, content: str, problem: str
) -> None:
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(content)
    settings = Settings.model_validate({"repository": repository, "auth": {"tokens_file": tokens_file}})
    with pytest.raises(ValueError, match="WEIGHTSERVE_AUTH_TOKENS_FILE") as raised:
        create_app(settings)
    assert problem in str(raised.value)
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize(
    "tokens",
    [
        [{"name": "a", "token": SECRET, "scopes": ["export"]}, {"name": "a", "token": SECRET + "2", "scopes": ["admin"]}],
        [{"name": "a", "token": SECRET, "scopes": ["export"]}, {"name": "b", "token": SECRET, "scopes": ["admin"]}],
        [
            {"name": "a", "token": SECRET, "scopes": ["export"]},
            {"name": "b", "sha256": hashlib.sha256(SECRET.encode()).hexdigest(), "scopes": ["admin"]},
        ],
        [{"name": "admin", "token": SECRET, "scopes": ["inspect"]}],  # clashes with the shorthand's name
    ],
    ids=["same name", "same secret", "same secret as a digest", "the shorthand's name"],
)
def test_names_and_secrets_are_unique(repository: Path, tokens: list[dict[str, object]]) -> None:
    settings = Settings.model_validate(
        {"repository": repository, "admin_token": "another-admin-secret", "auth": {"tokens": tokens}}
    )
    with pytest.raises(ValueError, match=r"unique|same secret") as raised:
        create_app(settings)
    assert SECRET not in str(raised.value)


def test_settings_errors_name_the_problem_not_the_secret(environment: pytest.MonkeyPatch) -> None:
    tokens = [{"name": "x", "token": SECRET, "sha256": "0" * 64, "scopes": ["export"]}]
    environment.setenv("WEIGHTSERVE_AUTH_TOKENS", json.dumps(tokens))
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "exactly one of 'token' and 'sha256'" in str(raised.value)
    assert SECRET[:3] not in str(raised.value)


def test_a_token_spec_holds_no_readable_secret() -> None:
    spec = TokenSpec.model_validate({"name": "x", "token": SECRET, "scopes": ["export"]})
    assert SECRET not in repr(spec)
    assert SECRET not in str(spec.model_dump())


def test_an_empty_admin_token_is_no_token(repository: Path) -> None:
    with TestClient(create_app(Settings(repository=repository, admin_token=""))) as client:
        refused = client.post("/v2/repository/models/m/load", headers=bearer(""))
        assert refused.status_code == 403
        assert "WEIGHTSERVE_ADMIN_TOKEN" in refused.json()["error"]


@pytest.mark.parametrize(
    "authorization",
    ["Bearer caf\u00e9".encode(), b"Bearer \xff\xfe", b"Bearer " + b"x" * 10_000, f"bearer {SECRET}x".encode(), f"Token {SECRET}".encode(), b"Bearer  \t "],
)
def test_odd_credentials_are_a_clean_401(repository: Path, authorization: bytes) -> None:
    tokens = ({"name": "exporter", "token": SECRET, "scopes": ["export"]},)
    settings = Settings.model_validate({"repository": repository, "auth": {"tokens": tokens}})
    with TestClient(create_app(settings)) as client:
        response = client.get(_values_path(client), headers={b"authorization": authorization})
        assert response.status_code == 401
        assert "error" in response.json()
        # the scheme is case-insensitive, as RFC 7235 has it
        assert client.get(_values_path(client), headers={"Authorization": f"bEaReR {SECRET}"}).status_code == 200


@pytest.mark.parametrize("name", ["none.json", "example.json"])
def test_the_deployments_token_files_are_valid_and_grant_nothing_known(repository: Path, name: str) -> None:
    """compose mounts deploy/tokens/none.json by default; example.json shows the form with digests only."""
    path = Path(__file__).resolve().parents[2] / "deploy" / "tokens" / name
    settings = Settings.model_validate({"repository": repository, "auth": {"tokens_file": path}})
    with TestClient(create_app(settings)) as client:
        refused = client.post("/v2/repository/models/m/load")
        assert refused.status_code == (403 if name == "none.json" else 401)
    assert "token" not in {key for entry in json.loads(path.read_text()) for key in entry}


def test_serve_refuses_a_bad_tokens_file_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    bad = tmp_path / "tokens.json"
    bad.write_text('[{"name": "ci", "token": "a-secret-value-of-some-length", "scopes": ["nothing"]}]')
    monkeypatch.setenv("WEIGHTSERVE_AUTH_TOKENS_FILE", str(bad))
    assert main(["serve", "--repository", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "WEIGHTSERVE_AUTH_TOKENS_FILE" in err
    assert "a-secret-value" not in err
