"""Fixtures shared by the deployment tests."""

from __future__ import annotations

import pytest

from tests.deploy.support import ARTIFACTS, Measurements


@pytest.fixture(scope="session")
def measurements() -> Measurements:
    """Figures the tests report, collected in tests/artifacts/deploy/measurements.json."""
    return Measurements(ARTIFACTS / "measurements.json")
