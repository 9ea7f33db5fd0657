"""Headless Chromium for dashboard tests: Debian's browser, launched by Playwright, watched for
console errors and for any request that leaves the server's origin."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "ui"
MODELS = Path(__file__).resolve().parents[3] / "models"
"""The shipped model repository, which every dashboard test serves (a copy of it)."""
DASH = "—"

NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed"
)


@dataclass
class Watch:
    """What a page did that a test must see: console errors, uncaught exceptions, foreign requests."""

    origin: str
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def on_console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"page error: {error}")

    def on_request(self, request: Any) -> None:
        url: str = request.url
        if not (url.startswith(self.origin + "/") or url.startswith(("data:", "blob:"))):
            self.foreign.append(url)


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def js_num(value: float | None, digits: int = 4) -> str:
    """The dashboard's ``num()`` formatting, so shown text can be compared with API numbers."""
    if value is None or isinstance(value, bool) or not math.isfinite(value):
        return DASH
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        mantissa, exponent = f"{value:.{max(digits - 1, 1)}e}".split("e")
        return f"{mantissa}e{int(exponent):+d}"
    text = repr(float(f"{value:.{digits}g}"))
    return text[:-2] if text.endswith(".0") else text


def js_int(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    return f"{round(value):,}"


def js_pct(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value * 100:.{digits}f}%"


def assert_not_blank(path: Path) -> None:
    """A real page: many colours, real contrast, and more than a sliver of non-white pixels."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        small = rgb.resize((max(rgb.width // 4, 1), max(rgb.height // 4, 1)))
        colours = small.getcolors(maxcolors=1 << 20) or []
        stddev = max(ImageStat.Stat(rgb).stddev)
        grey = rgb.convert("L")
        inked = sum(count for level, count in enumerate(grey.histogram()) if level < 200)
    assert len(colours) > 20, f"{path.name}: only {len(colours)} colours"
    assert stddev > 10, f"{path.name}: flat image (stddev {stddev:.1f})"
    assert inked / (grey.width * grey.height) > 0.01, f"{path.name}: almost nothing drawn"
