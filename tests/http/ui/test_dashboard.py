"""The dashboard in a real browser against a real server on loopback: every view loads with no
console error and no request leaving the origin, shows the API's numbers, and is screenshotted."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.http.ui.browser import ARTIFACTS, MODELS, NEEDS_CHROMIUM, Watch, assert_not_blank, js_int, js_num, js_pct
from tests.server import RunningServer, serve

pytestmark = [pytest.mark.browser, NEEDS_CHROMIUM, pytest.mark.timeout(300)]

VIEWPORT = {"width": 1366, "height": 860}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    if not (MODELS / "digits_cnn").is_dir():
        pytest.fail("the shipped model repository (models/) is missing")
    root = tmp_path_factory.mktemp("ui")
    shutil.copytree(MODELS, root / "models")
    # one worker process: the statistics extension counts per process, and the test compares them
    with serve(root / "models", root, env={"WEIGHTSERVE_WORKERS": "1"}) as running:
        yield running


@pytest.fixture
def page(browser: Any, server: RunningServer) -> Iterator[tuple[Any, Watch]]:
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    watch = Watch(server.base_url)
    tab.on("console", watch.on_console)
    tab.on("pageerror", watch.on_page_error)
    tab.on("request", watch.on_request)
    try:
        yield tab, watch
    finally:
        context.close()
    assert watch.foreign == [], f"requests left the origin: {watch.foreign}"


def open_view(page: Any, server: RunningServer, route: str) -> None:
    page.goto(f"{server.base_url}/ui/{route}")
    page.wait_for_selector("main[data-ready='true']", timeout=60_000)


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button, canvas, svg[role=img]')]
  .filter(el => !(el.getAttribute('aria-label') || (el.labels && el.labels.length)
    || (el.tagName === 'BUTTON' && el.textContent.trim())))
  .map(el => el.outerHTML.slice(0, 120))"""


def screenshot(page: Any, name: str) -> Path:
    """Save the view as a test artifact, after checking every control and chart has a name."""
    assert page.evaluate(UNLABELLED) == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert_not_blank(path)
    return path


def no_errors(watch: Watch) -> None:
    assert watch.errors == [], watch.errors


def cell(row: Any, field: str) -> str:
    text: str = row.locator(f"[data-field='{field}']").inner_text()
    return text


def infer(api: httpx.Client, model: str, name: str, shape: list[int], data: list[float]) -> list[float]:
    body = {"inputs": [{"name": name, "datatype": "FP32", "shape": shape, "data": data}]}
    response = api.post(f"/v2/models/{model}/infer", json=body)
    response.raise_for_status()
    return [float(v) for v in response.json()["outputs"][0]["data"]]


# ------------------------------------------------------------------------------------ serving


def test_assets_have_types_validators_and_a_same_origin_policy(api: httpx.Client) -> None:
    expected = {
        "/ui": "text/html",
        "/ui/app.css": "text/css",
        "/ui/js/main.js": "text/javascript",
        "/ui/favicon.svg": "image/svg+xml",
    }
    for path, kind in expected.items():
        response = api.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(kind), path
        assert response.headers["cache-control"] == "no-cache"
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
        again = api.get(path, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/%2e%2e/__init__.py", "/ui/js", "/ui/.hidden.js", "/ui/x.py"])
def test_unknown_or_escaping_asset_paths_are_a_clear_404(api: httpx.Client, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 404
    assert "error" in response.json()


def test_manifest_of_a_served_version(api: httpx.Client) -> None:
    manifest = api.get("/ui/manifest/digits_cnn/default").json()
    assert manifest["task"]["kind"] == "classification"
    assert api.get("/ui/manifest/digits_cnn/1").json()["version"] == 1
    missing = api.get("/ui/manifest/no_such_model/1")
    assert missing.status_code == 404
    assert "error" in missing.json()


# -------------------------------------------------------------------------------------- views


def test_models_view_shows_the_statistics_extension(
    page: tuple[Any, Watch], server: RunningServer, api: httpx.Client
) -> None:
    tab, watch = page
    for _ in range(3):  # some traffic, so the counters are not all zero
        infer(api, "diabetes_mlp", "features", [1, 10], [50, 1, 25, 90, 190, 110, 50, 4, 4.6, 90])
    tab.goto(f"{server.base_url}/ui")  # no trailing slash: assets must still resolve
    tab.wait_for_selector("main[data-ready='true']", timeout=60_000)
    stats = {(s["name"], s["version"]): s for s in api.get("/v2/models/stats").json()["model_stats"]}
    index = api.post("/v2/repository/index", json={}).json()
    rows = tab.locator("#models-table tbody tr")
    assert rows.count() == len(index)
    for entry in index:
        row = tab.locator(f"#models-table tr[data-model='{entry['name']}'][data-version='{entry['version']}']")
        params = api.get(f"/v2/models/{entry['name']}/versions/{entry['version']}/weights").json()["summary"]
        config = api.get(f"/v2/models/{entry['name']}/versions/{entry['version']}/config").json()
        stat = stats[(entry["name"], entry["version"])]
        assert cell(row, "parameters") == js_int(params["parameters"])
        assert cell(row, "inference_count") == js_int(stat["inference_count"])
        assert cell(row, "execution_count") == js_int(stat["execution_count"])
        assert cell(row, "provider") == config["parameters"]["execution_providers"]["string_value"].split(",")[0]
        success = stat["inference_stats"]["success"]
        if success["count"]:
            assert cell(row, "latency") == f"{success['ns'] / success['count'] / 1e6:.3f} ms"
    assert stats[("diabetes_mlp", "1")]["inference_count"] >= 3
    screenshot(tab, "models")
    no_errors(watch)


def test_version_view_layer_table_matches_the_weights_api(
    page: tuple[Any, Watch], server: RunningServer, api: httpx.Client
) -> None:
    tab, watch = page
    open_view(tab, server, "#/models/digits_cnn/versions/1")
    tab.wait_for_selector("#layer-table[data-sparks='done']", timeout=60_000)
    report = api.get("/v2/models/digits_cnn/versions/1/weights").json()
    assert tab.locator("#layer-table tbody tr").count() == len(report["tensors"])
    for tensor in report["tensors"]:
        row = tab.locator(f"#layer-table tr[data-tensor-id='{tensor['id']}']")
        stats = tensor["stats"]
        assert cell(row, "parameters") == js_int(stats["numel"])
        assert cell(row, "mean") == js_num(stats["mean"])
        assert cell(row, "std") == js_num(stats["std"])
        assert cell(row, "abs_max") == js_num(stats["abs_max"])
        assert cell(row, "zero_fraction") == js_pct(stats["zero_fraction"], 2)
        alpha = (tensor["spectral"] or {}).get("alpha")
        assert cell(row, "alpha").startswith(js_num(alpha, 3))
        assert row.locator("td.spark svg rect").count() > 0
        assert (row.locator(".badge.folded").count() > 0) == bool(tensor["folded"])
    # an over-fit layer is flagged with words, not colour alone
    if any((t["spectral"] or {}).get("alpha", 3) < 2 for t in report["tensors"] if t["spectral"]):
        assert tab.locator(".health.over").first.inner_text().endswith("(over-fit)")
    assert tab.locator("#trained-table tbody tr").count() == len(report["trained"])
    screenshot(tab, "version")

    # sorting by std, by mouse then by keyboard
    header = tab.locator("th[data-sort='std']")
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    ids = tab.locator("#layer-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.tensorId)")
    by_std = sorted(report["tensors"], key=lambda t: -t["stats"]["std"])
    assert ids == [t["id"] for t in by_std]
    header.focus()
    tab.keyboard.press("Enter")
    assert header.get_attribute("aria-sort") == "ascending"
    ids = tab.locator("#layer-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.tensorId)")
    assert ids == [t["id"] for t in reversed(by_std)]
    no_errors(watch)


def test_tensor_view_shows_histograms_spectrum_and_readiness(
    page: tuple[Any, Watch], server: RunningServer, api: httpx.Client
) -> None:
    tab, watch = page
    report = api.get("/v2/models/digits_cnn/versions/1/weights").json()
    conv = next(
        t for t in report["tensors"] if (t["spectral"] or {}).get("status") == "success" and len(t["shape"]) == 4
    )
    open_view(tab, server, f"#/models/digits_cnn/versions/1/tensors/{conv['id']}")
    detail = api.get(f"/v2/models/digits_cnn/versions/1/weights/{conv['id']}?bins=60").json()
    stats = detail["stats"]
    for field in ("mean", "std", "min", "max", "abs_max"):
        assert tab.locator(f"#tensor-stats [data-field='{field}'] .value").inner_text() == js_num(stats[field])
    for name, value in stats["quantiles"].items():
        assert tab.locator(f"#quantiles [data-field='{name}']").inner_text() == js_num(value)
    # the histogram bars are the API's non-empty bins
    values_chart = tab.locator("svg[aria-label='histogram of values'] g[data-series] rect")
    assert values_chart.count() == sum(1 for c in stats["histogram"]["counts"] if c)
    assert tab.locator("svg[aria-label='histogram of log10 magnitudes'] rect").count() > 0
    assert tab.locator("svg[aria-label='per-channel abs_max'] rect").count() == stats["per_channel"]["channels"]
    # the spectrum drawn is the server's: same count and the same sum of eigenvalues (its norm)
    spectrum = tab.locator("#spectrum")
    tab.wait_for_selector("#spectrum[data-eval-sum]", timeout=60_000)
    spectral = detail["spectral"]
    assert int(spectrum.get_attribute("data-eval-count") or 0) == spectral["num_evals"]
    assert math.isclose(float(spectrum.get_attribute("data-eval-sum") or "nan"), spectral["norm"], rel_tol=1e-6)
    assert tab.locator("#spectrum path[data-series='fit']").count() == 1
    assert tab.locator("#quant-verdict").inner_text() != "—"
    screenshot(tab, "tensor")

    # another histogram range through the form
    tab.select_option("#hist-controls select[name='range']", "symmetric")
    tab.fill("#hist-controls input[name='bins']", "20")
    tab.click("#hist-controls button[type='submit']")
    tab.wait_for_selector("main[data-ready='true'] #hist-controls input[value='20']")
    symmetric = api.get(f"/v2/models/digits_cnn/versions/1/weights/{conv['id']}?bins=20&range=symmetric").json()
    bars = tab.locator("svg[aria-label='histogram of values'] g[data-series] rect")
    assert bars.count() == sum(1 for c in symmetric["stats"]["histogram"]["counts"] if c)

    # the trained tensor beside it, one click away
    trained = detail["counterpart"]
    tab.click(f"a[href$='/tensors/{trained['id']}']")
    tab.wait_for_selector(f"main[data-ready='true'] a[href$='/tensors/{conv['id']}']")
    trained_detail = api.get(f"/v2/models/digits_cnn/versions/1/weights/{trained['id']}").json()
    assert tab.locator("main h1").inner_text() == trained_detail["state_dict_key"]
    for field in ("mean", "std", "abs_max"):
        shown = tab.locator(f"#tensor-stats [data-field='{field}'] .value").inner_text()
        assert shown == js_num(trained_detail["stats"][field])
    no_errors(watch)


def test_diff_view_shows_the_verdict_and_per_tensor_change(
    page: tuple[Any, Watch], server: RunningServer, api: httpx.Client
) -> None:
    tab, watch = page
    open_view(tab, server, "#/models/digits_cnn/diff?base=1&target=2")
    diff = api.get("/v2/models/digits_cnn/weights/diff?base=1&target=2").json()
    assert tab.locator("#verdict").inner_text() == f"Verdict: {diff['verdict']}"
    for tensor in diff["tensors"]:
        row = tab.locator(f"#diff-table tr[data-name='{tensor['name']}']")
        assert row.locator("[data-field='rel_l2']").inner_text() == js_num(tensor["rel_l2"])
        assert row.locator("[data-field='cosine']").inner_text() == js_num(tensor["cosine"], 6)
    first = next(t for t in diff["tensors"] if t["histograms"])
    overlay = tab.locator("#overlay svg")
    assert overlay.locator("g[data-series='v1'] rect").count() == sum(1 for c in first["histograms"]["base"] if c)
    assert overlay.locator("g[data-series='v2'] path").count() == 1
    screenshot(tab, "diff")
    no_errors(watch)


def _cell_center(box: dict[str, float], row: int, col: int) -> tuple[float, float]:
    side = box["width"] / 8
    return box["x"] + (col + 0.5) * side, box["y"] + (row + 0.5) * side


def _stroke(tab: Any, points: list[tuple[int, int]]) -> None:
    box = tab.locator("#pad").bounding_box()
    tab.mouse.move(*_cell_center(box, *points[0]))
    tab.mouse.down()
    for point in points[1:]:
        tab.mouse.move(*_cell_center(box, *point), steps=4)
    tab.mouse.up()


def _shown_prediction(tab: Any, api: httpx.Client) -> tuple[int, list[float], list[float]]:
    raw = tab.locator("#pad").get_attribute("data-pixels") or "[]"
    logits = infer(api, "digits_cnn", "image", [1, 1, 8, 8], json.loads(raw))
    # the scores on screen answer a request of exactly these pixels
    tab.wait_for_function(
        """raw => { const r = document.querySelector('#result');
          return r.dataset.state === 'done' && r.dataset.request
            && JSON.stringify(JSON.parse(r.dataset.request).inputs[0].data) === raw; }""",
        arg=raw,
    )
    tab.wait_for_selector("#scores[data-logits]")
    shown = json.loads(tab.locator("#scores").get_attribute("data-logits") or "[]")
    return int(tab.locator("#prediction").get_attribute("data-index") or -1), shown, logits


def test_drawing_a_digit_predicts_what_the_api_predicts(
    page: tuple[Any, Watch], server: RunningServer, api: httpx.Client
) -> None:
    tab, watch = page
    open_view(tab, server, "#/models/digits_cnn/try")
    # the pad opens on the model's first example; start from a blank one
    tab.wait_for_selector("#result[data-state='done']")
    tab.click("#clear")
    # a seven: a bar along the top, then a stroke down to the lower left
    _stroke(tab, [(1, 1), (1, 6)])
    _stroke(tab, [(1, 6), (3, 5), (5, 4), (7, 3)])
    tab.wait_for_selector("#prediction")
    index, shown, logits = _shown_prediction(tab, api)
    assert index == max(range(len(logits)), key=logits.__getitem__)
    assert shown == pytest.approx(logits, rel=1e-5, abs=1e-5)
    assert tab.locator("#prediction").inner_text() == str(index)
    assert tab.locator("#result canvas[aria-label^='CAM heat map']").count() == 1
    screenshot(tab, "try-digits")

    # the keyboard draws too: clear, then paint a vertical line with Shift+arrows
    tab.click("#clear")
    tab.locator("#pad").focus()
    tab.keyboard.press("Space")
    for _ in range(5):
        tab.keyboard.press("Shift+ArrowDown")
    tab.keyboard.press("Space")
    index, shown, logits = _shown_prediction(tab, api)
    assert index == max(range(len(logits)), key=logits.__getitem__)
    assert shown == pytest.approx(logits, rel=1e-5, abs=1e-5)
    no_errors(watch)


def test_denoiser_shows_the_evaluate_endpoints_psnr_and_ssim(
    page: tuple[Any, Watch], server: RunningServer, api: httpx.Client
) -> None:
    tab, watch = page
    open_view(tab, server, "#/models/digits_autoencoder/try")
    # the evaluation example: noisy digits with their clean images as targets
    tab.click("#examples button[data-example='labelled-20']")
    tab.locator("#result[data-state='done'] #metrics[data-psnr]").wait_for()
    body = api.get("/v2/models/digits_autoencoder/examples/labelled-20").json()
    metrics = api.post("/v2/models/digits_autoencoder/evaluate", json=body).json()
    text = tab.locator("#metrics").inner_text()
    assert f"{js_num(metrics['psnr'])} dB" in text
    assert js_num(metrics["ssim"]) in text
    assert tab.locator("#metrics canvas").count() == 3  # the first sample's input, target and output
    screenshot(tab, "try-denoiser")
    no_errors(watch)


def test_feature_form_predicts_what_the_api_predicts(
    page: tuple[Any, Watch], server: RunningServer, api: httpx.Client
) -> None:
    tab, watch = page
    open_view(tab, server, "#/models/diabetes_mlp/try")
    tab.fill("#in0-v0", "61")
    tab.click("#run")
    values = [float(tab.locator(f"#in0-v{i}").input_value()) for i in range(10)]
    expected = infer(api, "diabetes_mlp", "features", [1, 10], values)[0]
    tab.wait_for_function(
        f"() => Math.abs(Number(document.querySelector('#prediction').dataset.value) - {expected}) < 1e-3"
    )
    assert tab.locator("#prediction").inner_text() == js_num(expected, 5)
    screenshot(tab, "try-regression")
    no_errors(watch)


def test_a_bad_link_shows_the_servers_message(page: tuple[Any, Watch], server: RunningServer) -> None:
    tab, watch = page
    open_view(tab, server, "#/models/digits_cnn/versions/1/tensors/Tnot_a_tensor")
    assert "no weight tensor" in tab.locator("main .error").inner_text()
    # the only console error allowed is the browser's own note about the 404 response
    assert all("404" in e for e in watch.errors), watch.errors


# ------------------------------------------------------------------- a repository with less in it


def _tiny_model(path: Path) -> None:
    """y = x·W + b: a bare ONNX model with no manifest and no trained sidecar."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(16, 12)).astype(np.float32), "W")
    bias = numpy_helper.from_array(np.zeros(12, dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 12])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))


def test_a_bare_model_without_manifest_or_sidecar_shows_dashes_not_errors(browser: Any, tmp_path: Path) -> None:
    _tiny_model(tmp_path / "models" / "bare" / "1" / "model.onnx")
    with serve(tmp_path / "models", tmp_path, env={"WEIGHTSERVE_WORKERS": "1"}) as bare:
        context = browser.new_context(viewport=VIEWPORT)
        tab = context.new_page()
        watch = Watch(bare.base_url)
        tab.on("console", watch.on_console)
        tab.on("pageerror", watch.on_page_error)
        tab.on("request", watch.on_request)
        try:
            open_view(tab, bare, "#/")
            row = tab.locator("#models-table tr[data-model='bare']")
            assert cell(row, "parameters") == js_int(16 * 12 + 12)
            assert "accuracy" not in row.inner_text()
            open_view(tab, bare, "#/models/bare/versions/1")
            assert "no weights.safetensors sidecar" in tab.locator("main").inner_text()
            open_view(tab, bare, "#/models/bare/diff")
            assert "a diff needs two" in tab.locator("main").inner_text()
            open_view(tab, bare, "#/models/bare/try")
            # no examples: the form holds the signature's defaults until Run
            tab.click("#run")
            tab.wait_for_selector("#result[data-state='done']")
            x = [float(tab.locator(f"#in0-v{i}").input_value()) for i in range(16)]
            with httpx.Client(base_url=bare.base_url) as client:
                expected = infer(client, "bare", "x", [1, 16], x)
            shown = json.loads(tab.locator("section.output[data-output='y']").get_attribute("data-values") or "[]")
            assert shown == pytest.approx(expected, rel=1e-6)
            assert tab.locator("section.output[data-output='y'] svg[role='img'] rect").count() == 12
            screenshot(tab, "try-bare")
        finally:
            context.close()
    assert watch.foreign == []
    assert watch.errors == []
