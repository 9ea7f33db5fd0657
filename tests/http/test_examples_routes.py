"""GET /v2/models/{m}/examples[/{example}] on the shipped repository, and every shipped example accepted by
the endpoints it is for (the README's commands that use them run in tests/test_readme.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import RunningServer, serve

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
SHIPPED = {
    "digits_cnn": {"digit-3": "infer", "digit-7": "infer", "labelled-20": "evaluate"},
    "diabetes_mlp": {"patient-0": "infer", "labelled-20": "evaluate"},
    "digits_autoencoder": {"noisy-digit-3": "infer", "labelled-20": "evaluate"},
}
IMAGE_CLASSIFIERS = {"digits_cnn"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve(MODELS, tmp_path_factory.mktemp("logs")) as running:
        yield running


def _client(server: RunningServer) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=60)


@pytest.mark.parametrize("model", SHIPPED)
def test_the_list_names_each_example_with_its_kind_and_tensors(server: RunningServer, model: str) -> None:
    with _client(server) as client:
        response = client.get(f"/v2/models/{model}/examples")
        metadata = client.get(f"/v2/models/{model}").json()
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == model
    assert {e["name"]: e["kind"] for e in body["examples"]} == SHIPPED[model]
    served = [(t["name"], t["datatype"]) for t in metadata["inputs"]]
    for entry in body["examples"]:
        assert entry["description"]
        assert [(t["name"], t["datatype"]) for t in entry["inputs"]] == served
        assert (entry["targets"] is not None) == (entry["kind"] == "evaluate")


@pytest.mark.parametrize(("model", "example"), [(m, e) for m, names in SHIPPED.items() for e in names])
def test_each_example_is_served_as_stored_and_accepted_where_it_belongs(
    server: RunningServer, model: str, example: str
) -> None:
    stored = (MODELS / model / "examples" / f"{example}.json").read_bytes()
    with _client(server) as client:
        response = client.get(f"/v2/models/{model}/examples/{example}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        assert response.content == stored
        if SHIPPED[model][example] == "evaluate":
            evaluated = client.post(f"/v2/models/{model}/evaluate", content=stored)
            assert evaluated.status_code == 200, evaluated.text
            assert evaluated.json()["samples"] == 20
            refused = client.post(f"/v2/models/{model}/infer", content=stored)
            assert refused.status_code == 400
            assert "targets" in refused.json()["error"]
            return
        endpoints = ["infer", "activations", *(["explain"] if model in IMAGE_CLASSIFIERS else [])]
        for endpoint in endpoints:
            answered = client.post(f"/v2/models/{model}/{endpoint}", content=stored)
            assert answered.status_code == 200, (endpoint, answered.text)


def test_a_shipped_digit_is_predicted_as_its_label(server: RunningServer) -> None:
    with _client(server) as client:
        for digit in (3, 7):
            body = client.get(f"/v2/models/digits_cnn/examples/digit-{digit}").content
            logits = client.post("/v2/models/digits_cnn/infer", content=body).json()["outputs"][0]["data"]
            assert max(range(10), key=logits.__getitem__) == digit


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v2/models/digits_cnn/examples/nope", 404, "model 'digits_cnn' has no example 'nope'"),
        ("/v2/models/digits_cnn/examples/%2E%2E", 400, "invalid example name"),
        ("/v2/models/digits_cnn/examples/.staging-x", 400, "invalid example name"),
        ("/v2/models/digits_cnn/examples/digit-3.json", 404, "has no example 'digit-3.json'"),
        # An encoded slash is a path separator to the router: no route has that many segments.
        ("/v2/models/digits_cnn/examples/..%2F1%2Fmanifest", 404, "Not Found"),
        ("/v2/models/nope/examples", 404, "unknown model: 'nope'"),
        ("/v2/models/nope/examples/digit-3", 404, "unknown model: 'nope'"),
        ("/v2/models/%2E%2E/examples", 400, "invalid model name"),
    ],
)
def test_bad_names_are_clear_client_errors(server: RunningServer, path: str, status: int, message: str) -> None:
    with _client(server) as client:
        response = client.get(path)
        assert response.status_code == status, response.text
        assert set(response.json()) == {"error"}
        assert message in response.json()["error"]
        assert client.get("/v2/health/ready").status_code == 200
