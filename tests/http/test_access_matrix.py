"""Every route the app registers x every scope configuration x no / wrong / other / right token.

The table is the app's own routing table (direct infer path included: POST .../infer never reaches
Litestar), so a route added anywhere is checked here without being listed, and fails the
completeness test until it declares its scope.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.testing import TestClient

from service.app import create_app
from service.http.auth import AccessPolicy, requires
from service.http.error_responses import EXCEPTION_HANDLERS
from service.http.infer_fast_path import InferFastPath
from service.ops.prometheus import ServiceMetrics
from service.settings import SCOPES, Scope, Settings
from tests.http.access import (
    TOKENS,
    WRONG_TOKEN,
    Route,
    bearer,
    one_token_per_scope,
    registered_routes,
    settings,
)
from tests.serving.onnx_models import infer_body, write_version

ROUTES = registered_routes(create_app(Settings(repository=Path("models"))))
CASES = ("no token", "wrong token", "token without the scope", "token with the scope")
PUBLIC = [r"/v2/health/live", r"/v2/health/ready", r"/ui", r"/ui/index\.html", r"/ui/\{asset_path:path\}", r"/schema.*"]
"""What anyone may fetch whatever the settings: probes, the dashboard's files, the API description."""


def _headers(route_scope: Scope | None, case: str) -> dict[str, str]:
    if case == "no token":
        return {}
    if case == "wrong token":
        return bearer(WRONG_TOKEN)
    if route_scope is None:  # a public route: any configured token will do for the last two cases
        return bearer(TOKENS["infer"])
    if case == "token without the scope":
        return bearer(TOKENS[SCOPES[(SCOPES.index(route_scope) + 1) % len(SCOPES)]])
    return bearer(TOKENS[route_scope])


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("access") / "repository"
    write_version(root, "m", 1)
    return root


def _client(app_settings: Settings) -> Iterator[tuple[TestClient[Litestar], dict[str, str]]]:
    with TestClient(create_app(app_settings)) as client:
        weights = client.get("/v2/models/m/weights", headers=bearer(TOKENS["inspect"]))
        assert weights.status_code == 200, weights.text
        values = {
            "model_name": "m",
            "model_version": "1",
            "tensor_id": weights.json()["tensors"][0]["id"],
            "asset_path": "app.css",
            "path": "openapi.json",
        }
        yield client, values


@pytest.fixture(scope="module")
def all_closed(repository: Path) -> Iterator[tuple[TestClient[Litestar], dict[str, str]]]:
    yield from _client(settings(repository, [], one_token_per_scope()))


@pytest.fixture(scope="module")
def defaults(repository: Path) -> Iterator[tuple[TestClient[Litestar], dict[str, str]]]:
    yield from _client(Settings(repository=repository))


@pytest.fixture(scope="module")
def all_open(repository: Path) -> Iterator[tuple[TestClient[Litestar], dict[str, str]]]:
    yield from _client(settings(repository, SCOPES))


def _request(client: TestClient[Litestar], route: Route, values: dict[str, str], headers: dict[str, str]) -> Any:
    return client.request(route.method, route.concrete(values), headers=headers)


def _assert_allowed(response: Any, what: str) -> None:
    assert response.status_code not in (401, 403), (what, response.status_code, response.text)


def _assert_refused(response: Any, status: int, what: str, *, error: str | None, scope: str) -> str:
    assert response.status_code == status, (what, response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, (what, body)
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="weightserve"'), (what, challenge)
    assert f'scope="{scope}"' in challenge, (what, challenge)
    if error is not None:
        assert f'error="{error}"' in challenge, (what, challenge)
    message: str = body["error"]
    return message


# ------------------------------------------------------------------------------ declarations


def test_every_registered_route_declares_its_access() -> None:
    assert [route.id for route in ROUTES if route.access is None] == []
    assert len(ROUTES) > 40  # the walk really found the app's routes


def test_only_probes_the_dashboards_files_and_the_api_description_are_public() -> None:
    public = [route for route in ROUTES if route.access == "public" and route.method != "OPTIONS"]
    unexpected = [route.id for route in public if not any(re.fullmatch(p, route.path) for p in PUBLIC)]
    assert unexpected == []
    for pattern in PUBLIC:
        assert any(re.fullmatch(pattern, route.path) for route in public), pattern


def test_raw_values_need_export_and_repository_changes_need_admin() -> None:
    served = [route for route in ROUTES if route.method != "OPTIONS"]
    values = [route for route in served if route.path.endswith("/values")]
    changes = [route for route in served if re.fullmatch(r"/v2/repository/models/.+/(load|unload)", route.path)]
    assert len(values) == 2
    assert len(changes) == 2
    assert {route.access for route in values} == {"export"}
    assert {route.access for route in changes} == {"admin"}
    assert [route.id for route in served if route.access == "export" and route not in values] == []


def test_automatic_options_answers_need_nothing() -> None:
    assert {route.access for route in ROUTES if route.method == "OPTIONS"} == {"public"}


def test_a_route_without_a_declaration_is_refused() -> None:
    @get("/declared", opt=requires("infer"), sync_to_thread=False)
    def declared() -> str:
        return "ok"

    @get("/undeclared", sync_to_thread=False)
    def undeclared() -> str:
        return "ok"

    policy = AccessPolicy([], ("infer",), ServiceMetrics())
    app = Litestar([declared, undeclared], guards=[policy.guard], exception_handlers=EXCEPTION_HANDLERS)
    with TestClient(app) as client:
        assert client.get("/declared").status_code == 200
        refused = client.get("/undeclared")
        assert refused.status_code == 403
        assert refused.json() == {"error": "route undeclared declares no access scope"}


# ------------------------------------------------------------------------------ the matrix


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.id)
def test_every_scope_closed(all_closed: tuple[TestClient[Litestar], dict[str, str]], route: Route) -> None:
    client, values = all_closed
    scope = None if route.access == "public" else route.access
    for case in CASES:
        response = _request(client, route, values, _headers(scope, case))
        what = f"{route.id} with {case}"
        if scope is None or case == "token with the scope":
            _assert_allowed(response, what)
        elif case == "no token":
            message = _assert_refused(response, 401, what, error=None, scope=scope)
            assert f"'Authorization: Bearer <token>' with the '{scope}' scope" in message
        elif case == "wrong token":
            assert _assert_refused(response, 401, what, error="invalid_token", scope=scope) == "invalid token"
        else:
            message = _assert_refused(response, 403, what, error="insufficient_scope", scope=scope)
            assert f"does not grant the '{scope}' scope" in message


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.id)
def test_defaults(defaults: tuple[TestClient[Litestar], dict[str, str]], route: Route) -> None:
    """infer and inspect open; export and admin closed, for any credentials, until a token grants them."""
    client, values = defaults
    for case in CASES:
        response = _request(client, route, values, _headers(None, case))
        what = f"{route.id} with {case}"
        if route.access in ("export", "admin"):
            message = _assert_refused(response, 403, what, error=None, scope=route.access)
            assert f"the '{route.access}' scope" in message
            assert "is closed" in message
            assert "WEIGHTSERVE_AUTH_TOKENS" in message
            assert "WEIGHTSERVE_AUTH_OPEN_SCOPES" in message
            assert ("WEIGHTSERVE_ADMIN_TOKEN" in message) == (route.access == "admin")
        else:
            _assert_allowed(response, what)


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.id)
def test_every_scope_open(all_open: tuple[TestClient[Litestar], dict[str, str]], route: Route) -> None:
    client, values = all_open
    for case in CASES:
        _assert_allowed(_request(client, route, values, _headers(None, case)), f"{route.id} with {case}")


def test_the_right_tokens_do_their_jobs(all_closed: tuple[TestClient[Litestar], dict[str, str]]) -> None:
    client, values = all_closed
    # The matrix may have unloaded the model with the admin token: load it back with the same.
    assert client.post("/v2/repository/models/m/load", headers=bearer(TOKENS["admin"])).status_code == 200
    infer = client.post("/v2/models/m/infer", json=infer_body(), headers=bearer(TOKENS["infer"]))
    assert infer.status_code == 200, infer.text
    raw = client.get(f"/v2/models/m/weights/{values['tensor_id']}/values", headers=bearer(TOKENS["export"]))
    assert raw.status_code == 200
    assert raw.content.startswith(b"\x93NUMPY")
    index = client.post("/v2/repository/index", json={}, headers=bearer(TOKENS["inspect"]))
    assert [entry["name"] for entry in index.json()] == ["m"]


# ------------------------------------------------------------------------------ the direct infer path


async def test_the_direct_infer_path_refuses_before_reading_the_body(tmp_path: Path) -> None:
    async def litestar(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("infer requests never reach Litestar")

    received: list[Any] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        received.append(True)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    app_settings = settings(tmp_path, [], one_token_per_scope())
    policy = AccessPolicy.from_settings(app_settings, ServiceMetrics())
    fast_path = InferFastPath(litestar, State({"settings": app_settings, "registry": None}), policy)
    for headers, status in (([], 401), ([(b"authorization", f"Bearer {TOKENS['inspect']}".encode())], 403)):
        sent.clear()
        scope = {"type": "http", "method": "POST", "path": "/v2/models/m/versions/1/infer", "headers": headers}
        await fast_path(scope, receive, send)  # type: ignore[arg-type]
        assert sent[0]["status"] == status
        assert dict(sent[0]["headers"])[b"www-authenticate"].startswith(b'Bearer realm="weightserve"')
    assert received == []


# ------------------------------------------------------------------------------ OpenAPI


def _openapi_path(path: str) -> str:
    return re.sub(r":\w+}", "}", path)


@pytest.mark.parametrize("config", ["all_closed", "defaults"])
def test_openapi_names_each_operations_scope(config: str, request: pytest.FixtureRequest) -> None:
    client, _ = request.getfixturevalue(config)
    schema = client.get("/schema/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["type"] == "http"
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    by_id = {f"{r.method} {_openapi_path(r.path)}": r for r in ROUTES}
    open_scopes = {"infer", "inspect"} if config == "defaults" else set()
    operations = 0
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            operations += 1
            access = by_id[f"{method.upper()} {path}"].access
            expected: list[dict[str, list[str]]] | None = None
            if access != "public":
                required = {"bearer": [str(access)]}
                expected = [{}, required] if access in open_scopes else [required]
            assert operation.get("security") == expected, (method, path)
    assert operations > 30
