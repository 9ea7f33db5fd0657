"""The dashboard draws every weight chart, eigenvalue spectra included, from the server's documents
alone (it never asks for raw values), and shows the background spectral analysis as it runs,
filling each layer in as it finishes. Real Chromium against a real server on loopback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.http.ui.browser import ARTIFACTS, MODELS, NEEDS_CHROMIUM, Watch, assert_not_blank, js_num
from tests.server import RunningServer, serve
from tests.weights.analysis_helpers import mlp_weights, write_mlp

pytestmark = [pytest.mark.browser, NEEDS_CHROMIUM, pytest.mark.timeout(600)]

VIEWPORT = {"width": 1366, "height": 860}
WIDE = ((400, 300), (300, 200), (200, 120))
LISTED = 100
# Records, from the first script on, every analysis state a layer row or the tensor view showed.
RECORDER = """
window.__seen = { rowStates: new Set(), tensorProgress: false };
new MutationObserver(() => {
  for (const row of document.querySelectorAll('#layer-table tbody tr')) window.__seen.rowStates.add(row.dataset.analysis);
  if (document.getElementById('tensor-analysis')) window.__seen.tensorProgress = true;
}).observe(document, { subtree: true, childList: true, attributes: true });
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("spectra")
    shutil.copytree(MODELS, root / "models")
    write_mlp(root / "models" / "wide" / "1", mlp_weights(0, WIDE), external=True)
    write_mlp(root / "models" / "fresh" / "1", mlp_weights(1, WIDE), external=True)
    env = {
        "WEIGHTSERVE_WORKERS": "1",
        "WEIGHTSERVE_WEIGHTS_CACHE_DIR": str(root / "cache"),
        "WEIGHTSERVE_WEIGHTS_ANALYSIS_INLINE_WORK": "0",  # every matrix through the background job
        "WEIGHTSERVE_WEIGHTS_SPECTRAL_LISTED_EIGENVALUES": str(LISTED),
    }
    with serve(root / "models", root, env=env) as running:
        yield running


@pytest.fixture
def page(browser: Any, server: RunningServer) -> Iterator[tuple[Any, Watch, list[str]]]:
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(RECORDER)
    tab = context.new_page()
    watch = Watch(server.base_url)
    requested: list[str] = []
    tab.on("console", watch.on_console)
    tab.on("pageerror", watch.on_page_error)
    tab.on("request", watch.on_request)
    tab.on("request", lambda request: requested.append(request.url))
    try:
        yield tab, watch, requested
    finally:
        context.close()
    assert watch.foreign == [], f"requests left the origin: {watch.foreign}"
    assert [url for url in requested if "/values" in url] == [], "the dashboard fetched raw weights"
    assert watch.errors == [], watch.errors


def _open(tab: Any, server: RunningServer, route: str) -> None:
    tab.goto(f"{server.base_url}/ui/{route}")
    tab.wait_for_selector("main[data-ready='true']", timeout=60_000)


def _wait_job(api: httpx.Client, model: str, version: int = 1) -> dict[str, Any]:
    import time

    for _ in range(2400):
        job: dict[str, Any] = api.get(f"/v2/models/{model}/versions/{version}/weights/analysis").json()
        if job["state"] == "done":
            return job
        time.sleep(0.05)
    raise AssertionError(job)


UNDRAWN = """() => [...document.querySelectorAll('main svg[role=img]')]
  .filter(svg => svg.querySelectorAll('rect, path, circle, line').length === 0
    || /no eigenvalues|no histogram/.test(svg.textContent))
  .map(svg => svg.getAttribute('aria-label'))"""


def _every_chart_drawn(tab: Any) -> int:
    assert tab.evaluate(UNDRAWN) == []
    count: int = tab.locator("main svg[role=img]").count()
    return count


def _screenshot(tab: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    assert_not_blank(path)


def test_every_chart_of_a_model_is_drawn_without_raw_weights(
    page: tuple[Any, Watch, list[str]], server: RunningServer, api: httpx.Client
) -> None:
    tab, _, requested = page
    _open(tab, server, "#/models/digits_cnn/versions/1")
    tab.wait_for_selector("#analysis[data-state='done']", timeout=120_000)
    tab.wait_for_selector("#layer-table[data-sparks='done']", timeout=60_000)
    assert _every_chart_drawn(tab) > 0
    report = api.get("/v2/models/digits_cnn/versions/1/weights").json()
    with_spectrum = [t for t in report["tensors"] if (t["spectral"] or {}).get("status") == "success"]
    assert with_spectrum
    for tensor in report["tensors"]:
        _open(tab, server, f"#/models/digits_cnn/versions/1/tensors/{tensor['id']}")
        if tensor in with_spectrum:
            tab.wait_for_selector("#spectrum[data-eval-sum] svg[role=img]", timeout=60_000)
            detail = api.get(f"/v2/models/digits_cnn/versions/1/weights/{tensor['id']}").json()
            spectral = detail["spectral"]
            spectrum = tab.locator("#spectrum")
            assert int(spectrum.get_attribute("data-eval-count") or 0) == spectral["num_evals"]
            assert float(spectrum.get_attribute("data-eval-sum") or "nan") == pytest.approx(spectral["norm"], rel=1e-9)
            assert tab.locator("#spectrum g[data-series='esd'] rect").count() > 0
            assert tab.locator("#spectrum path[data-series='fit']").count() == 1
        assert _every_chart_drawn(tab) >= 2  # values and magnitudes, at least
    _screenshot(tab, "spectra-tensor")
    _open(tab, server, "#/models/digits_cnn/diff?base=1&target=2")
    assert _every_chart_drawn(tab) > 0
    assert any("/weights/" in url for url in requested)


def test_the_version_view_shows_the_analysis_and_fills_layers_in(
    page: tuple[Any, Watch, list[str]], server: RunningServer, api: httpx.Client
) -> None:
    tab, _, requested = page
    _open(tab, server, "#/models/wide/versions/1")
    panel = tab.locator("#analysis")
    tab.wait_for_selector("#analysis[data-state='done']", timeout=180_000)
    assert panel.get_attribute("data-done") == panel.get_attribute("data-total") == "3"
    assert "3 of 3 layers analysed" in panel.inner_text()
    tab.wait_for_function(
        "() => [...document.querySelectorAll('#layer-table tbody tr')].every(r => r.dataset.analysis === 'done')"
    )
    report = api.get("/v2/models/wide/versions/1/weights").json()
    for tensor in report["tensors"]:
        row = tab.locator(f"#layer-table tr[data-tensor-id='{tensor['id']}']")
        assert row.locator("[data-field='alpha']").inner_text().startswith(js_num(tensor["spectral"]["alpha"], 3))
    summary = tab.locator("#summary").inner_text()
    assert js_num(report["summary"]["mean_alpha"], 3) in summary
    seen = set(tab.evaluate("() => [...window.__seen.rowStates]"))
    assert "queued" in seen or "running" in seen  # the rows were there before their analysis was
    assert "done" in seen
    assert any(url.endswith("/weights/analysis") for url in requested)  # progress came from the job
    _screenshot(tab, "spectra-version")


def test_a_spectrum_beyond_the_listing_bound_is_drawn_from_the_servers_histogram(
    page: tuple[Any, Watch, list[str]], server: RunningServer, api: httpx.Client
) -> None:
    tab, _, _ = page
    _wait_job(api, "wide")
    listing = api.get("/v2/models/wide/versions/1/weights").json()
    w0 = next(t for t in listing["tensors"] if t["name"] == "w0")
    detail = api.get(f"/v2/models/wide/versions/1/weights/{w0['id']}").json()
    eigen = detail["spectral"]["eigenvalues"]
    assert (eigen["count"], eigen["truncated"], len(eigen["values"])) == (300, True, LISTED)
    _open(tab, server, f"#/models/wide/versions/1/tensors/{w0['id']}")
    tab.wait_for_selector("#spectrum[data-eval-count='300'] svg[role=img]", timeout=60_000)
    bars = tab.locator("#spectrum g[data-series='esd'] rect").count()
    assert bars == sum(1 for c in eigen["log10_histogram"]["counts"] if c)
    assert "binned by the server" in tab.locator("#spectrum").inner_text()
    assert tab.locator("#spectrum path[data-series='fit']").count() == 1
    _every_chart_drawn(tab)


def test_a_tensor_opened_before_its_analysis_waits_and_then_draws(
    page: tuple[Any, Watch, list[str]], server: RunningServer, api: httpx.Client
) -> None:
    from service.weights.graph import opaque_id

    tab, _, _ = page
    # nothing has asked for this model yet: the tensor's own document starts its version's analysis
    _open(tab, server, f"#/models/fresh/versions/1/tensors/{opaque_id('T', 'w2')}")
    tab.wait_for_selector("#spectrum[data-eval-sum] svg[role=img]", timeout=180_000)
    assert tab.evaluate("() => window.__seen.tensorProgress")  # it showed the progress meanwhile
    job = _wait_job(api, "fresh")
    assert job["layers"]["done"] == 3
    assert tab.locator("#spectral-metrics").inner_text().count("alpha") >= 1
    _every_chart_drawn(tab)
