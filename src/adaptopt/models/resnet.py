"""CIFAR-style ResNets (He et al., CVPR 2016, §4.2) with option-A shortcuts.

Depth 6n+2: a 3×3 stem with ``width`` channels, three stages of n basic blocks at
``width``, 2·``width`` and 4·``width`` channels (strides 1, 2, 2), global average pooling and a
linear classifier. Option A: when a block changes the shape, its shortcut subsamples by 2 and
zero-pads the new channels, so shortcuts have no parameters (ResNet-20: 0.27M parameters).

``batch_norm=False`` removes every BatchNorm for the AdamW scale-freeness study (talk §3,
SPEC.md §3). Such a network is initialised Fixup-style (Zhang, Dauphin & Ma, ICLR 2019) so
that it trains without normalisation: every block's output equals its shortcut at
initialisation because the last convolution of each residual branch starts at zero, the other
branch convolutions get He initialisation scaled by L^(-1/2) (L = number of residual
branches, m = 2 layers per branch in Fixup's L^(-1/(2m-2))), the classifier starts at zero,
and every convolution gets a zero-initialised bias in place of BatchNorm's shift.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DEPTHS = (20, 32, 44, 56, 110, 218)


class BasicBlock(nn.Module):
    """conv3×3 → (BN) → ReLU → conv3×3 → (BN), plus the option-A shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, batch_norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(planes) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=not batch_norm)
        self.bn2 = nn.BatchNorm2d(planes) if batch_norm else nn.Identity()
        self.stride = stride
        self.pad = planes - in_planes  # channels added by the zero-padding shortcut

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for 32×32 (or 28×28) images; ``depth`` = 6n + 2."""

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        width: int = 16,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (e.g. {DEPTHS}), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(width) if batch_norm else nn.Identity()
        blocks, in_planes = [], width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, batch_norm))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(in_planes, num_classes)
        self._init_weights(batch_norm)

    def _init_weights(self, batch_norm: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)  # as the reference CIFAR ResNet code
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if batch_norm:
            return
        branch_scale = len(self.blocks) ** -0.5  # Fixup: L^(-1/(2m-2)) with m = 2
        for block in self.blocks:
            block.conv1.weight.data.mul_(branch_scale)
            nn.init.zeros_(block.conv2.weight)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
