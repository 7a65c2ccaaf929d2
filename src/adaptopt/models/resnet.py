"""CIFAR-style ResNets (He et al., CVPR 2016, §4.2) with option-A shortcuts.

Depth 6n+2: a 3×3 stem with ``width`` channels, three stages of n basic blocks at
``width``, 2·``width`` and 4·``width`` channels (strides 1, 2, 2), global average pooling and a
linear classifier. Option A: when a block changes the shape, its shortcut subsamples by 2 and
zero-pads the new channels, so shortcuts have no parameters (ResNet-20: 0.27M parameters).
Convolutions have no bias. Initialisation (``init="kaiming"``) is the one of the authors'
CIFAR ResNet code (Generalized-SignSGD ``cifar10/cifar10_resnet.py``, AdamW-Scale-free
``src/resnet.py``): He-normal weights (fan-in, gain √2, std √(2/fan_in)) for every convolution
*and* the classifier, the classifier's bias left at PyTorch's default U(±1/√fan_in), BatchNorm
at γ = 1, β = 0. Modules are created and initialised in the authors' order, so the same
``torch.manual_seed`` gives the same initial weights as their code.

``batch_norm=False`` removes every BatchNorm and nothing else: the networks of the AdamW
scale-freeness study (talk §3; the authors' ``--no-batch-norm``), still bias-free convolutions
with He initialisation. ``init="fixup"`` (only without BatchNorm) is a variant of ours, not the
authors': Fixup-style initialisation (Zhang, Dauphin & Ma, ICLR 2019) under which every block
is the identity at initialisation (the last convolution of each residual branch starts at zero,
the other branch convolutions get He initialisation scaled by L^(-1/2), L = number of residual
branches, m = 2 layers per branch in Fixup's L^(-1/(2m-2))), a zero classifier, and a
zero-initialised bias on every convolution in place of BatchNorm's shift.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DEPTHS = (20, 32, 44, 56, 110, 218)
INITS = ("kaiming", "fixup")


class BasicBlock(nn.Module):
    """conv3×3 → (BN) → ReLU → conv3×3 → (BN), plus the option-A shortcut, then ReLU."""

    def __init__(
        self, in_planes: int, planes: int, stride: int, batch_norm: bool, conv_bias: bool = False
    ) -> None:
        super().__init__()
        # the authors' creation order (conv1, conv2, bn1, bn2) keeps their RNG sequence
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=conv_bias)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=conv_bias)
        self.bn1 = nn.BatchNorm2d(planes) if batch_norm else nn.Identity()
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
    """ResNet-``depth`` for 32×32 (or 28×28) images; ``depth`` = 6n + 2.

    Args:
        depth: 6n + 2 layers (n ≥ 1), e.g. 20, 32, 44, 56, 110, 218.
        num_classes: outputs of the classifier.
        in_channels: image channels (3 for CIFAR, 1 for Fashion-MNIST).
        width: channels of the first stage (16 in the paper).
        batch_norm: False removes every BatchNorm (the authors' ``--no-batch-norm``).
        init: ``"kaiming"`` (the authors') or ``"fixup"`` (ours; needs ``batch_norm=False``).
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        width: int = 16,
        batch_norm: bool = True,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (e.g. {DEPTHS}), got {depth}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if init == "fixup" and batch_norm:
            raise ValueError("init='fixup' is for networks without BatchNorm (batch_norm=False)")
        n = (depth - 2) // 6
        fixup = init == "fixup"
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=fixup)
        self.bn1 = nn.BatchNorm2d(width) if batch_norm else nn.Identity()
        blocks, in_planes = [], width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, batch_norm, conv_bias=fixup))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(in_planes, num_classes)
        self.init = init
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():  # registration order, as the authors' ``self.apply``
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)  # fan_in, gain √2
        if self.init == "kaiming":
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                assert m.bias is not None  # every convolution has a bias under fixup
                nn.init.zeros_(m.bias)
        branch_scale = len(self.blocks) ** -0.5  # Fixup: L^(-1/(2m-2)) with m = 2
        for block in self.blocks:
            assert isinstance(block, BasicBlock)
            block.conv1.weight.data.mul_(branch_scale)
            nn.init.zeros_(block.conv2.weight)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
