"""ResNet-18 and MobileNetV3-small written from their published definitions (He et al. 2016; Howard et
al. 2019, as torchvision builds them: same layers, channels, strides, activations and initialisation),
for heat-map tests that need the real architectures without importing torchvision. Random weights."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

# ------------------------------------------------------------------------------------------ ResNet-18


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, inplanes, stages = (64, 128, 256, 512), 64, []
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes)))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional block's output (layer4), the map Grad-CAM looks at."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        result: torch.Tensor = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return result

    def head(self, maps: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.fc(torch.flatten(self.avgpool(maps), 1))
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------------------------- MobileNetV3-small


def _divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn_act(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: Callable[[], nn.Module] | None = None
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=0.001, momentum=0.01),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


@dataclass(frozen=True)
class _Bneck:
    cin: int
    kernel: int
    expanded: int
    cout: int
    se: bool
    hardswish: bool
    stride: int


class InvertedResidual(nn.Module):
    def __init__(self, c: _Bneck) -> None:
        super().__init__()
        self.use_res_connect = c.stride == 1 and c.cin == c.cout
        act: Callable[[], nn.Module] = nn.Hardswish if c.hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if c.expanded != c.cin:
            layers.append(_conv_bn_act(c.cin, c.expanded, 1, act=act))
        layers.append(_conv_bn_act(c.expanded, c.expanded, c.kernel, c.stride, groups=c.expanded, act=act))
        if c.se:
            layers.append(SqueezeExcitation(c.expanded, _divisible(c.expanded // 4)))
        layers.append(_conv_bn_act(c.expanded, c.cout, 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.block(x)
        return result + x if self.use_res_connect else result


_SMALL = [
    _Bneck(16, 3, 16, 16, True, False, 2),
    _Bneck(16, 3, 72, 24, False, False, 2),
    _Bneck(24, 3, 88, 24, False, False, 1),
    _Bneck(24, 5, 96, 40, True, True, 2),
    _Bneck(40, 5, 240, 40, True, True, 1),
    _Bneck(40, 5, 240, 40, True, True, 1),
    _Bneck(40, 5, 120, 48, True, True, 1),
    _Bneck(48, 5, 144, 48, True, True, 1),
    _Bneck(48, 5, 288, 96, True, True, 2),
    _Bneck(96, 5, 576, 96, True, True, 1),
    _Bneck(96, 5, 576, 96, True, True, 1),
]


class MobileNetV3Small(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_act(3, 16, 3, 2, act=nn.Hardswish)]
        layers += [InvertedResidual(c) for c in _SMALL]
        layers.append(_conv_bn_act(96, 576, 1, act=nn.Hardswish))
        self.features_ = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(576, 1024), nn.Hardswish(inplace=True), nn.Dropout(0.2, inplace=True), nn.Linear(1024, num_classes)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional block's output (1x1 conv to 576 + BN + Hardswish)."""
        result: torch.Tensor = self.features_(x)
        return result

    def head(self, maps: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.classifier(torch.flatten(self.avgpool(maps), 1))
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ------------------------------------------------------------------------------------------ helpers


def randomise_batch_norms(module: nn.Module, seed: int) -> None:
    """Running statistics and affine parameters away from their defaults, so the exported graph
    carries non-trivial folded batch norms (as a trained network does)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=generator) * 0.1)


def build(name: str, seed: int = 0, num_classes: int = 1000) -> nn.Module:
    torch.manual_seed(seed)
    module: nn.Module = ResNet18(num_classes) if name == "resnet18" else MobileNetV3Small(num_classes)
    randomise_batch_norms(module, seed)
    return module.eval()


def export(module: nn.Module, path: Path, size: int) -> Path:
    """ONNX with a dynamic batch axis, as the training job exports (dynamo exporter)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings(), torch.no_grad():
        # torch-internal deprecation notes, not ours (the suite turns warnings into errors).
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        program = torch.onnx.export(
            module,
            (example,),
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: batch}},
            opset_version=20,
            dynamo=True,
            verbose=False,
        )
    assert program is not None
    program.save(str(path))
    return path


def torch_grad_cam(module: nn.Module, images: np.ndarray, targets: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM by autograd at the last convolutional block: ReLU(Σ_k mean_ij(∂y_c/∂A_k) · A_k), at
    feature-map resolution, unnormalised; and the logits. Targets default to the predicted class."""
    x = torch.from_numpy(images)
    maps = module.features(x).detach().requires_grad_(True)  # type: ignore[operator]
    logits = module.head(maps)  # type: ignore[operator]
    chosen = logits.argmax(dim=1) if targets is None else torch.from_numpy(targets)
    (gradient,) = torch.autograd.grad(logits[torch.arange(len(x)), chosen].sum(), maps)
    alpha = gradient.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((alpha * maps).sum(dim=1))
    return cam.detach().double().numpy(), logits.detach().numpy()
