"""Quantization-ready MobileNetV2 and MobileNetV3-small definitions."""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.nn.quantized import FloatFunctional
from torch.ao.quantization import DeQuantStub, QuantStub


class ConvBNAct(nn.Sequential):
    """Conv2d + BatchNorm2d + optional activation, as children "0", "1", "2"."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1,
                 groups: int = 1, act: type[nn.Module] | None = None) -> None:
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-excite: global pool, 1x1 conv, ReLU, 1x1 conv, Hardsigmoid gate, mul."""

    def __init__(self, ch: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(ch, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, ch, 1)
        self.gate = nn.Hardsigmoid()
        self.mul = FloatFunctional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))
        return self.mul.mul(x, s)


class InvertedResidual(nn.Module):
    """MobileNet bottleneck: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project."""

    def __init__(self, cin: int, hidden: int, cout: int, k: int, stride: int,
                 act: type[nn.Module], se_ch: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvBNAct(cin, hidden, 1, act=act))
        layers.append(ConvBNAct(hidden, hidden, k, stride, groups=hidden, act=act))
        if se_ch:
            layers.append(SqueezeExcite(hidden, se_ch))
        layers.append(ConvBNAct(hidden, cout, 1))
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout
        if self.use_res:
            self.skip_add = FloatFunctional()

    def residual_last_bn(self) -> nn.BatchNorm2d | None:
        """The BatchNorm that ends the residual branch (None without a residual)."""
        return self.conv[-1][1] if self.use_res else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res:  # static, decided at construction
            return self.skip_add.add(x, self.conv(x))
        return self.conv(x)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round `v` to a multiple of `divisor`, never dropping more than 10%."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


def mobilenet_fuse_groups(model: nn.Module) -> list[list[str]]:
    """Fusion groups: conv+bn (+relu when the activation is a plain ReLU)."""
    groups = []
    for name, m in model.named_modules():
        if isinstance(m, ConvBNAct):
            g = [f"{name}.0", f"{name}.1"]
            if len(m) == 3 and type(m[2]) is nn.ReLU:
                g.append(f"{name}.2")
            groups.append(g)
        elif isinstance(m, SqueezeExcite):
            groups.append([f"{name}.fc1", f"{name}.relu"])
    return groups


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0): ReLU6 activations, no dropout."""

    HEAD = "classifier"  # final classifier Linear
    SMOOTH_DEPTHWISE = True  # see common.init_weights

    # expansion t, output channels c, repeats n, first stride s
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.quant = QuantStub()
        layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2, act=nn.ReLU6)]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, cin * t, c, 3, s if i == 0 else 1, nn.ReLU6))
                cin = c
        layers.append(ConvBNAct(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, num_classes)
        self.dequant = DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.quant(x))
        x = torch.flatten(self.pool(x), 1)
        return self.dequant(self.classifier(x))

    def fuse_groups(self) -> list[list[str]]:
        """Module-name groups for `fuse_modules`."""
        return mobilenet_fuse_groups(self)


class MobileNetV3Small(nn.Module):
    """MobileNetV3-small-like net with Hardswish, SE blocks and 3x3/5x5 depthwise.

    The final global pool is an `nn.AvgPool2d` sized for `image_size`, so the
    model accepts only that input resolution (SE blocks use AdaptiveAvgPool2d).
    """

    HEAD = "classifier.2"  # final classifier Linear

    # kernel, expanded, out, use_se, activation, stride
    SETTINGS = ((3, 16, 16, True, nn.ReLU, 2), (3, 72, 24, False, nn.ReLU, 2),
                (3, 88, 24, False, nn.ReLU, 1), (5, 96, 40, True, nn.Hardswish, 2),
                (5, 240, 40, True, nn.Hardswish, 1), (5, 240, 40, True, nn.Hardswish, 1),
                (5, 120, 48, True, nn.Hardswish, 1), (5, 144, 48, True, nn.Hardswish, 1),
                (5, 288, 96, True, nn.Hardswish, 2), (5, 576, 96, True, nn.Hardswish, 1),
                (5, 576, 96, True, nn.Hardswish, 1))

    def __init__(self, num_classes: int = 1000, image_size: int = 224) -> None:
        super().__init__()
        self.quant = QuantStub()
        layers: list[nn.Module] = [ConvBNAct(3, 16, 3, 2, act=nn.Hardswish)]
        cin, hw = 16, (image_size + 1) // 2
        for k, hidden, cout, use_se, act, stride in self.SETTINGS:
            se_ch = make_divisible(hidden / 4) if use_se else 0
            layers.append(InvertedResidual(cin, hidden, cout, k, stride, act, se_ch))
            cin, hw = cout, (hw + 1) // 2 if stride == 2 else hw
        layers.append(ConvBNAct(cin, 576, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(hw)
        self.classifier = nn.Sequential(
            nn.Linear(576, 1024), nn.Hardswish(), nn.Linear(1024, num_classes))
        self.dequant = DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.quant(x))
        x = torch.flatten(self.pool(x), 1)
        return self.dequant(self.classifier(x))

    def fuse_groups(self) -> list[list[str]]:
        """Module-name groups for `fuse_modules`."""
        return mobilenet_fuse_groups(self)
