"""Fixtures every dashboard test module shares: one Chromium per module, and an API client for the
module's own ``server`` fixture (with the module's ``api_headers``, none unless it says)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.http.ui.browser import chromium
from tests.server import RunningServer


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def api_headers() -> dict[str, str]:
    return {}


@pytest.fixture(scope="module")
def api(server: RunningServer, api_headers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60, headers=api_headers) as client:
        yield client
