"""A device-resident image pipeline and seeded validation splits.

The whole (small) dataset lives on the device as ``uint8``; each batch is gathered, augmented
with the standard CIFAR recipe (He et al. 2016; paper §5.1: pad 4, random crop to the original
size, random horizontal flip) in one indexing op for the whole batch, then normalized in float.
All randomness of an epoch is drawn up front from the given ``torch.Generator``, so the batches
depend on the generator only (identical on CPU and GPU for the same seed).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.nn import functional as F


def split_validation(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of ``range(n)`` into sorted ``(train_idx, valid_idx)``; the validation part
    holds ``round(fraction * n)`` examples (grid search on held-out data, SPEC.md §4)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    n_valid = round(fraction * n)
    if not 0 < n_valid < n:
        raise ValueError(f"fraction={fraction} of n={n} leaves an empty train or valid split")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_valid:].sort().values, perm[:n_valid].sort().values


def crop_flip(
    x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int
) -> torch.Tensor:
    """Zero-pad ``x[B, C, H, W]`` by ``padding``, take the ``H x W`` window at ``offsets[B, 2]``
    (row, column; each in ``[0, 2 * padding]``) and mirror it where ``flips[B]`` is true.

    One ``gather`` over each flattened padded image (the fastest form on CPU as well as GPU).
    """
    b, c, h, w = x.shape
    padded_h, padded_w = h + 2 * padding, w + 2 * padding
    padded = F.pad(x, (padding, padding, padding, padding)).view(b, -1)
    arange_w = torch.arange(w, device=x.device)
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = offsets[:, 1, None] + torch.where(flips[:, None], w - 1 - arange_w, arange_w)  # [B, W]
    channels = torch.arange(c, device=x.device) * (padded_h * padded_w)  # [C]
    flat = (
        channels[None, :, None, None] + (rows * padded_w)[:, None, :, None] + cols[:, None, None, :]
    )
    return padded.gather(1, flat.view(b, -1)).view(b, c, h, w)


class DeviceImageLoader:
    """Batches of ``(normalized float images, labels)`` from ``uint8[N, C, H, W]`` on ``device``.

    Args:
        x, y: images ``uint8[N, C, H, W]`` and labels ``[N]``; copied to ``device`` once.
        batch_size: examples per batch.
        device: where data, augmentation and batches live.
        augment: pad-``padding`` random crop + horizontal flip (training only).
        mean, std: per-channel statistics on the [0, 1] scale (``ImageData.mean/std``).
        channels_last: return batches in ``torch.channels_last`` memory format.
        drop_last: drop the last incomplete batch.
        shuffle: new random order each epoch (else the stored order).
        dtype: floating dtype of the images (e.g. ``torch.bfloat16``).
        generator: randomness used by ``iter(loader)``; ``epoch_batches`` takes its own.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        device: torch.device | str,
        augment: bool,
        mean: Sequence[float],
        std: Sequence[float],
        channels_last: bool = False,
        drop_last: bool = True,
        shuffle: bool = True,
        padding: int = 4,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> None:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"x must be uint8[N, C, H, W], got {x.dtype} {tuple(x.shape)}")
        if y.shape != (len(x),):
            raise ValueError(f"y must have shape ({len(x)},), got {tuple(y.shape)}")
        channels = x.size(1)
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} entries, got {len(mean)}, {len(std)}")
        if not 1 <= batch_size <= len(x):
            raise ValueError(f"batch_size must be in [1, {len(x)}], got {batch_size}")
        self.device = torch.device(device)
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.batch_size, self.augment, self.padding = batch_size, augment, padding
        self.channels_last, self.drop_last, self.shuffle = channels_last, drop_last, shuffle
        self.dtype, self.generator = dtype, generator
        # (x / 255 - mean) / std  ==  x * scale + shift
        std_t = torch.tensor(std, dtype=torch.float64)
        mean_t = torch.tensor(mean, dtype=torch.float64)
        self.scale = (1 / (255 * std_t)).float().view(1, -1, 1, 1).to(self.device)
        self.shift = (-mean_t / std_t).float().view(1, -1, 1, 1).to(self.device)

    def __len__(self) -> int:
        full, rest = divmod(len(self.x), self.batch_size)
        return full + int(rest > 0 and not self.drop_last)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch_batches(self.generator)

    def epoch_batches(
        self, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch; order, crop offsets and flips are drawn from ``generator`` up front."""
        n = len(self.x)
        rng: dict[str, Any] = {
            "generator": generator,
            "device": None if generator is None else generator.device,
        }
        order = torch.randperm(n, **rng) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        if self.augment:
            offsets = torch.randint(0, 2 * self.padding + 1, (n, 2), **rng).to(self.device)
            flips = torch.randint(0, 2, (n,), **rng).bool().to(self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            window = slice(start, start + self.batch_size)
            idx = order[window]
            xb = self.x.index_select(0, idx)
            if self.augment:
                xb = crop_flip(xb, offsets[window], flips[window], self.padding)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield (
                torch.addcmul(self.shift, xb, self.scale).to(self.dtype),
                self.y.index_select(0, idx),
            )
