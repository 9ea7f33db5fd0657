"""The OpenAPI document under /schema is valid OpenAPI 3.1 and true: every operation, called for real on
the shipped models (successes and each kind of refusal), answers with a status, content type, headers
and body that the document declares (schemathesis' conformance checks on real responses)."""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from openapi_spec_validator import validate
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server import RunningServer, serve

MODELS = Path(__file__).resolve().parents[2] / "models"
EXPORT_TOKEN = "openapi-test-export-token-5b1e"
ADMIN_TOKEN = "openapi-test-admin-token-77c2a"
INSPECT_TOKEN = "openapi-test-inspect-only-9d04"
TENSOR = "T8a4901f9bbd655aa"  # digits_cnn's first convolution weight (the README's example)
MAX_REQUEST_BYTES = 256 * 1024
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

M = "/v2/models/{model_name}"
MV = "/v2/models/{model_name}/versions/{model_version}"


def _example(model: str, name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((MODELS / model / "examples" / f"{name}.json").read_text())
    return document


def _binary_digit() -> tuple[bytes, dict[str, str]]:
    """digit-3 as Triton's binary form: a JSON header, then the raw FP32 pixels; logits back as binary."""
    example = _example("digits_cnn", "digit-3")
    values = [float(v) for row in example["inputs"][0]["data"] for v in _flat(row)]
    header = {
        "inputs": [
            {"name": "image", "shape": [1, 1, 8, 8], "datatype": "FP32", "parameters": {"binary_data_size": 256}}
        ],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    }
    text = json.dumps(header).encode()
    return text + struct.pack("<64f", *values), {"Inference-Header-Content-Length": str(len(text))}


def _flat(value: Any) -> list[Any]:
    return [x for item in value for x in _flat(item)] if isinstance(value, list) else [value]


@dataclass
class Call:
    method: str
    path: str
    status: int
    path_parameters: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] | None = None
    body: Any = None
    media_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def label(self) -> str:
        return f"{self.method} {self.path} {self.path_parameters} {self.query or ''} -> {self.status}"


def _model_calls() -> list[Call]:
    digit = _example("digits_cnn", "digit-3")
    labelled = _example("digits_cnn", "labelled-20")
    binary, binary_headers = _binary_digit()
    cnn = {"model_name": "digits_cnn"}
    cnn1 = {"model_name": "digits_cnn", "model_version": "1"}
    unknown = {"model_name": "no_such_model"}
    calls = [
        Call("GET", "/v2/health/live", 200),
        Call("GET", "/v2/health/ready", 200),
        Call("GET", "/v2", 200),
        Call("GET", "/v2/models/stats", 200),
        Call("GET", "/metrics", 200),
        Call("GET", "/v2/models/{model_name}/examples", 404, unknown),
        Call("GET", "/v2/models/{model_name}/examples/{example}", 404, {"model_name": "digits_cnn", "example": "nope"}),
        Call("GET", "/v2/models/{model_name}/examples/{example}", 400, {"model_name": "digits_cnn", "example": ".x"}),
        Call("POST", M + "/infer", 200, cnn, body=digit, media_type="application/json"),
        Call(
            "POST", MV + "/infer", 200, cnn1, body=binary, media_type="application/octet-stream", headers=binary_headers
        ),
        Call(
            "POST",
            M + "/infer",
            200,
            cnn,
            body=gzip.compress(json.dumps(digit).encode()),
            media_type="application/octet-stream",
            headers={"Content-Encoding": "gzip"},
        ),
        Call(
            "POST",
            M + "/infer",
            400,
            cnn,
            body={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]},
            media_type="application/json",
        ),
        Call("POST", M + "/infer", 404, unknown, body=digit, media_type="application/json"),
        Call(
            "POST", M + "/infer", 413, cnn, body=b"0" * (MAX_REQUEST_BYTES + 1), media_type="application/octet-stream"
        ),
        Call(
            "POST",
            M + "/infer",
            415,
            cnn,
            body=b"{}",
            media_type="application/octet-stream",
            headers={"Content-Encoding": "br"},
        ),
        Call(
            "POST",
            MV + "/infer",
            400,
            {"model_name": "digits_cnn", "model_version": "one"},
            body=digit,
            media_type="application/json",
        ),
        Call("POST", M + "/activations", 200, cnn, body=digit, media_type="application/json"),
        Call(
            "POST",
            MV + "/activations",
            200,
            cnn1,
            body=digit | {"outputs": [{"name": "logits"}]},
            media_type="application/json",
        ),
        Call("POST", M + "/explain", 200, cnn, body=digit, media_type="application/json"),
        Call(
            "POST",
            MV + "/explain",
            200,
            cnn1,
            body=digit,
            media_type="application/json",
            headers={"Accept": "image/png"},
        ),
        Call(
            "POST",
            M + "/explain",
            400,
            {"model_name": "diabetes_mlp"},
            body=_example("diabetes_mlp", "patient-0"),
            media_type="application/json",
        ),
        Call("POST", M + "/evaluate", 200, cnn, body=labelled, media_type="application/json"),
        Call(
            "POST",
            MV + "/evaluate",
            200,
            {"model_name": "diabetes_mlp", "model_version": "1"},
            body=_example("diabetes_mlp", "labelled-20"),
            media_type="application/json",
        ),
        Call(
            "POST",
            M + "/evaluate",
            200,
            {"model_name": "digits_autoencoder"},
            body=_example("digits_autoencoder", "labelled-20"),
            media_type="application/json",
        ),
        Call("POST", M + "/evaluate", 400, cnn, body=digit, media_type="application/json"),
        Call("GET", M + "/weights", 200, cnn),
        Call("GET", MV + "/weights", 200, {"model_name": "diabetes_mlp", "model_version": "1"}),
        Call("GET", M + "/weights", 404, unknown),
        Call("GET", M + "/weights/analysis", 200, cnn),
        Call("GET", MV + "/weights/analysis", 200, cnn1),
        Call("GET", M + "/weights/diff", 200, cnn, query={"base": "1", "target": "2"}),
        Call("GET", M + "/weights/diff", 404, cnn, query={"base": "1", "target": "9"}),
        Call("GET", M + "/weights/{tensor_id}", 200, cnn | {"tensor_id": TENSOR}),
        Call(
            "GET",
            MV + "/weights/{tensor_id}",
            200,
            cnn1 | {"tensor_id": TENSOR},
            query={"bins": "16", "range": "symmetric", "edges_from": "2"},
        ),
        Call("GET", M + "/weights/{tensor_id}", 400, cnn | {"tensor_id": TENSOR}, query={"bins": "0"}),
        Call("GET", M + "/weights/{tensor_id}", 404, cnn | {"tensor_id": "Tnope"}),
        Call("GET", M + "/weights/{tensor_id}/values", 401, cnn | {"tensor_id": TENSOR}),
        Call(
            "GET",
            M + "/weights/{tensor_id}/values",
            403,
            cnn | {"tensor_id": TENSOR},
            headers={"Authorization": f"Bearer {INSPECT_TOKEN}"},
        ),
        Call(
            "GET",
            M + "/weights/{tensor_id}/values",
            200,
            cnn | {"tensor_id": TENSOR},
            headers={"Authorization": f"Bearer {EXPORT_TOKEN}"},
        ),
        Call(
            "GET",
            MV + "/weights/{tensor_id}/values",
            200,
            cnn1 | {"tensor_id": TENSOR},
            headers={"Authorization": f"Bearer {EXPORT_TOKEN}"},
        ),
    ]
    for model, example in (("digits_cnn", "digit-3"), ("diabetes_mlp", "labelled-20")):
        calls.append(Call("GET", "/v2/models/{model_name}/examples", 200, {"model_name": model}))
        calls.append(
            Call("GET", "/v2/models/{model_name}/examples/{example}", 200, {"model_name": model, "example": example})
        )
    for model in ("digits_cnn", "diabetes_mlp", "digits_autoencoder"):
        for suffix in ("", "/ready", "/config", "/stats"):
            calls.append(Call("GET", M + suffix, 200, {"model_name": model}))
            calls.append(Call("GET", MV + suffix, 200, {"model_name": model, "model_version": "1"}))
    for suffix in ("", "/ready", "/config", "/stats"):
        calls.append(Call("GET", M + suffix, 404, unknown))
        calls.append(Call("GET", MV + suffix, 404, cnn | {"model_version": "7"}))
        calls.append(Call("GET", MV + suffix, 400, cnn | {"model_version": "x"}))
    return calls


def _repository_calls() -> list[Call]:
    """Last: they unload a model and load it again, and ask for it while it is away."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    autoencoder = {"model_name": "digits_autoencoder"}
    return [
        Call("POST", "/v2/repository/index", 200),
        Call("POST", "/v2/repository/index", 200, body={"ready": True}, media_type="application/json"),
        Call("POST", "/v2/repository/index", 400, body={"ready": "yes"}, media_type="application/json"),
        Call("POST", "/v2/repository/models/{model_name}/load", 401, autoencoder),
        Call(
            "POST",
            "/v2/repository/models/{model_name}/unload",
            403,
            autoencoder,
            headers={"Authorization": f"Bearer {EXPORT_TOKEN}"},
        ),
        Call(
            "POST",
            "/v2/repository/models/{model_name}/unload",
            200,
            autoencoder,
            body={"parameters": {"unload_dependents": False}},
            media_type="application/json",
            headers=admin,
        ),
        Call("GET", M + "/ready", 404, autoencoder),
        Call("GET", M, 404, autoencoder),
        Call("POST", "/v2/repository/models/{model_name}/load", 200, autoencoder, headers=admin),
        Call(
            "POST",
            "/v2/repository/models/{model_name}/load",
            400,
            autoencoder,
            body={"parameters": {"config": "{}"}},
            media_type="application/json",
            headers=admin,
        ),
        Call("POST", "/v2/repository/models/{model_name}/load", 404, {"model_name": "no_such_model"}, headers=admin),
        Call("GET", M + "/ready", 200, autoencoder),
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tokens = [
        {"name": "exporter", "token": EXPORT_TOKEN, "scopes": ["export"]},
        {"name": "reader", "token": INSPECT_TOKEN, "scopes": ["inspect"]},
    ]
    with serve(
        MODELS,
        tmp_path_factory.mktemp("openapi"),
        admin_token=ADMIN_TOKEN,
        auth_tokens=json.dumps(tokens),
        max_request_bytes=str(MAX_REQUEST_BYTES),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def document(server: RunningServer) -> dict[str, Any]:
    response = httpx.get(f"{server.base_url}/schema/openapi.json", timeout=30)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "delete", "patch")
    }


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema, unresolvable $refs included


def test_every_error_is_documented_as_the_error_object(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"] == {"error": {"type": "string"}}
    for (method, path), operation in _operations(document).items():
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")) and (path, status) != ("/v2/health/ready", "400"):  # readiness says no
                schema = response["content"]["application/json"]["schema"]
                refs = [schema.get("$ref")] + [s.get("$ref") for s in schema.get("oneOf", [])]
                assert "#/components/schemas/Error" in refs, (method, path, status, schema)
                assert "status_code" not in json.dumps(schema), (method, path, status)
        if "{model_name}" in path:
            assert {"400", "404"} <= set(operation["responses"]), (method, path)


def test_bodies_are_described_not_just_strings(document: dict[str, Any]) -> None:
    operations = _operations(document)
    infer = operations[("POST", M + "/infer")]
    assert infer["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InferenceRequest"
    }
    assert "binary" in infer["requestBody"]["description"].lower()
    ok = infer["responses"]["200"]["content"]
    assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/InferenceResponse"}
    assert "application/octet-stream" in ok
    assert "image/png" in operations[("POST", M + "/explain")]["responses"]["200"]["content"]
    for (method, path), operation in operations.items():
        if method == "POST" and path.startswith("/v2/models/"):
            assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
                "InferenceRequest"
            )
        content = operation["responses"]["200"]["content"]
        json_schema = content.get("application/json", {}).get("schema")
        if json_schema is not None:
            assert json_schema != {"type": "string"}, (method, path)
            assert "$ref" in json_schema or json_schema.get("type") == "array", (method, path, json_schema)
    request = document["components"]["schemas"]["InferenceRequest"]
    assert request["required"] == ["inputs"]
    assert set(request["properties"]) == {"id", "parameters", "inputs", "outputs"}
    assert set(document["components"]["schemas"]["RequestInput"]["required"]) == {"name", "shape", "datatype"}


def test_each_operation_keeps_its_security_requirement(document: dict[str, Any]) -> None:
    for (method, path), operation in _operations(document).items():
        if path.startswith("/v2/health/"):
            assert "security" not in operation, (method, path)
        else:
            scopes = [scope for requirement in operation["security"] for scope in requirement.get("bearer", [])]
            assert len(scopes) == 1, (method, path, operation["security"])


def test_real_responses_conform_to_the_document(server: RunningServer, document: dict[str, Any]) -> None:
    """Each call as a schemathesis case, checked by its conformance checks against what the server sent."""
    schema = schemathesis.openapi.from_url(f"{server.base_url}/schema/openapi.json")
    calls = _model_calls() + _repository_calls()
    called = {(call.method, call.path) for call in calls}
    assert called == set(_operations(document)), set(_operations(document)) ^ called
    failures = []
    for call in calls:
        operation = schema[call.path][call.method]
        body = {} if call.body is None else {"body": call.body, "media_type": call.media_type}
        case = operation.Case(
            path_parameters=call.path_parameters or None, query=call.query, headers=call.headers or None, **body
        )
        response = case.call(base_url=server.base_url)
        if response.status_code != call.status:
            failures.append(f"{call.label()}: got {response.status_code} {response.text[:300]}")
            continue
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:  # schemathesis raises a group of the failed checks
            failures.append(f"{call.label()}: {exc}")
    assert not failures, "\n\n".join(failures)
