"""CAM on the digits CNN equals Grad-CAM computed by torch autograd on the same trained weights.

Uses the shipped ``models/digits_cnn`` versions; where the repository has none yet, a DigitsCNN with
random weights (and random BatchNorm statistics) is exported the way the training job exports.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")
architectures = pytest.importorskip("training.architectures")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

from safetensors.torch import save_file  # noqa: E402

from service.inspection.explain import ExplainOptions, explain  # noqa: E402
from service.inspection.session import InspectionSession  # noqa: E402
from training.export import export  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "digits_cnn"

pytestmark = pytest.mark.torch


def _shipped_versions() -> list[Path]:
    if not SHIPPED.is_dir():
        return []
    return sorted(p for p in SHIPPED.iterdir() if p.name.isdigit() and (p / "weights.safetensors").is_file())


def _exported_here(folder: Path) -> Path:
    torch.manual_seed(0)
    architecture = {"channels": [8, 16], "classes": 10}
    module = architectures.DigitsCNN(**architecture).eval()
    with torch.no_grad():
        for layer in module.features:
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.2, 0.2)
                layer.running_var.uniform_(0.5, 1.5)
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.1, 0.3)
    folder.mkdir(parents=True)
    save_file(module.state_dict(), str(folder / "weights.safetensors"))
    manifest = {"model": "digits_cnn", "hyperparameters": {"architecture": architecture}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    example = np.zeros((2, 1, 8, 8), np.float32)
    export(module, example, "image", "logits", folder / "model.onnx", {})
    return folder


def _versions() -> list[Path | str]:
    return [*_shipped_versions()] or ["exported-here"]


@pytest.fixture(scope="module", params=_versions(), ids=lambda p: str(p)[-12:])
def version_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if isinstance(request.param, Path):
        return request.param
    return _exported_here(tmp_path_factory.mktemp("digits_cnn") / "1")


def _grad_cam(version: Path, images: np.ndarray, targets: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM on the module rebuilt from weights.safetensors: gradients of the class score with
    respect to the maps feeding the pool, averaged per channel, weighted sum, ReLU, bilinear
    upsampling to the input size, divided by the maximum."""
    module = architectures.load_trained(version)
    x = torch.from_numpy(images)
    maps = module.features(x / architectures.PIXEL_MAX)
    logits = module.head(maps.mean(dim=(2, 3)))
    chosen = logits.argmax(dim=1) if targets is None else torch.from_numpy(targets)
    (gradient,) = torch.autograd.grad(logits[torch.arange(len(x)), chosen].sum(), maps)
    cam = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * maps).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(dim=1).values
    normalised = torch.where(peak[:, None, None] > 0, cam / peak.clamp_min(1e-30)[:, None, None], cam)
    return normalised.detach().double().numpy(), chosen.numpy()


@pytest.mark.parametrize("target", [None, 3])
def test_cam_equals_torch_grad_cam_on_the_digits_cnn(version_dir: Path, target: int | None) -> None:
    images = sklearn_datasets.load_digits().images[:24, None].astype(np.float32)
    session = InspectionSession(version_dir / "model.onnx")

    result = explain(session, {"image": images}, ExplainOptions(method="cam", target=target))
    expected, chosen = _grad_cam(version_dir, images, None if target is None else np.full(24, target))

    assert session.head("logits").exact_cam
    assert result.method == "cam"
    assert result.targets.tolist() == chosen.tolist()
    np.testing.assert_allclose(result.heatmaps, expected, atol=1e-5)
