"""The MNIST convolutional network of the SGDOL experiments (dissertation, ch. 1).

conv5×5·32 → ReLU → max-pool 2 → conv5×5·64 → ReLU → max-pool 2 → fc1024 → ReLU →
dropout 0.5 → fc10, with "same" padding (3,274,634 parameters for 28×28 inputs).
"""

from __future__ import annotations

from torch import nn


class MnistCNN(nn.Sequential):
    """The SGDOL CNN for ``in_channels``×``image_size``² images (``image_size`` divisible by 4)."""

    def __init__(
        self,
        num_classes: int = 10,
        *,
        in_channels: int = 1,
        image_size: int = 28,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 1024,
        dropout: float = 0.5,
    ) -> None:
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        c1, c2 = channels
        super().__init__(
            nn.Conv2d(in_channels, c1, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * (image_size // 4) ** 2, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
