"""The API docs page (/schema) in a real browser: served whole by the service (no request leaves the
origin, so it works offline), no console error, and it shows every operation of the document."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.http.ui.browser import ARTIFACTS, MODELS, NEEDS_CHROMIUM, Watch, assert_not_blank, chromium
from tests.server import RunningServer, serve

pytestmark = [pytest.mark.browser, NEEDS_CHROMIUM, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve(MODELS, tmp_path_factory.mktemp("docs")) as running:
        yield running


@pytest.mark.parametrize("path", ["/schema", "/schema/swagger"])
def test_the_docs_page_loads_from_the_service_alone_and_shows_every_operation(server: RunningServer, path: str) -> None:
    document = httpx.get(f"{server.base_url}/schema/openapi.json", timeout=30).json()
    operations = [
        (method.upper(), route)
        for route, item in document["paths"].items()
        for method in item
        if method in ("get", "post")
    ]
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 860})
        watch = Watch(server.base_url)
        page.on("console", watch.on_console)
        page.on("pageerror", watch.on_page_error)
        page.on("request", watch.on_request)
        page.goto(server.base_url + path, wait_until="networkidle")
        page.wait_for_selector(".opblock", timeout=60_000)
        shown = [
            (block.locator(".opblock-summary-method").inner_text().strip(),
             block.locator(".opblock-summary-path").get_attribute("data-path"))
            for block in page.locator(".opblock").all()
        ]  # fmt: skip
        page.locator(".opblock-summary", has_text="/v2/models/{model_name}/infer").first.click()
        page.wait_for_selector(".opblock.is-open .opblock-section-request-body", timeout=30_000)
        request_body = page.locator(".opblock.is-open .opblock-section-request-body").inner_text()
        title = page.locator(".info .title").inner_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"api-docs{path.replace('/', '-')}.png"
        page.screenshot(path=str(shot))
    assert watch.foreign == [], watch.foreign
    assert watch.errors == [], watch.errors
    assert "weightserve" in title
    assert sorted(shown) == sorted(operations)
    assert "application/json" in request_body
    assert_not_blank(shot)


def test_the_docs_assets_are_only_swagger_ui_and_its_start_script(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        page = client.get("/schema")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "cdn" not in page.text.lower()
        assert "https://" not in page.text
        bundle = client.get("/schema/swagger/assets/swagger-ui-bundle.js")
        assert bundle.status_code == 200
        assert bundle.headers["content-type"].startswith("text/javascript")
        assert (
            client.get(
                "/schema/swagger/assets/swagger-ui-bundle.js", headers={"If-None-Match": bundle.headers["etag"]}
            ).status_code
            == 304
        )
        for refused in ("swagger-editor-bundle.js", "LICENSE", "..%2F..%2Fcore.py"):
            answer = client.get(f"/schema/swagger/assets/{refused}")
            assert answer.status_code == 404, refused
            assert set(answer.json()) == {"error"}
