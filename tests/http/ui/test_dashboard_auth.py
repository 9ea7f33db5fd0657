"""The dashboard against a server whose weights need an ``inspect`` token and whose raw values are
closed (``export`` granted to nobody): its files load, it asks for the token once, keeps it for the
tab's session only (sessionStorage, never a URL), sends it as a bearer token, and draws its charts."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.http.ui.browser import ARTIFACTS, MODELS, NEEDS_CHROMIUM, Watch, assert_not_blank
from tests.server import RunningServer, serve

pytestmark = [pytest.mark.browser, NEEDS_CHROMIUM, pytest.mark.timeout(300)]

VIEWPORT = {"width": 1366, "height": 860}
VIEWER = "dashboard-viewer-token-6b1f0e94"
READY = "main[data-ready='true']"
DIALOG = "#token-dialog[open]"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("ui-auth")
    shutil.copytree(MODELS, root / "models")
    env = {
        "WEIGHTSERVE_AUTH_OPEN_SCOPES": '["infer"]',
        "WEIGHTSERVE_AUTH_TOKENS": json.dumps([{"name": "viewer", "token": VIEWER, "scopes": ["inspect"]}]),
    }
    with serve(root / "models", root, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def api_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {VIEWER}"}


class Traffic:
    """Every request the page made and every error status it got, for checks after the fact."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.failures: list[tuple[int, str]] = []

    def on_request(self, request: Any) -> None:
        self.requests.append(request)

    def on_response(self, response: Any) -> None:
        if response.status >= 400:
            self.failures.append((response.status, response.url))


@pytest.fixture
def page(browser: Any, server: RunningServer) -> Iterator[tuple[Any, Watch, Traffic]]:
    context = browser.new_context(viewport=VIEWPORT)  # a new context: a new browser session
    tab = context.new_page()
    watch = Watch(server.base_url)
    traffic = Traffic()
    tab.on("console", watch.on_console)
    tab.on("pageerror", watch.on_page_error)
    tab.on("request", watch.on_request)
    tab.on("request", traffic.on_request)
    tab.on("response", traffic.on_response)
    try:
        yield tab, watch, traffic
        # the token travels in a header only: never in a URL, never in localStorage
        assert [r.url for r in traffic.requests if VIEWER in r.url] == []
        assert VIEWER not in tab.url
        assert tab.evaluate("() => localStorage.length") == 0
    finally:
        context.close()
    assert watch.foreign == [], f"requests left the origin: {watch.foreign}"


def give_token(tab: Any, token: str, *, expect_reason: str) -> None:
    tab.wait_for_selector(DIALOG, timeout=60_000)
    assert expect_reason in tab.locator("#token-reason").inner_text()
    assert tab.locator("#token-input").get_attribute("type") == "password"
    tab.fill("#token-input", token)
    tab.click("#token-dialog button[value='ok']")


def open_view(tab: Any, server: RunningServer, route: str) -> None:
    tab.goto(f"{server.base_url}/ui/{route}")
    tab.wait_for_selector(READY, timeout=60_000)
    assert tab.locator(DIALOG).count() == 0, "asked for the token again"


def screenshot(tab: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"auth-{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    assert_not_blank(path)


def test_raw_values_are_closed_and_weights_need_the_token(api: httpx.Client) -> None:
    report = api.get("/v2/models/digits_cnn/versions/1/weights")
    assert report.status_code == 200
    tensor = report.json()["tensors"][0]["id"]
    assert api.get(f"/v2/models/digits_cnn/versions/1/weights/{tensor}/values").status_code == 403
    anonymous = httpx.get(f"{api.base_url}/v2/models/digits_cnn/versions/1/weights", timeout=60)
    assert anonymous.status_code == 401
    for asset in ("/ui", "/ui/js/main.js", "/ui/js/api.js", "/ui/app.css"):
        assert httpx.get(f"{api.base_url}{asset}", timeout=60).status_code == 200, asset


def test_it_asks_once_then_draws_every_chart(
    page: tuple[Any, Watch, Traffic], server: RunningServer, api: httpx.Client
) -> None:
    tab, watch, traffic = page
    tab.goto(f"{server.base_url}/ui")
    # the page and its scripts loaded without a token: it can ask for one
    tab.wait_for_selector(DIALOG, timeout=60_000)
    assert not tab.locator("#forget-token").is_visible()
    screenshot(tab, "prompt")
    give_token(tab, "not-the-token", expect_reason="'inspect' scope")
    give_token(tab, VIEWER, expect_reason="invalid token")  # the wrong one was refused and dropped
    tab.wait_for_selector(READY, timeout=60_000)
    asked = len(traffic.failures)
    assert tab.evaluate("() => sessionStorage.getItem('weightserve.token')") == VIEWER
    assert tab.locator("#forget-token").is_visible()

    # models: one row per version of the index, with parameters from the weights
    index = api.post("/v2/repository/index", json={}).json()
    assert tab.locator("#models-table tbody tr").count() == len(index)
    assert (
        "—" not in tab.locator("#models-table tr[data-model='digits_cnn'] [data-field='parameters']").first.inner_text()
    )
    screenshot(tab, "models")

    # a version: the layer table with a histogram sparkline on every row
    open_view(tab, server, "#/models/digits_cnn/versions/1")
    tab.wait_for_selector("#layer-table[data-sparks='done']", timeout=60_000)
    report = api.get("/v2/models/digits_cnn/versions/1/weights").json()
    assert tab.locator("#layer-table tbody tr").count() == len(report["tensors"])
    assert tab.locator("#layer-table td.spark svg").count() == len(report["tensors"])

    # a tensor: value and magnitude histograms, per-channel bars, readiness
    conv = next(
        t for t in report["tensors"] if (t["spectral"] or {}).get("status") == "success" and len(t["shape"]) == 4
    )
    open_view(tab, server, f"#/models/digits_cnn/versions/1/tensors/{conv['id']}")
    stats = api.get(f"/v2/models/digits_cnn/versions/1/weights/{conv['id']}?bins=60").json()["stats"]
    bars = tab.locator("svg[aria-label='histogram of values'] g[data-series] rect")
    assert bars.count() == sum(1 for count in stats["histogram"]["counts"] if count)
    assert tab.locator("svg[aria-label='histogram of log10 magnitudes'] rect").count() > 0
    assert tab.locator("svg[aria-label='per-channel abs_max'] rect").count() == stats["per_channel"]["channels"]
    assert tab.locator("#quant-verdict").inner_text() != "—"
    screenshot(tab, "tensor")

    # a diff: the verdict and the overlaid histograms
    open_view(tab, server, "#/models/digits_cnn/diff?base=1&target=2")
    diff = api.get("/v2/models/digits_cnn/weights/diff?base=1&target=2").json()
    assert tab.locator("#verdict").inner_text() == f"Verdict: {diff['verdict']}"
    assert tab.locator("#overlay svg g[data-series='v1'] rect").count() > 0

    # try it: a sample digit's prediction with its CAM heat map (explain), a denoised digit (evaluate)
    open_view(tab, server, "#/models/digits_cnn/try")
    tab.click("#examples button[data-example='digit-7']")
    tab.wait_for_selector("#result[data-state='done'] canvas[aria-label='CAM heat map for class 7']", timeout=60_000)
    assert tab.locator("#prediction").inner_text() == "7"
    open_view(tab, server, "#/models/digits_autoencoder/try")
    tab.click("#examples button[data-example='labelled-20']")
    tab.wait_for_selector("#result[data-state='done'] #metrics[data-psnr]", timeout=60_000)
    assert tab.locator("#metrics canvas").count() == 3
    screenshot(tab, "try-denoiser")

    # the tab keeps the token across a reload, and nothing asked again
    tab.reload()
    tab.wait_for_selector(READY, timeout=60_000)
    assert tab.locator(DIALOG).count() == 0
    unexpected = [(status, url) for status, url in traffic.failures[asked:] if not url.endswith("/values")]
    assert unexpected == [], "after the token only the raw values (export) may be refused"
    assert {status for status, _ in traffic.failures[:asked]} == {401}
    sent = [r for r in traffic.requests[1:] if "/v2/" in r.url or "/ui/manifest/" in r.url]
    with_token = [r for r in sent if r.all_headers().get("authorization") == f"Bearer {VIEWER}"]
    assert len(with_token) > 20
    assert all(("401" in e or "403" in e) for e in watch.errors), watch.errors


def test_forget_token_asks_again(page: tuple[Any, Watch, Traffic], server: RunningServer) -> None:
    tab, _, _ = page
    tab.goto(f"{server.base_url}/ui")
    give_token(tab, VIEWER, expect_reason="'inspect' scope")
    tab.wait_for_selector(READY, timeout=60_000)
    tab.click("#forget-token")
    assert tab.evaluate("() => sessionStorage.getItem('weightserve.token')") is None
    tab.wait_for_selector(DIALOG, timeout=60_000)
    # declining leaves the server's message on the page, and no token anywhere
    tab.click("#token-dialog button[value='cancel']")
    tab.wait_for_selector(f"{READY} .error", timeout=60_000)
    assert "'inspect' scope" in tab.locator("main .error").first.inner_text()
    assert tab.evaluate("() => sessionStorage.length") == 0


def test_the_spectrum_is_drawn_with_export_closed(
    page: tuple[Any, Watch, Traffic], server: RunningServer, api: httpx.Client
) -> None:
    tab, _, _ = page
    report = api.get("/v2/models/digits_cnn/versions/1/weights").json()
    conv = next(
        t for t in report["tensors"] if (t["spectral"] or {}).get("status") == "success" and len(t["shape"]) == 4
    )
    tab.goto(f"{server.base_url}/ui/#/models/digits_cnn/versions/1/tensors/{conv['id']}")
    give_token(tab, VIEWER, expect_reason="'inspect' scope")
    tab.wait_for_selector(READY, timeout=60_000)
    spectral = api.get(f"/v2/models/digits_cnn/versions/1/weights/{conv['id']}").json()["spectral"]
    spectrum = tab.locator("#spectrum")
    assert spectrum.locator(".error").count() == 0, spectrum.inner_text()
    assert int(spectrum.get_attribute("data-eval-count") or 0) == spectral["num_evals"]
    assert math.isclose(float(spectrum.get_attribute("data-eval-sum") or "nan"), spectral["norm"], rel_tol=1e-6)
    assert spectrum.locator("path[data-series='fit']").count() == 1
