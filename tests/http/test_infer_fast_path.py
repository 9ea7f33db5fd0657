"""The direct ASGI infer path answers exactly as the Litestar route it bypasses."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.app import create_app
from service.http.infer_fast_path import InferFastPath, infer_target
from service.settings import Settings
from tests import model_factory as mf

Headers = list[tuple[bytes, bytes]]


async def call(app: Any, method: str, path: str, body: bytes, headers: Headers) -> tuple[int, dict[str, str], bytes]:
    chunks = [body[: len(body) // 2], body[len(body) // 2 :]]  # two receive() messages, as a server may send
    messages = [
        {"type": "http.request", "body": chunks[0], "more_body": True},
        {"type": "http.request", "body": chunks[1], "more_body": False},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    start = sent[0]
    names = {key.decode().lower(): value.decode() for key, value in start["headers"]}
    return start["status"], names, b"".join(message.get("body", b"") for message in sent[1:])


def document(**changes: Any) -> bytes:
    base: dict[str, Any] = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 4], "data": list(range(8))}]}
    base.update(changes)
    return json.dumps(base).encode()


def length(body: bytes) -> Headers:
    return [(b"content-length", str(len(body)).encode())]


CASES: list[tuple[str, str, bytes, Headers]] = [
    ("ok", "/v2/models/echo/infer", document(id="r-1"), []),
    ("ok, version", "/v2/models/echo/versions/1/infer", document(), []),
    ("binary output", "/v2/models/echo/infer", document(parameters={"binary_data_output": True}), []),
    ("gzip body", "/v2/models/echo/infer", gzip.compress(document()), [(b"content-encoding", b"gzip")]),
    ("gzip answer", "/v2/models/echo/infer", document(), [(b"accept-encoding", b"gzip")]),
    ("unknown model", "/v2/models/nope/infer", document(), []),
    ("unknown version", "/v2/models/echo/versions/7/infer", document(), []),
    ("bad version", "/v2/models/echo/versions/x1/infer", document(), []),
    ("malformed JSON", "/v2/models/echo/infer", b'{"inputs": [', []),
    (
        "wrong shape",
        "/v2/models/echo/infer",
        document(inputs=[{"name": "INPUT0", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]),
        [],
    ),
    (
        "wrong datatype",
        "/v2/models/echo/infer",
        document(inputs=[{"name": "INPUT0", "datatype": "INT32", "shape": [1, 4], "data": [1, 2, 3, 4]}]),
        [],
    ),
    ("unknown encoding", "/v2/models/echo/infer", document(), [(b"content-encoding", b"br")]),
    ("too large", "/v2/models/echo/infer", b"x" * 5000, []),
    ("bad content-length", "/v2/models/echo/infer", document(), [(b"content-length", b"ten")]),
]


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    mf.save(mf.identity("FP32", width=4), tmp_path, "echo")
    return tmp_path


@pytest.mark.parametrize(("label", "path", "body", "headers"), CASES, ids=[case[0] for case in CASES])
async def test_the_direct_path_answers_as_the_litestar_route(
    repository: Path, label: str, path: str, body: bytes, headers: Headers
) -> None:
    app = create_app(Settings(repository=repository, log_level="warning", max_request_bytes=4096))
    fast_path = app.asgi_handler._app  # type: ignore[attr-defined]  # inside the request middleware
    assert isinstance(fast_path, InferFastPath)
    if not any(key == b"content-length" for key, _ in headers):
        headers = [*headers, *length(body)]
    async with app.lifespan():
        app.asgi_handler = fast_path
        direct = await call(app, "POST", path, body, headers)
        app.asgi_handler = fast_path._app  # Litestar's own routing, DI and response path
        routed = await call(app, "POST", path, body, headers)
    assert direct[0] == routed[0], label
    assert direct[2] == routed[2], label
    for name in ("content-type", "content-encoding", "inference-header-content-length", "retry-after"):
        assert direct[1].get(name) == routed[1].get(name), (label, name)
    if direct[0] >= 400:
        assert set(json.loads(direct[2])) == {"error"}


async def test_other_methods_and_paths_go_to_litestar(repository: Path) -> None:
    app = create_app(Settings(repository=repository, log_level="warning"))
    async with app.lifespan():
        status, _, body = await call(app, "GET", "/v2/models/echo/infer", b"", [])
        assert status == 405
        assert set(json.loads(body)) == {"error"}
        status, _, body = await call(app, "GET", "/v2/models/echo", b"", [])
        assert status == 200
        assert json.loads(body)["name"] == "echo"


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/v2/models/m/infer", ("m", None)),
        ("/v2/models/m/versions/3/infer", ("m", "3")),
        ("/v2/models/m/versions//infer", None),
        ("/v2/models//infer", None),
        ("/v2/models/m/infer/", None),
        ("/v2/models/m/ready", None),
        ("/v1/models/m/infer", None),
        ("/x/v2/models/m/infer", None),
        ("/v2/models/infer", None),
        ("/v2/models/a/b/infer", None),
        ("/v2/models/m/versions/3/x/infer", None),
        ("/v2/models/m/version/3/infer", None),
        ("/v2/models/versions/3/infer", None),
        ("/v2/models//versions/3/infer", None),
        ("/v2/models/m/versions/versions/infer", ("m", "versions")),
    ],
)
def test_infer_target_recognises_exactly_the_infer_paths(path: str, target: tuple[str, str | None] | None) -> None:
    assert infer_target(path) == target


async def test_a_json_request_read_natively_reaches_the_model_as_the_general_path_reads_it(repository: Path) -> None:
    """The compiled reader takes the plain request; an escaped id sends the same numbers down the general
    path. The identity model answers both with the numbers as float32, bit for bit."""
    numbers = [0.30000001192092896, -0.0, 1e-45, 3.4028234663852886e38, 7, -123456789012, 1.17549435e-38, 0.1]
    text = '{"id": "%s", "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 4], "data": [%s]}]}'
    data = ", ".join(["0.30000001192092896", "-0.0", "1e-45", "3.4028234663852886e38", "7", "-123456789012", "1.17549435e-38", "1E-1"])
    app = create_app(Settings(repository=repository, log_level="warning"))
    async with app.lifespan():
        answers = []
        for request_id in ("plain", "esc\\u0061ped"):
            body = (text % (request_id, data)).encode()
            status, _, answer = await call(app, "POST", "/v2/models/echo/infer", body, length(body))
            assert status == 200, answer
            answers.append(json.loads(answer))
    plain, escaped = answers
    assert (plain["id"], escaped["id"]) == ("plain", "escaped")
    assert plain["outputs"] == escaped["outputs"]
    expected = [float(value) for value in np.asarray(numbers, dtype=np.float32)]
    got = plain["outputs"][0]["data"]
    assert [struct.pack("<f", value) for value in got] == [struct.pack("<f", value) for value in expected]
