"""Quantization-ready ResNet-18 (BasicBlock topology, eager-mode stubs)."""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.nn.quantized import FloatFunctional
from torch.ao.quantization import DeQuantStub, QuantStub


class BasicBlock(nn.Module):
    """Two 3x3 conv-bn layers with a residual add+relu through FloatFunctional."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.skip_add = FloatFunctional()

    def residual_last_bn(self) -> nn.BatchNorm2d:
        """The BatchNorm that ends the residual branch."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.skip_add.add_relu(out, identity)

    def fuse_groups(self, prefix: str) -> list[list[str]]:
        """Module-name groups for `fuse_modules`."""
        groups = [[f"{prefix}conv1", f"{prefix}bn1", f"{prefix}relu1"],
                  [f"{prefix}conv2", f"{prefix}bn2"]]
        if self.downsample is not None:
            groups.append([f"{prefix}downsample.0", f"{prefix}downsample.1"])
        return groups


class ResNet18(nn.Module):
    """ResNet-18: stem, four stages of two BasicBlocks, global pool, linear."""

    HEAD = "fc"  # final classifier Linear

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.quant = QuantStub()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        cin = 64
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            stage = nn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width, 1))
            setattr(self, f"layer{i + 1}", stage)
            cin = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        self.dequant = DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.dequant(self.fc(x))

    def fuse_groups(self) -> list[list[str]]:
        """Module-name groups for `fuse_modules` (conv+bn[+relu])."""
        groups = [["conv1", "bn1", "relu"]]
        for i in range(1, 5):
            for j, block in enumerate(getattr(self, f"layer{i}")):
                groups += block.fuse_groups(f"layer{i}.{j}.")
        return groups
