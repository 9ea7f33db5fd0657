from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.errors import InvalidRequest
from service.inspection.explain import ExplainOptions, explain
from service.inspection.session import InspectionSession

from .conftest import region_scorer

REGION = (slice(2, 4), slice(4, 6))


@pytest.fixture
def region_model(tmp_path: Path) -> InspectionSession:
    mask = np.zeros((8, 8))
    mask[REGION] = 1.0
    return InspectionSession(region_scorer(tmp_path / "region" / "model.onnx", mask))


@pytest.mark.parametrize(("window", "stride"), [(1, 1), (2, 2)])
def test_occlusion_lights_the_region_the_score_depends_on_and_nothing_else(
    region_model: InspectionSession, window: int, stride: int
) -> None:
    images = np.random.default_rng(0).uniform(1, 2, size=(3, 1, 8, 8)).astype(np.float32)
    options = ExplainOptions(method="occlusion", target=0, window=window, stride=stride, baseline=0.0)

    result = explain(region_model, {"image": images}, options)

    expected = np.zeros((8, 8), bool)
    expected[REGION] = True
    for heat in result.heatmaps:
        assert (heat[expected] > 0).all()
        assert (heat[~expected] == 0).all()
        assert heat.max() == pytest.approx(1.0)


def test_occlusion_of_a_score_that_depends_on_nothing_is_all_zero(region_model: InspectionSession) -> None:
    images = np.ones((1, 1, 8, 8), np.float32)

    result = explain(region_model, {"image": images}, ExplainOptions(method="occlusion", target=1, window=2))

    assert (result.heatmaps == 0).all()


def test_occlusion_with_a_mean_baseline_and_uneven_stride_covers_every_pixel(
    region_model: InspectionSession,
) -> None:
    images = np.random.default_rng(1).uniform(1, 2, size=(1, 1, 8, 8)).astype(np.float32)
    images[0, 0][REGION] = 9.0  # bright, so the mean fill lowers the score wherever it covers it
    options = ExplainOptions.from_parameters(
        {"method": "occlusion", "target": "0", "window": 3, "stride": 2, "baseline": "mean"}
    )

    result = explain(region_model, {"image": images}, options)

    assert options.baseline is None
    assert result.heatmaps.shape == (1, 8, 8)
    assert result.heatmaps[0][REGION].min() > 0


@pytest.mark.parametrize(("params", "message"), [({"window": 9}, "window"), ({"stride": "0"}, "stride")])
def test_bad_occlusion_parameters_are_refused(
    region_model: InspectionSession, params: dict[str, object], message: str
) -> None:
    def run() -> None:
        options = ExplainOptions.from_parameters({"method": "occlusion", **params})
        explain(region_model, {"image": np.ones((1, 1, 8, 8), np.float32)}, options)

    with pytest.raises(InvalidRequest, match=message):
        run()


def test_without_a_method_a_model_with_no_cam_head_gets_occlusion(region_model: InspectionSession) -> None:
    result = explain(
        region_model, {"image": np.ones((1, 1, 8, 8), np.float32)}, ExplainOptions.from_parameters({})
    )

    assert result.method == "occlusion"
