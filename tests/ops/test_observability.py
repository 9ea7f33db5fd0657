"""Request ids on every response, JSON log lines that carry them, and Prometheus metrics per app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.ops.logs import JsonFormatter
from service.ops.prometheus import CONTENT_TYPE
from service.settings import Settings
from tests.serving.onnx_models import infer_body, write_version


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    write_version(root, "m", 1)
    write_version(root, "m", 2)
    return root


@pytest.fixture
def client(repository: Path) -> Iterator[TestClient]:  # type: ignore[type-arg]
    with TestClient(create_app(Settings(repository=repository, access_log=True))) as test_client:
        yield test_client


def _samples(client: TestClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:  # type: ignore[type-arg]
    response = client.get("/metrics")
    assert response.status_code == 200
    # Exactly the exposition format's type, one charset (a scraper's media type parser refuses two).
    assert response.headers["content-type"] == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v2/health/live", None, 200),
        ("POST", "/v2/models/m/infer", infer_body(), 200),
        ("POST", "/v2/models/m/infer", {"inputs": "nonsense"}, 400),
        ("POST", "/v2/models/nope/infer", infer_body(), 404),
        ("GET", "/no/such/route", None, 404),
        ("DELETE", "/v2/health/live", None, 405),
        ("POST", "/v2/repository/models/m/unload", None, 403),
    ],
)
def test_every_response_carries_a_request_id(
    client: TestClient,  # type: ignore[type-arg]
    method: str,
    path: str,
    body: object,
    status: int,
) -> None:
    generated = client.request(method, path, json=body)
    assert generated.status_code == status, generated.text
    assert len(generated.headers["x-request-id"]) == 32
    echoed = client.request(method, path, json=body, headers={"X-Request-ID": "trace-42.a:b"})
    assert echoed.headers["x-request-id"] == "trace-42.a:b"
    if status >= 400:
        assert "error" in echoed.json()


@pytest.mark.parametrize("incoming", ["has space", "x" * 129, "semi;colon", "new\tline"])
def test_unsafe_incoming_ids_are_replaced(client: TestClient, incoming: str) -> None:  # type: ignore[type-arg]
    response = client.get("/v2/health/live", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] != incoming
    assert len(response.headers["x-request-id"]) == 32


def test_log_lines_are_json_with_the_request_id(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[type-arg]
    with caplog.at_level("INFO", logger="service"):
        client.post("/v2/models/m/infer", json=infer_body(), headers={"X-Request-ID": "abc-123"})
    access = [r for r in caplog.records if r.name == "service.access"]
    assert access
    line = json.loads(JsonFormatter().format(access[-1]))
    assert line["request_id"] == "abc-123"
    assert line["status"] == 200
    assert line["model"] == "m"
    assert line["version"] == "2"
    assert line["level"] == "info"
    assert {"time", "logger", "message", "duration_ms"} <= set(line)


def test_metrics_count_requests_by_model_version_and_status(client: TestClient) -> None:  # type: ignore[type-arg]
    for _ in range(3):
        assert client.post("/v2/models/m/infer", json=infer_body()).status_code == 200
    assert client.post("/v2/models/m/versions/1/infer", json=infer_body()).status_code == 200
    assert client.post("/v2/models/m/versions/1/infer", json={"inputs": 1}).status_code == 400
    requests = _samples(client, "weightserve_inference_requests_total")
    assert requests[(("model", "m"), ("status", "200"), ("version", "2"))] == 3
    assert requests[(("model", "m"), ("status", "200"), ("version", "1"))] == 1
    assert requests[(("model", "m"), ("status", "400"), ("version", "1"))] == 1
    latency = _samples(client, "weightserve_inference_request_duration_seconds_count")
    assert latency[(("model", "m"), ("version", "2"))] == 3
    assert _samples(client, "weightserve_queue_duration_seconds_count")[(("model", "m"), ("version", "2"))] == 3
    batches = _samples(client, "weightserve_batch_size_count")
    assert batches[(("model", "m"), ("version", "2"))] >= 1  # the warm-up runs outside the metrics
    assert _samples(client, "weightserve_models_loaded") == {(): 2.0}
    http = _samples(client, "weightserve_http_requests_total")
    assert http[(("method", "POST"), ("route", "/v2/models/{model_name}/infer"), ("status", "200"))] == 3


def test_raw_paths_never_become_labels(client: TestClient) -> None:  # type: ignore[type-arg]
    for i in range(5):
        client.get(f"/random/{i}")
    http = _samples(client, "weightserve_http_requests_total")
    assert http[(("method", "GET"), ("route", "unmatched"), ("status", "404"))] == 5
    assert not any("random" in value for labels in http for _, value in labels)


def test_each_app_has_its_own_registry(repository: Path) -> None:
    with TestClient(create_app(Settings(repository=repository))) as first:
        first.post("/v2/models/m/infer", json=infer_body())
        with TestClient(create_app(Settings(repository=repository))) as second:
            assert _samples(second, "weightserve_inference_requests_total") == {}
            assert _samples(first, "weightserve_inference_requests_total") != {}


def test_load_failures_are_counted(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    write_version(root, "m", 1)
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"\xff" * 16)
    with TestClient(create_app(Settings(repository=root))) as client:
        assert _samples(client, "weightserve_model_load_failures_total") == {(("model", "broken"),): 1.0}
        assert _samples(client, "weightserve_models_loaded") == {(): 1.0}


def test_access_log_is_off_by_default(repository: Path, caplog: pytest.LogCaptureFixture) -> None:
    with TestClient(create_app(Settings(repository=repository))) as client:
        with caplog.at_level("INFO", logger="service"):
            client.post("/v2/models/m/infer", json=infer_body())
        assert not [r for r in caplog.records if r.name == "service.access"]


async def test_a_client_that_disconnects_is_not_counted_as_a_server_error(repository: Path) -> None:
    app = create_app(Settings(repository=repository))
    sent: list[dict[str, object]] = []

    async def gone() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async with app.lifespan():
        for path in ("/v2/models/m/infer", "/v2/models/m/activations"):  # the direct path and a Litestar route
            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 1), "server": None,
            }  # fmt: skip
            await app(scope, gone, send)  # type: ignore[arg-type]
        metrics = app.state.metrics.exposition().decode()
    statuses = {
        sample.labels["status"]
        for family in text_string_to_metric_families(metrics)
        if family.name == "weightserve_http_requests"
        for sample in family.samples
    }
    assert statuses == {"499"}
