"""Every malformed request gets a 4xx with {"error": ...} naming what is wrong, and the server keeps serving."""

from __future__ import annotations

import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.protocol.conftest import MAX_REQUEST_BYTES
from tests.server import RunningServer


def simple_body(**overrides: Any) -> dict[str, Any]:
    tensor = {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}
    other = {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": [1.5] * 16}
    body: dict[str, Any] = {"inputs": [tensor, other]}
    body.update(overrides)
    return body


def binary_request(
    header: dict[str, Any], chunks: list[bytes], header_length: int | None = None
) -> tuple[bytes, dict[str, str]]:
    encoded = json.dumps(header).encode()
    length = len(encoded) if header_length is None else header_length
    return encoded + b"".join(chunks), {"Inference-Header-Content-Length": str(length)}


def post(server: RunningServer, path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", content=content, headers=headers or {}, timeout=30)


F32x16 = np.arange(16, dtype=np.float32).tobytes()

CASES: list[tuple[str, str, Any, dict[str, str], int, str]] = [
    # (id, path, body (dict → JSON, bytes → raw), headers, status, message fragment)
    ("malformed-json", "/v2/models/simple/infer", b'{"inputs": [', {}, 400, "malformed JSON"),
    ("not-an-object", "/v2/models/simple/infer", b"[1, 2]", {}, 400, "JSON object"),
    ("no-inputs", "/v2/models/simple/infer", {"inputs": []}, {}, 400, "non-empty list"),
    ("missing-input", "/v2/models/simple/infer", {"inputs": simple_body()["inputs"][:1]}, {}, 400, "INPUT1"),
    (
        "unknown-input",
        "/v2/models/simple/infer",
        simple_body(
            inputs=[*simple_body()["inputs"], {"name": "EXTRA", "shape": [1], "datatype": "FP32", "data": [1]}]
        ),
        {},
        400,
        "EXTRA",
    ),
    (
        "wrong-datatype",
        "/v2/models/simple/infer",
        simple_body(
            inputs=[{**simple_body()["inputs"][0], "datatype": "INT32", "data": [1] * 16}, simple_body()["inputs"][1]]
        ),
        {},
        400,
        "data-type is 'INT32', but model 'simple' expects 'FP32'",
    ),
    (
        "unknown-datatype",
        "/v2/models/simple/infer",
        simple_body(inputs=[{**simple_body()["inputs"][0], "datatype": "FLOAT"}, simple_body()["inputs"][1]]),
        {},
        400,
        "unknown datatype",
    ),
    (
        "wrong-rank",
        "/v2/models/simple/infer",
        simple_body(inputs=[{**simple_body()["inputs"][0], "shape": [16]}, simple_body()["inputs"][1]]),
        {},
        400,
        "rank 1",
    ),
    (
        "fixed-dimension",
        "/v2/models/simple/infer",
        simple_body(inputs=[{**simple_body()["inputs"][0], "shape": [2, 8]}, simple_body()["inputs"][1]]),
        {},
        400,
        "dimension 1 must be 16",
    ),
    (
        "element-count",
        "/v2/models/simple/infer",
        simple_body(inputs=[{**simple_body()["inputs"][0], "data": [1.0] * 15}, simple_body()["inputs"][1]]),
        {},
        400,
        "15 elements",
    ),
    (
        "huge-shape",
        "/v2/models/simple/infer",
        simple_body(inputs=[{**simple_body()["inputs"][0], "shape": [2**60, 16]}, simple_body()["inputs"][1]]),
        {},
        400,
        "more than the limit",
    ),
    (
        "negative-shape",
        "/v2/models/simple/infer",
        simple_body(inputs=[{**simple_body()["inputs"][0], "shape": [-1, 16]}, simple_body()["inputs"][1]]),
        {},
        400,
        "non-negative integers",
    ),
    (
        "text-in-numbers",
        "/v2/models/simple/infer",
        simple_body(inputs=[{**simple_body()["inputs"][0], "data": ["a"] * 16}, simple_body()["inputs"][1]]),
        {},
        400,
        "FP32 data must be numbers",
    ),
    *[
        (
            f"{label}-in-{datatype.lower()}",
            f"/v2/models/identity_{datatype.lower()}/infer",
            {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": datatype, "data": data}]},
            {},
            400,
            f"{datatype} data must be numbers",
        )
        for datatype in ("FP32", "FP64", "INT32", "INT64")
        for label, data in (
            ("null", [1, None, 3, 4]),
            ("string", [1, "1.5", 3, 4]),
            ("boolean", [1, True, 3, 4]),
            ("nested-boolean", [[1, 2], [False, 4]]),
            ("only-booleans", [True, False, True, True]),
        )
    ],
    (
        "ragged-nested-data",
        "/v2/models/identity_int32/infer",
        {"inputs": [{"name": "INPUT0", "shape": [2, 4], "datatype": "INT32", "data": [[1, 2, 3, 4], [5, 6, 7]]}]},
        {},
        400,
        "INPUT0",
    ),
    (
        "int-out-of-range",
        "/v2/models/identity_int8/infer",
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "INT8", "data": [1, 2, 3, 300]}]},
        {},
        400,
        "range of INT8",
    ),
    (
        "float-for-int",
        "/v2/models/identity_int32/infer",
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "INT32", "data": [1, 2.5, 3, 4]}]},
        {},
        400,
        "must be integers",
    ),
    ("unknown-output", "/v2/models/simple/infer", simple_body(outputs=[{"name": "NOPE"}]), {}, 400, "NOPE"),
    (
        "duplicate-output",
        "/v2/models/simple/infer",
        simple_body(outputs=[{"name": "OUTPUT0"}, {"name": "OUTPUT0"}]),
        {},
        400,
        "more than once",
    ),
    (
        "deep-nesting",
        "/v2/models/simple/infer",
        b'{"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}]}",
        {},
        400,
        "malformed JSON",
    ),
    (
        "integer-beyond-64-bits",
        "/v2/models/identity_int64/infer",
        b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "INT64", "data": [1180591620717411303424, 1, 2, 3]}]}',
        {},
        400,
        "INT64",
    ),
    (
        "fp16-overflow",
        "/v2/models/identity_fp16/infer",
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP16", "data": [1e10, 1, 2, 3]}]},
        {},
        400,
        "range of FP16",
    ),
    (
        "fp32-overflow",
        "/v2/models/simple/infer",
        simple_body(inputs=[{**simple_body()["inputs"][0], "data": [1e300] * 16}, simple_body()["inputs"][1]]),
        {},
        400,
        "range of FP32",
    ),
    ("unknown-model", "/v2/models/nope/infer", simple_body(), {}, 404, "unknown model"),
    ("unknown-version", "/v2/models/simple/versions/7/infer", simple_body(), {}, 404, "version 7"),
    ("non-integer-version", "/v2/models/simple/versions/latest/infer", simple_body(), {}, 400, "positive integers"),
    (
        "bf16-as-json",
        "/v2/models/identity_bf16/infer",
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "BF16", "data": [1, 2, 3, 4]}]},
        {},
        400,
        "binary",
    ),
    (
        "shared-memory",
        "/v2/models/simple/infer",
        simple_body(parameters={"shared_memory_region": "r"}),
        {},
        400,
        "shared-memory",
    ),
    (
        "classification",
        "/v2/models/simple/infer",
        simple_body(outputs=[{"name": "OUTPUT0", "parameters": {"classification": 2}}]),
        {},
        400,
        "classification",
    ),
    ("bad-encoding", "/v2/models/simple/infer", simple_body(), {"Content-Encoding": "br"}, 415, "Content-Encoding"),
    ("corrupt-gzip", "/v2/models/simple/infer", b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}, 400, "gzip"),
]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_request(
    server: RunningServer, path: str, body: Any, headers: dict[str, str], status: int, fragment: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = post(server, path, content, headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert fragment in response.json()["error"]


def test_binary_size_mismatch(server: RunningServer) -> None:
    header = {
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "parameters": {"binary_data_size": 60}},
            simple_body()["inputs"][1],
        ]
    }
    content, headers = binary_request(header, [F32x16[:60]])
    response = post(server, "/v2/models/simple/infer", content, headers)
    assert response.status_code == 400
    assert "needs 64" in response.json()["error"]


def test_binary_runs_past_end(server: RunningServer) -> None:
    header = {
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "parameters": {"binary_data_size": 64}},
            simple_body()["inputs"][1],
        ]
    }
    content, headers = binary_request(header, [F32x16[:32]])
    response = post(server, "/v2/models/simple/infer", content, headers)
    assert response.status_code == 400
    assert "past the end" in response.json()["error"]


def test_binary_leftover_bytes(server: RunningServer) -> None:
    header = {
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "parameters": {"binary_data_size": 64}},
            simple_body()["inputs"][1],
        ]
    }
    content, headers = binary_request(header, [F32x16, b"\x00" * 8])
    response = post(server, "/v2/models/simple/infer", content, headers)
    assert response.status_code == 400
    assert "unexpected additional input data" in response.json()["error"]


@pytest.mark.parametrize("value", ["abc", "-5", "999999"])
def test_bad_header_length(server: RunningServer, value: str) -> None:
    response = post(
        server,
        "/v2/models/simple/infer",
        json.dumps(simple_body()).encode(),
        {"Inference-Header-Content-Length": value},
    )
    assert response.status_code == 400
    assert "Inference-Header-Content-Length" in response.json()["error"]


def test_bytes_length_prefixes_checked(server: RunningServer) -> None:
    element = b"abc"
    chunk = len(element).to_bytes(4, "little") + element
    header = {
        "inputs": [
            {"name": "INPUT0", "shape": [1, 4], "datatype": "BYTES", "parameters": {"binary_data_size": len(chunk)}}
        ]
    }
    content, headers = binary_request(header, [chunk])
    response = post(server, "/v2/models/identity_bytes/infer", content, headers)
    assert response.status_code == 400
    assert "fewer than the 4 elements" in response.json()["error"]


def test_raw_binary_request(server: RunningServer) -> None:
    """Triton's raw form: Inference-Header-Content-Length 0, the body is the only input; outputs come binary."""
    data = np.arange(4, dtype=np.int32)
    response = post(server, "/v2/models/identity_int32/infer", data.tobytes(), {"Inference-Header-Content-Length": "0"})
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(response.content[:length])
    assert header["outputs"][0]["shape"] == [1, 4]
    np.testing.assert_array_equal(np.frombuffer(response.content[length:], np.int32), data)


def test_body_over_limit_is_413(server: RunningServer) -> None:
    response = post(server, "/v2/models/simple/infer", b"x" * (MAX_REQUEST_BYTES + 1))
    assert response.status_code == 413
    assert "error" in response.json()


def test_zip_bomb_is_413(server: RunningServer) -> None:
    bomb = gzip.compress(b" " * (MAX_REQUEST_BYTES + 1024))
    assert len(bomb) < MAX_REQUEST_BYTES
    response = post(server, "/v2/models/simple/infer", bomb, {"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "decompressed" in response.json()["error"]


def test_framework_errors_share_the_error_shape(server: RunningServer) -> None:
    missing = httpx.get(f"{server.base_url}/no/such/route")
    assert missing.status_code == 404
    assert "error" in missing.json()
    wrong_method = httpx.get(f"{server.base_url}/v2/models/simple/infer")
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()
    not_ready = httpx.get(f"{server.base_url}/v2/models/nope/ready")
    assert not_ready.status_code == 404
    assert "error" in not_ready.json()


def test_tritonclient_sees_error_messages(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.url)
    tensor = httpclient.InferInput("INPUT0", [1, 16], "INT32")
    tensor.set_data_from_numpy(np.zeros((1, 16), np.int32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("simple", [tensor])
    assert caught.value.status() == "400"
    assert "expects 'FP32'" in caught.value.message()
    with pytest.raises(InferenceServerException) as missing:
        client.infer("no_such_model", [tensor])
    assert missing.value.status() == "404"
    assert not client.is_model_ready("no_such_model")


def test_bad_requests_do_not_disturb_good_ones(server: RunningServer) -> None:
    good = json.dumps(simple_body()).encode()
    bad = [
        case[2] if isinstance(case[2], bytes) else json.dumps(case[2]).encode()
        for case in CASES
        if case[1] == "/v2/models/simple/infer" and not case[3]
    ]

    def one(index: int) -> int:
        if index % 2:
            return post(server, "/v2/models/simple/infer", bad[index % len(bad)]).status_code
        response = post(server, "/v2/models/simple/infer", good)
        assert response.json()["outputs"][0]["data"] == [2.0] * 16
        return response.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(200)))
    assert statuses[0::2] == [200] * 100
    assert all(400 <= status < 500 for status in statuses[1::2])
    assert httpx.get(f"{server.base_url}/v2/health/ready").status_code == 200


def test_boolean_parameters_leave_numeric_data_alone(server: RunningServer) -> None:
    """A `true` elsewhere in the header makes the decoder look for booleans, and finds none in the data."""
    body = {
        "parameters": {"binary_data_output": False},
        "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "INT32", "data": [[1, 2, 3, 4]]}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": False}}],
    }
    response = post(server, "/v2/models/identity_int32/infer", json.dumps(body).encode())
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1, 2, 3, 4]
    booleans = {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "BOOL", "data": [True, False, 1, 0]}]}
    response = post(server, "/v2/models/identity_bool/infer", json.dumps(booleans).encode())
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [True, False, True, False]
