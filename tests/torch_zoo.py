"""Architectures people train, written in plain torch for the publish and heat-map tests.

torchvision cannot be imported beside the CPU torch, so ResNet-18 and MobileNetV3-small are written
out here from their published definitions (He et al. 2016, Howard et al. 2019), module for module
and name for name as torchvision builds them (so state_dict keys match torchvision's), with
torchvision's initialisation. The rest are small models of the common kinds: a recurrent sequence
model, a Transformer encoder classifier, a language model whose head shares the embedding matrix,
and a model with two inputs and two outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

# ------------------------------------------------------------------------------------ ResNet-18


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)  # type: ignore[no-any-return]


class ResNet18(nn.Module):
    """torchvision.models.resnet18: BasicBlock, layers [2, 2, 2, 2], adaptive average pool, fc."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 2)
        self.layer2 = self._make_layer(128, 2, stride=2)
        self.layer3 = self._make_layer(256, 2, stride=2)
        self.layer4 = self._make_layer(512, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- MobileNetV3-small


def _make_divisible(value: float, divisor: int = 8) -> int:
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=0.001, momentum=0.01)


class ConvNormActivation(nn.Sequential):
    """torchvision.ops.Conv2dNormActivation with MobileNetV3's BatchNorm (eps 0.001)."""

    def __init__(
        self,
        inputs: int,
        outputs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: Callable[..., nn.Module] | None = nn.ReLU,
    ) -> None:
        padding = (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(inputs, outputs, kernel_size, stride, padding, groups=groups, bias=False),
            _bn(outputs),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return self.scale_activation(scale) * x  # type: ignore[no-any-return]


class InvertedResidual(nn.Module):
    def __init__(self, inputs: int, kernel: int, expanded: int, outputs: int, se: bool, hs: bool, stride: int) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and inputs == outputs
        activation: Callable[..., nn.Module] = nn.Hardswish if hs else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != inputs:
            layers.append(ConvNormActivation(inputs, expanded, 1, activation=activation))
        layers.append(ConvNormActivation(expanded, expanded, kernel, stride, groups=expanded, activation=activation))
        if se:
            layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4)))
        layers.append(ConvNormActivation(expanded, outputs, 1, activation=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = result + x
        return result  # type: ignore[no-any-return]


# (input, kernel, expanded, output, squeeze-excite, hard-swish, stride): torchvision's "small" table.
_SMALL = [
    (16, 3, 16, 16, True, False, 2),
    (16, 3, 72, 24, False, False, 2),
    (24, 3, 88, 24, False, False, 1),
    (24, 5, 96, 40, True, True, 2),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 120, 48, True, True, 1),
    (48, 5, 144, 48, True, True, 1),
    (48, 5, 288, 96, True, True, 2),
    (96, 5, 576, 96, True, True, 1),
    (96, 5, 576, 96, True, True, 1),
]


class MobileNetV3Small(nn.Module):
    """torchvision.models.mobilenet_v3_small: the head is pool -> Linear -> Hardswish -> Dropout -> Linear."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvNormActivation(3, 16, 3, 2, activation=nn.Hardswish)]
        layers += [InvertedResidual(*row) for row in _SMALL]
        layers.append(ConvNormActivation(96, 576, 1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(576, 1024),
            nn.Hardswish(inplace=True),
            nn.Dropout(0.2, inplace=True),
            nn.Linear(1024, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)  # type: ignore[no-any-return]


# ------------------------------------------------------------------------ smaller common kinds


class GRUClassifier(nn.Module):
    """A two-layer GRU over [batch, time, features]; the last step's hidden state feeds a linear head."""

    def __init__(self, features: int = 6, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.rnn = nn.GRU(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, series: torch.Tensor) -> torch.Tensor:
        states, _ = self.rnn(series)
        return self.head(states[:, -1])  # type: ignore[no-any-return]


class LSTMRegressor(nn.Module):
    """One LSTM layer over [batch, time, features] and a linear read-out of the last step."""

    def __init__(self, features: int = 6, hidden: int = 24) -> None:
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, series: torch.Tensor) -> torch.Tensor:
        states, _ = self.rnn(series)
        return self.head(states[:, -1])  # type: ignore[no-any-return]


class TransformerClassifier(nn.Module):
    """Token ids [batch, length] -> embeddings + learned positions -> 2 encoder layers -> mean -> classes."""

    def __init__(self, vocab: int = 100, length: int = 16, width: int = 32, heads: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(1, length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.embed(tokens) + self.position)
        return self.head(hidden.mean(dim=1))  # type: ignore[no-any-return]


class TiedLanguageModel(nn.Module):
    """A next-token model whose output layer is the embedding matrix itself (weight tying)."""

    def __init__(self, vocab: int = 64, width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.GRU(width, width, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.mix(self.embed(tokens))
        return self.lm_head(self.norm(hidden))  # type: ignore[no-any-return]


class TwoHeads(nn.Module):
    """An image and a feature vector in; class logits and a regression value out."""

    def __init__(self, features: int = 5, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.tabular = nn.Sequential(nn.Linear(features, 16), nn.ReLU())
        self.classes = nn.Linear(8 + 16, classes)
        self.value = nn.Linear(8 + 16, 1)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        joint = torch.cat([self.conv(image).mean(dim=(2, 3)), self.tabular(features)], dim=1)
        return self.classes(joint), self.value(joint)


def trained_like(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give random-init weights what training would: BatchNorm statistics and affine parameters away
    from (0, 1), biases away from zero, and each copy of a cloned layer its own values (nn.Transformer
    deep-copies its first layer), so no two tensors are equal by accident; returns it in eval mode."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor: torch.Tensor, low: float, high: float) -> None:
        tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for child in module.modules():
            if isinstance(child, nn.BatchNorm2d):
                assert child.running_mean is not None
                assert child.running_var is not None
                uniform(child.running_mean, -0.2, 0.2)
                uniform(child.running_var, 0.5, 1.5)
                uniform(child.weight, 0.5, 1.5)
                uniform(child.bias, -0.1, 0.1)
        for name, parameter in module.named_parameters():
            if name.endswith("bias") or "norm" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
            else:
                parameter.mul_(1 + 0.05 * torch.randn(parameter.shape, generator=generator))
    return module.eval()


# -------------------------------------------------------------------- Grad-CAM, computed by torch


def last_conv_block(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The CNN's last convolutional block's output, where Grad-CAM looks."""
    if isinstance(module, ResNet18):
        x = module.maxpool(module.relu(module.bn1(module.conv1(x))))
        return module.layer4(module.layer3(module.layer2(module.layer1(x))))  # type: ignore[no-any-return]
    if isinstance(module, MobileNetV3Small):
        return module.features(x)  # type: ignore[no-any-return]
    raise TypeError(f"no feature map known for {type(module).__name__}")


def head(module: nn.Module, maps: torch.Tensor) -> torch.Tensor:
    """Everything after `last_conv_block`: the scores."""
    pooled = torch.flatten(module.avgpool(maps), 1)
    return module.fc(pooled) if isinstance(module, ResNet18) else module.classifier(pooled)  # type: ignore[no-any-return]


def torch_grad_cam(module: nn.Module, images: np.ndarray, targets: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM by autograd at the last convolutional block: ReLU(Σ_k mean_ij(∂y_c/∂A_k) · A_k), at
    feature-map resolution, unnormalised; and the logits. Targets default to the predicted class."""
    x = torch.from_numpy(images)
    maps = last_conv_block(module, x).detach().requires_grad_(True)
    logits = head(module, maps)
    chosen = logits.argmax(dim=1) if targets is None else torch.from_numpy(targets)
    (gradient,) = torch.autograd.grad(logits[torch.arange(len(x)), chosen].sum(), maps)
    alpha = gradient.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((alpha * maps).sum(dim=1))
    return cam.detach().double().numpy(), logits.detach().numpy()
