"""The dashboard's Try page for any model, in headless Chromium against a real server on loopback:
the form is built from the model's signature, prefilled from the model's example requests, filled
from uploaded JSON and .npy files (checked against the signature in the page), and every output is
shown with the values the API gives; server errors are shown as the server words them."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.http.ui.browser import ARTIFACTS, MODELS, NEEDS_CHROMIUM, Watch, assert_not_blank, js_num
from tests.server import RunningServer, serve

pytestmark = [pytest.mark.browser, NEEDS_CHROMIUM, pytest.mark.timeout(300)]

VIEWPORT = {"width": 1366, "height": 900}
FOREIGN = "vad"
TYPED = "typed"
HIDDEN = 16
DONE = "#result[data-state='done']"
METHODS = {"cam": "CAM", "grad-cam": "Grad-CAM", "occlusion": "Occlusion"}


def _foreign_model(path: Path) -> None:
    """Like a voice-activity detector exported elsewhere: x FP32 [batch, 8], state FP32 [2, batch, 16]
    (batch on axis 1) and sr INT64 [] (a 0-d sample rate) -> prob [batch, 1], state_out [2, batch, 16].
    No manifest, no examples: the page knows only its signature."""
    rng = np.random.default_rng(3)

    def init(name: str, array: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(array), name)

    nodes = [
        helper.make_node("Gemm", ["x", "w_in"], ["frame"]),
        helper.make_node("Cast", ["sr"], ["sr_float"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["sr_float", "reference_rate"], ["rate_scale"]),
        helper.make_node("Mul", ["frame", "rate_scale"], ["scaled"]),
        helper.make_node("Unsqueeze", ["scaled", "axis0"], ["scaled_3d"]),
        helper.make_node("Add", ["state", "scaled_3d"], ["mixed"]),
        helper.make_node("Tanh", ["mixed"], ["state_out"]),
        helper.make_node("ReduceMean", ["state_out", "axis0"], ["summary"], keepdims=0),
        helper.make_node("Gemm", ["summary", "w_out", "b_out"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    graph = helper.make_graph(
        nodes,
        FOREIGN,
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", HIDDEN]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, "batch", HIDDEN]),
        ],
        [
            init("w_in", rng.normal(size=(8, HIDDEN)).astype(np.float32)),
            init("w_out", rng.normal(size=(HIDDEN, 1)).astype(np.float32)),
            init("b_out", np.zeros(1, np.float32)),
            init("reference_rate", np.array(16000.0, np.float32)),
            init("axis0", np.array([0], np.int64)),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))


def _typed_model(path: Path) -> None:
    """Inputs of the datatypes a number box does not cover: mask BOOL [batch, 4], words BYTES
    [batch, 2] and a 0-d FP16 scale -> their negation, the words, and the scale squared."""
    nodes = [
        helper.make_node("Not", ["mask"], ["not_mask"]),
        helper.make_node("Identity", ["words"], ["words_out"]),
        helper.make_node("Mul", ["scale", "scale"], ["squared"]),
    ]
    graph = helper.make_graph(
        nodes,
        TYPED,
        [
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", 4]),
            helper.make_tensor_value_info("words", TensorProto.STRING, ["batch", 2]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT16, []),
        ],
        [
            helper.make_tensor_value_info("not_mask", TensorProto.BOOL, ["batch", 4]),
            helper.make_tensor_value_info("words_out", TensorProto.STRING, ["batch", 2]),
            helper.make_tensor_value_info("squared", TensorProto.FLOAT16, []),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (MODELS / "digits_cnn" / "examples").is_dir():
        pytest.fail("the shipped model repository (models/, with its examples) is missing")
    root = tmp_path_factory.mktemp("try") / "models"
    shutil.copytree(MODELS, root)
    _foreign_model(root / FOREIGN / "1" / "model.onnx")
    _typed_model(root / TYPED / "1" / "model.onnx")
    return root


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve(repository, tmp_path_factory.mktemp("logs")) as running:
        yield running


class Tab:
    """A page on the server, watched for console errors, page errors and requests leaving the origin."""

    def __init__(self, page: Any, watch: Watch, base_url: str) -> None:
        self.page = page
        self.watch = watch
        self.base_url = base_url
        self.posts: list[str] = []
        page.on("request", lambda r: self.posts.append(r.url) if r.method == "POST" else None)

    def open(self, route: str) -> None:
        self.page.goto(f"{self.base_url}/ui/{route}")
        self.page.wait_for_selector("main[data-ready='true']", timeout=60_000)

    def run_and_wait(self) -> None:
        before = self.page.locator("#result").get_attribute("data-run") or ""
        self.page.click("#run")
        self.page.wait_for_function(
            "before => { const r = document.querySelector('#result');"
            " return (r.dataset.run || '') !== before && r.dataset.state !== 'running'; }",
            arg=before,
        )

    def output(self, name: str) -> tuple[list[int], list[float]]:
        panel = self.page.locator(f"#result section.output[data-output='{name}']")
        shape = json.loads(panel.get_attribute("data-shape") or "null")
        values = json.loads(panel.get_attribute("data-values") or "null")
        return shape, values

    def request(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.page.locator("#result").get_attribute("data-request") or "null")
        return body

    def infer_posts(self) -> int:
        return sum(1 for url in self.posts if url.endswith("/infer"))


@pytest.fixture
def tab(browser: Any, server: RunningServer) -> Iterator[Tab]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    watch = Watch(server.base_url)
    page.on("console", watch.on_console)
    page.on("pageerror", watch.on_page_error)
    page.on("request", watch.on_request)
    try:
        yield Tab(page, watch, server.base_url)
    finally:
        context.close()
    assert watch.foreign == [], f"requests left the origin: {watch.foreign}"


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button, canvas, svg[role=img]')]
  .filter(el => !(el.getAttribute('aria-label') || (el.labels && el.labels.length)
    || (el.tagName === 'BUTTON' && el.textContent.trim())))
  .map(el => el.outerHTML.slice(0, 120))"""


def screenshot(tab: Tab, name: str) -> None:
    """Every control and chart has a name; the page is saved as a test artifact and is not blank."""
    assert tab.page.evaluate(UNLABELLED) == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    tab.page.screenshot(path=str(path), full_page=True)
    assert_not_blank(path)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def upload(tab: Tab, selector: str, files: dict[str, bytes]) -> None:
    payload = [{"name": name, "mimeType": "application/octet-stream", "buffer": data} for name, data in files.items()]
    tab.page.set_input_files(selector, payload)


def reference(repository: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(repository / FOREIGN / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return dict(zip(["prob", "state_out"], session.run(["prob", "state_out"], feeds), strict=True))


def example(api: httpx.Client, model: str, name: str) -> dict[str, Any]:
    response = api.get(f"/v2/models/{model}/examples/{name}")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def post(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(path, json=body)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def evaluation(body: dict[str, Any]) -> bool:
    return len(body["inputs"]) > 1 and body["inputs"][-1]["name"] == "targets"


# ------------------------------------------------------------------------ the shipped models


def test_digits_cnn_is_prefilled_from_its_examples_and_predicts_their_labels(tab: Tab, api: httpx.Client) -> None:
    tab.open("#/models/digits_cnn/try")
    listing = api.get("/v2/models/digits_cnn/examples").json()["examples"]
    shown = tab.page.locator("#examples button[data-example]").evaluate_all("bs => bs.map(b => b.dataset.example)")
    assert shown == [e["name"] for e in listing]
    singles = [e["name"] for e in listing if e["kind"] == "infer" and re.fullmatch(r"digit-\d", e["name"])]
    assert singles, "digits_cnn ships single-digit examples"
    # the page opened on the first one, already answered
    tab.page.wait_for_selector(DONE, timeout=60_000)
    assert tab.page.locator(f"#examples button[data-example='{singles[0]}']").get_attribute("aria-pressed") == "true"
    for name in singles:
        if tab.page.locator(f"#examples button[data-example='{name}']").get_attribute("aria-pressed") != "true":
            before = tab.page.locator("#result").get_attribute("data-run")
            tab.page.click(f"#examples button[data-example='{name}']")
            tab.page.wait_for_function(
                "b => { const r = document.querySelector('#result'); return r.dataset.run !== b && r.dataset.state === 'done'; }",
                arg=before,
            )
        body = example(api, "digits_cnn", name)
        assert tab.request() == {"inputs": body["inputs"]}  # the example, sent as it is
        label = int(name.split("-")[1])
        logits = post(api, "/v2/models/digits_cnn/infer", body)["outputs"][0]["data"]
        assert int(np.argmax(logits)) == label
        assert tab.page.locator("#prediction").inner_text() == str(label)
        assert int(tab.page.locator("#prediction").get_attribute("data-index") or -1) == label
        shape, values = tab.output("logits")
        assert shape == [1, 10]
        np.testing.assert_allclose(values, logits, rtol=1e-6)
        # the pad shows the example's pixels, and the heat map says which method the server chose
        pixels = json.loads(tab.page.locator("#pad").get_attribute("data-pixels") or "[]")
        np.testing.assert_allclose(pixels, body["inputs"][0]["data"], rtol=1e-6)
        explained = post(api, "/v2/models/digits_cnn/explain", body)
        method = METHODS[explained["method"]]
        assert tab.page.locator("#heatmap").get_attribute("data-method") == explained["method"]
        assert f"{method} (chosen by the server)" in tab.page.locator("#heatmap").inner_text()
        assert tab.page.locator(f"#heatmap canvas[aria-label='{method} heat map for class {label}']").count() == 1
    screenshot(tab, "try-examples-digits")
    assert tab.watch.errors == []


def test_an_evaluation_example_goes_to_evaluate_and_shows_its_metrics(tab: Tab, api: httpx.Client) -> None:
    for model, metric in (("digits_cnn", "accuracy"), ("diabetes_mlp", "r2"), ("digits_autoencoder", "psnr")):
        tab.open(f"#/models/{model}/try")
        tab.page.wait_for_selector(DONE, timeout=60_000)
        listing = api.get(f"/v2/models/{model}/examples").json()["examples"]
        name = next(e["name"] for e in listing if e["kind"] == "evaluate")
        tab.page.click(f"#examples button[data-example='{name}']")
        tab.page.wait_for_selector(f"{DONE} #metrics[data-{metric}]", timeout=60_000)
        body = example(api, model, name)
        assert evaluation(body)
        metrics = post(api, f"/v2/models/{model}/evaluate", body)
        panel = tab.page.locator("#metrics")
        assert float(panel.get_attribute(f"data-{metric}") or "nan") == pytest.approx(metrics[metric], rel=1e-9)
        assert tab.page.locator("#targets").is_visible()
        assert tab.page.locator("#run").inner_text() == "Run and evaluate"
        if model == "digits_cnn":
            assert js_num(metrics["cross_entropy"]) in panel.inner_text()
            matrix = tab.page.locator("#confusion tbody tr")
            assert matrix.count() == len(metrics["confusion_matrix"])
            predicted = json.loads(tab.page.locator("#predictions").get_attribute("data-predicted") or "[]")
            logits = post(api, "/v2/models/digits_cnn/infer", {"inputs": body["inputs"][:-1]})["outputs"][0]
            assert predicted == np.argmax(np.reshape(logits["data"], logits["shape"]), axis=1).tolist()
            assert np.mean(np.equal(predicted, body["inputs"][-1]["data"])) == pytest.approx(metrics["accuracy"])
        if model == "digits_autoencoder":
            assert f"{js_num(metrics['psnr'])} dB" in panel.inner_text()
            assert js_num(metrics["ssim"]) in panel.inner_text()
            assert panel.locator("canvas").count() == 3  # input, target, output of the first sample
            screenshot(tab, "try-evaluate-autoencoder")
        # dropping the targets goes back to plain inference
        tab.page.click("#drop-targets")
        tab.run_and_wait()
        assert tab.page.locator("#metrics").count() == 0
    assert tab.watch.errors == []


def test_the_autoencoders_output_is_drawn_as_an_image(tab: Tab, api: httpx.Client) -> None:
    tab.open("#/models/digits_autoencoder/try")
    tab.page.wait_for_selector(DONE, timeout=60_000)
    sent = tab.request()
    answer = post(api, "/v2/models/digits_autoencoder/infer", sent)["outputs"][0]
    shape, values = tab.output("reconstruction")
    assert shape == answer["shape"] == [1, 1, 8, 8]
    np.testing.assert_allclose(values, answer["data"], rtol=1e-6)
    picture = tab.page.locator(
        "section.output[data-output='reconstruction'] canvas[aria-label='output reconstruction as an image']"
    )
    assert picture.count() == 1
    # the picture is the values: darker where the reconstruction is larger (0 white .. 16 black)
    grey = picture.evaluate(
        """c => { const x = c.getContext('2d'); const cell = c.width / 8; const out = [];
          for (let r = 0; r < 8; r++) for (let k = 0; k < 8; k++) {
            out.push(x.getImageData(Math.floor((k + 0.5) * cell), Math.floor((r + 0.5) * cell), 1, 1).data[0]); }
          return out; }"""
    )
    expected = [round(255 * (1 - min(max(v / 16, 0), 1))) for v in answer["data"]]
    assert max(abs(a - b) for a, b in zip(grey, expected, strict=True)) <= 1
    text = tab.page.locator("section.output[data-output='reconstruction'] .preview").inner_text()
    assert text.startswith("[" + js_num(answer["data"][0]))
    assert "(64 values)" in text
    assert tab.watch.errors == []


def test_the_regressors_fields_are_named_and_predict_what_the_api_predicts(tab: Tab, api: httpx.Client) -> None:
    tab.open("#/models/diabetes_mlp/try")
    tab.page.wait_for_selector(DONE, timeout=60_000)
    features = api.get("/ui/manifest/diabetes_mlp/default").json()["dataset"]["features"]
    labels = tab.page.locator("fieldset[data-input='features'] .form-grid label")
    assert [labels.nth(i).inner_text().strip() for i in range(labels.count())] == features
    tab.page.fill("#in0-v0", "61")
    tab.run_and_wait()
    sent = tab.request()
    assert sent["inputs"][0]["data"][0] == 61
    expected = post(api, "/v2/models/diabetes_mlp/infer", sent)["outputs"][0]["data"][0]
    assert tab.page.locator("#prediction").inner_text() == js_num(expected, 5)
    assert float(tab.page.locator("#prediction").get_attribute("data-value") or "nan") == pytest.approx(expected)
    # an empty field is refused in the page, before any request
    posts = tab.infer_posts()
    tab.page.fill("#in0-v3", "")
    tab.page.click("#run")
    tab.page.wait_for_selector("#result[data-state='invalid']")
    assert "input 'features' element 3 is empty or NaN" in tab.page.locator("#result .error").inner_text()
    assert tab.page.locator("#in0-problem").is_visible()
    assert tab.infer_posts() == posts
    assert tab.watch.errors == []


# ------------------------------------------------------------------------ a model from elsewhere


def test_a_foreign_model_is_called_from_its_signature_with_every_output_shown(
    tab: Tab, repository: Path, api: httpx.Client
) -> None:
    tab.open(f"#/models/{FOREIGN}/try")
    page = tab.page
    # every input, with its datatype and shape, the scalar included; nothing guessed
    assert page.locator("#task").count() == 0
    rows = page.locator("#signature tbody tr").evaluate_all(
        "rs => rs.map(r => [...r.children].map(c => c.textContent))"
    )
    assert rows == [
        ["input", "x", "FP32", "[-1, 8]"],
        ["input", "state", "FP32", f"[2, -1, {HIDDEN}]"],
        ["input", "sr", "INT64", "[]"],
        ["output", "prob", "FP32", "[-1, 1]"],
        ["output", "state_out", "FP32", f"[2, -1, {HIDDEN}]"],
    ]
    assert "ships no example requests" in page.locator("#examples").inner_text()
    assert page.locator("fieldset[data-input='sr']").inner_text().count("a scalar (0-d)") == 1
    assert page.locator("#in2-v0").get_attribute("step") == "1"  # INT64: whole numbers
    # dynamic dims are editable, fixed ones are not
    assert page.locator("#in1-dim1").count() == 1
    assert page.locator("#in1-dim0").count() == 0

    rng = np.random.default_rng(7)
    batch = 2
    x = rng.normal(size=(batch, 8)).astype(np.float32)
    state = rng.normal(size=(2, batch, HIDDEN)).astype(np.float32)
    sr = np.array(8000, np.int64)
    # batch 2: x grows to 2 x 8 (a textarea now), state's axis 1 follows
    page.fill("#in0-dim0", str(batch))
    page.locator("#in0-dim0").dispatch_event("change")
    page.fill("#in1-dim1", str(batch))
    page.locator("#in1-dim1").dispatch_event("change")
    page.fill("#in0-values", json.dumps(x.tolist()))
    page.locator("#in0-values").dispatch_event("change")
    page.fill("#in1-values", json.dumps(state.tolist()))
    page.locator("#in1-values").dispatch_event("change")
    page.fill("#in2-v0", str(int(sr)))
    tab.run_and_wait()
    sent = {t["name"]: t for t in tab.request()["inputs"]}
    assert sent["sr"] == {"name": "sr", "datatype": "INT64", "shape": [], "data": [8000]}
    assert sent["state"]["shape"] == [2, batch, HIDDEN]
    expected = reference(repository, {"x": x, "state": state, "sr": sr})
    for name in ("prob", "state_out"):
        shape, values = tab.output(name)
        assert shape == list(expected[name].shape)
        np.testing.assert_allclose(values, expected[name].reshape(-1), rtol=1e-5, atol=1e-6)
        panel = page.locator(f"section.output[data-output='{name}']")
        assert f"FP32 {json.dumps(list(expected[name].shape))}" in panel.locator("h3").inner_text()
        assert f"({expected[name].size} values)" in panel.locator(".preview").inner_text()
    # prob [2, 1] as bars, state_out [2, 2, 16] has no chart; [2, 1, 16] at batch 1 is a grid
    assert page.locator("section.output[data-output='prob'] svg[role='img'] rect").count() == batch
    screenshot(tab, "try-foreign")

    page.fill("#in0-dim0", "1")
    page.locator("#in0-dim0").dispatch_event("change")
    page.fill("#in1-dim1", "1")
    page.locator("#in1-dim1").dispatch_event("change")
    tab.run_and_wait()
    kept = {t["name"]: t for t in tab.request()["inputs"]}
    assert kept["x"]["data"] == pytest.approx(x[:1].reshape(-1).tolist())  # shrinking keeps the leading values
    expected = reference(
        repository, {"x": x[:1], "state": np.asarray(kept["state"]["data"], np.float32).reshape(2, 1, HIDDEN), "sr": sr}
    )
    shape, values = tab.output("prob")
    assert shape == [1, 1]
    assert float(page.locator("#prediction").get_attribute("data-value") or "nan") == pytest.approx(
        float(expected["prob"][0, 0]), rel=1e-5
    )
    grid = page.locator(
        f"section.output[data-output='state_out'] canvas[aria-label='state_out as a 2 × {HIDDEN} grid']"
    )
    assert grid.count() == 1
    assert tab.watch.errors == []


def test_bool_bytes_and_fp16_inputs_have_their_own_fields(tab: Tab) -> None:
    tab.open(f"#/models/{TYPED}/try")
    page = tab.page
    assert [page.locator(f"#in0-v{i}").get_attribute("type") for i in range(4)] == ["checkbox"] * 4
    assert [page.locator(f"#in1-v{i}").get_attribute("type") for i in range(2)] == ["text"] * 2
    assert page.locator("#in2-v0").get_attribute("step") == "any"
    page.check("#in0-v1")
    page.check("#in0-v2")
    page.fill("#in1-v0", "héllo")
    page.fill("#in1-v1", "wörld")
    page.fill("#in2-v0", "1.5")
    tab.run_and_wait()
    sent = {t["name"]: t for t in tab.request()["inputs"]}
    assert sent["mask"]["data"] == [False, True, True, False]
    assert sent["scale"] == {"name": "scale", "datatype": "FP16", "shape": [], "data": [1.5]}
    assert tab.output("not_mask") == ([1, 4], [True, False, False, True])
    assert tab.output("words_out") == ([1, 2], ["héllo", "wörld"])
    assert tab.output("squared") == ([], [2.25])
    assert (
        "[true, false, false, true] (4 values)"
        in page.locator("section.output[data-output='not_mask'] .preview").inner_text()
    )
    # a request body with BOOL as 0 / 1 and a batch of two
    body = {
        "inputs": [
            {"name": "mask", "datatype": "BOOL", "shape": [2, 4], "data": [[1, 1, 0, 0], [0, 0, 0, 1]]},
            {"name": "words", "datatype": "BYTES", "shape": [2, 2], "data": ["a", "b", "c", "d"]},
        ]
    }
    upload(tab, "#upload", {"typed.json": json.dumps(body).encode()})
    page.wait_for_function("() => document.querySelector('#upload-status').textContent.startsWith('Loaded')")
    tab.run_and_wait()
    assert tab.output("not_mask") == ([2, 4], [False, False, True, True, True, True, True, False])
    assert tab.output("words_out") == ([2, 2], ["a", "b", "c", "d"])
    # BOOL data that is not 0 / 1 is refused before sending
    bad = {"inputs": [{"name": "mask", "datatype": "BOOL", "shape": [1, 4], "data": [0, 2, 0, 0]}]}
    upload(tab, "#upload", {"bad.json": json.dumps(bad).encode()})
    page.wait_for_function("() => document.querySelector('#upload-status').textContent.startsWith('Not loaded')")
    assert (
        "input 'mask' element 1 is 2; BOOL elements are true / false (or 0 / 1)"
        in page.locator("#upload-status").inner_text()
    )
    assert tab.watch.errors == []


def test_npy_files_fill_the_inputs_they_are_named_after(tab: Tab, repository: Path) -> None:
    tab.open(f"#/models/{FOREIGN}/try")
    rng = np.random.default_rng(11)
    feeds = {
        "x": rng.normal(size=(3, 8)).astype(np.float32),
        "state": rng.normal(size=(2, 3, HIDDEN)).astype(np.float32),
        "sr": np.array(16000, np.int64),  # a 0-d .npy
    }
    upload(tab, "#upload", {f"{name}.npy": npy(array) for name, array in feeds.items()})
    status = tab.page.locator("#upload-status")
    status.wait_for()
    assert "Loaded" in status.inner_text(), status.inner_text()
    assert tab.page.locator("#in0-dim0").input_value() == "3"
    assert tab.page.locator("#in1-dim1").input_value() == "3"
    tab.run_and_wait()
    expected = reference(repository, feeds)
    for name in ("prob", "state_out"):
        shape, values = tab.output(name)
        assert shape == list(expected[name].shape)
        np.testing.assert_allclose(values, expected[name].reshape(-1), rtol=1e-5, atol=1e-6)
    assert {t["name"]: t["data"] for t in tab.request()["inputs"]}["sr"] == [16000]
    assert tab.watch.errors == []


def test_a_json_request_body_and_a_plain_array_are_uploaded(tab: Tab, repository: Path, api: httpx.Client) -> None:
    tab.open(f"#/models/{FOREIGN}/try")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 8)).astype(np.float32)
    state = rng.normal(size=(2, 1, HIDDEN)).astype(np.float32)
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 8], "data": x.tolist()},  # nested data
            {"name": "state", "datatype": "FP32", "shape": [2, 1, HIDDEN], "data": state.reshape(-1).tolist()},
            {"name": "sr", "datatype": "INT64", "shape": [], "data": 12000},
        ]
    }
    upload(tab, "#upload", {"request.json": json.dumps(body).encode()})
    tab.page.wait_for_function("() => document.querySelector('#upload-status').textContent.startsWith('Loaded')")
    tab.run_and_wait()
    expected = reference(repository, {"x": x, "state": state, "sr": np.array(12000, np.int64)})
    _, values = tab.output("state_out")
    np.testing.assert_allclose(values, expected["state_out"].reshape(-1), rtol=1e-5, atol=1e-6)

    # a plain nested array for a one-input model, through the input's own file field
    tab.open("#/models/diabetes_mlp/try")
    tab.page.wait_for_selector(DONE, timeout=60_000)
    rows = [
        [50.0, 1.0, 25.0, 90.0, 190.0, 110.0, 50.0, 4.0, 4.6, 90.0],
        [30.0, 2.0, 30.0, 100.0, 200.0, 120.0, 40.0, 5.0, 5.0, 95.0],
    ]
    upload(tab, "#in0-file", {"two-patients.json": json.dumps(rows).encode()})
    tab.page.wait_for_function("() => document.querySelector('#in0-dim0').value === '2'")
    tab.run_and_wait()
    expected_rows = post(
        api,
        "/v2/models/diabetes_mlp/infer",
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 10], "data": rows}]},
    )["outputs"][0]["data"]
    shape, values = tab.output("prediction")
    assert shape == [2, 1]
    np.testing.assert_allclose(values, expected_rows, rtol=1e-6)
    assert tab.watch.errors == []


def test_files_that_do_not_fit_the_signature_are_refused_in_the_page(tab: Tab) -> None:
    tab.open(f"#/models/{FOREIGN}/try")
    status = tab.page.locator("#upload-status")
    refusals = [
        (
            {"state.npy": npy(np.zeros((2, 1, 8), np.float32))},
            "state.npy: input 'state' takes shape [2, -1, 16]; this is [2, 1, 8] (dimension 2 is 8, the model takes 16)",
        ),
        (
            {"x.npy": npy(np.zeros((1, 8), np.float64))},
            "x.npy holds float64 (FP64); input 'x' takes FP32: save it with array.astype(np.float32)",
        ),
        ({"sr.npy": npy(np.array([16000], np.int64))}, "sr.npy: input 'sr' takes rank 0 []; this is rank 1 [1]"),
        ({"x.npy": npy(np.zeros((1, 8), np.complex64))}, "x.npy holds complex numbers ('<c8')"),
        ({"x.npy": npy(np.zeros((1, 8), ">f4"))}, "x.npy is big-endian ('>f4')"),
        ({"x.npy": npy(np.asfortranarray(np.zeros((8, 8), np.float32)))}, "x.npy is in Fortran order"),
        ({"inputs.json": b"[1, 2]"}, "a plain array fits a model with one input; this one has 'x', 'state', 'sr'"),
        (
            {
                "ragged.json": json.dumps(
                    {"inputs": [{"name": "x", "datatype": "FP32", "data": [[1, 2], [3]]}]}
                ).encode()
            },
            "ragged.json: 'x' data is ragged: element 0 has shape [2], element 1 has [1]",
        ),
        (
            {"frame.npy": npy(np.zeros((1, 8), np.float32))},
            "name the file after the input it fills (x.npy, state.npy, sr.npy)",
        ),
        (
            {
                "body.json": json.dumps(
                    {"inputs": [{"name": "audio", "datatype": "FP32", "shape": [1], "data": [0]}]}
                ).encode()
            },
            "the model has no input 'audio' (its inputs: 'x', 'state', 'sr')",
        ),
    ]
    for files, message in refusals:
        upload(tab, "#upload", files)
        tab.page.wait_for_function(
            "m => { const s = document.querySelector('#upload-status'); return s.textContent.includes(m); }",
            arg=message,
        )
        assert status.get_attribute("role") == "alert"
        assert status.inner_text().startswith("Not loaded: ")
    # nothing was applied: the form still holds its defaults, and nothing was sent
    assert json.loads(tab.page.locator("#in1-values").input_value()) == [[[0] * HIDDEN], [[0] * HIDDEN]]
    assert tab.infer_posts() == 0
    screenshot(tab, "try-refused-upload")
    assert tab.watch.errors == []


def test_the_servers_error_is_shown_as_the_server_words_it(tab: Tab, api: httpx.Client) -> None:
    tab.open(f"#/models/{FOREIGN}/try")
    # state says batch 2 while x says 1: only the server knows both dims are the batch
    tab.page.fill("#in1-dim1", "2")
    tab.page.locator("#in1-dim1").dispatch_event("change")
    tab.run_and_wait()
    assert tab.page.locator("#result").get_attribute("data-state") == "error"
    sent = tab.request()
    refused = api.post(f"/v2/models/{FOREIGN}/infer", json=sent)
    assert refused.status_code == 400
    message = refused.json()["error"]
    shown = tab.page.locator("#result .error[role='alert']").inner_text()
    assert shown == f"/v2/models/{FOREIGN}/infer: {message}"
    # the only console error is the browser's own note about the 400 response
    assert tab.watch.errors, "the browser notes the 400 response"
    assert all("400" in e for e in tab.watch.errors), tab.watch.errors


# ------------------------------------------------------------------------ .npy in the browser


NPY_CASES = [
    np.array([True, False, True]),
    np.array([0, 255, 7], np.uint8),
    np.array([-128, 127, 0], np.int8),
    np.array([[-32768, 32767]], np.int16),
    np.array([0, 65535], np.uint16),
    np.array([[-(2**31), 2**31 - 1]], np.int32),
    np.array([0, 2**32 - 1], np.uint32),
    np.array([-(2**53) + 1, 2**53 - 1, 5], np.int64),
    np.array([0, 2**53 - 1], np.uint64),
    np.array([[0.5, -2.25, 65504.0, 6.1e-5, 1e-7]], np.float16),
    np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
    np.array([np.pi, -1e300, 1e-300], np.float64),
    np.array(42.5, np.float32),
    np.zeros((2, 0, 3), np.float32),
]


def test_the_page_reads_npy_files_as_numpy_writes_them(tab: Tab) -> None:
    tab.open(f"#/models/{FOREIGN}/try")
    for array in NPY_CASES:
        encoded = base64.b64encode(npy(array)).decode()
        parsed = tab.page.evaluate(
            """async (b64) => { const { parseNpy } = await import('/ui/js/npy.js');
              const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
              return parseNpy(bytes.buffer, 'a.npy'); }""",
            encoded,
        )
        assert parsed["shape"] == list(array.shape), array.dtype
        datatype = {"b": "BOOL", "u": "UINT", "i": "INT", "f": "FP"}[array.dtype.kind]
        bits = "" if array.dtype.kind == "b" else str(array.dtype.itemsize * 8)
        assert parsed["datatype"] == datatype + bits
        assert parsed["data"] == array.reshape(-1).tolist(), array.dtype
    # format version 2.0 (a header over 64 KiB's worth of fields is rare; numpy writes 2.0 on request)
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.arange(3, dtype=np.float32), version=(2, 0))
    parsed = tab.page.evaluate(
        """async (b64) => { const { parseNpy } = await import('/ui/js/npy.js');
          return parseNpy(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer, 'v2.npy'); }""",
        base64.b64encode(buffer.getvalue()).decode(),
    )
    assert parsed == {"shape": [3], "datatype": "FP32", "data": [0, 1, 2]}
    refused = tab.page.evaluate(
        """async (b64s) => { const { parseNpy } = await import('/ui/js/npy.js');
          return b64s.map((b64) => { try { parseNpy(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer, 'bad.npy'); return null; }
            catch (err) { return err.message; } }); }""",
        [
            base64.b64encode(npy(np.array(["ab"]))).decode(),
            base64.b64encode(npy(np.array([2**60], np.int64))).decode(),
            base64.b64encode(b"not an npy file").decode(),
            base64.b64encode(npy(np.zeros(4, np.float32))[:-3]).decode(),
        ],
    )
    assert refused == [
        "bad.npy holds unicode strings ('<U2'); the page reads numeric .npy files: bool, int8-64, uint8-64, float16, float32 or float64",
        "bad.npy: element 0 (1152921504606846976) is beyond 2^53, which JSON numbers cannot carry exactly",
        "bad.npy is not a .npy file (it does not start with \\x93NUMPY)",
        "bad.npy is truncated: shape [4] needs 16 bytes of data, the file has 13",
    ]
    assert tab.watch.errors == []
