"""Images/s of the device-resident pipeline vs a per-sample ``torch.utils.data.DataLoader``.

Both produce the same training batches: pad-4 random crop + horizontal flip + per-channel
normalization (paper §5.1), float32, on ``--device``. The baseline augments one image at a
time in ``Dataset.__getitem__`` with tensor ops (no PIL: a faster baseline than the usual
torchvision transforms), collates, and copies each batch to the device.

    python benchmarks/input_pipeline.py                       # CPU, CIFAR-shaped random data
    python benchmarks/input_pipeline.py --device cuda --workers 4
    python benchmarks/input_pipeline.py --data fashion-mnist  # real files, if present
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from adaptopt.data import DeviceImageLoader, ImageData, load_cifar10, load_fashion_mnist


class PerSampleAugment(Dataset):
    """The conventional pipeline: augmentation and normalization per sample on the CPU."""

    def __init__(self, data: ImageData, padding: int = 4) -> None:
        self.x, self.y, self.padding = data.train_x, data.train_y, padding
        self.mean = torch.tensor(data.mean).view(-1, 1, 1)
        self.std = torch.tensor(data.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.x[i]
        h, w = image.shape[-2:]
        padded = F.pad(image, (self.padding,) * 4)
        dy, dx = torch.randint(0, 2 * self.padding + 1, (2,)).tolist()
        image = padded[:, dy : dy + h, dx : dx + w]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return (image.float() / 255 - self.mean) / self.std, self.y[i]


def synthetic(n: int, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ImageData(x, torch.randint(0, 10, (n,), generator=g), x[:1], torch.zeros(1), 10)


def images_per_second(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device, max_batches: int
) -> float:
    """Throughput over ``max_batches`` batches after one warm-up batch."""
    iterator = iter(batches)
    next(iterator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    count, start = 0, time.perf_counter()
    for step, (x, y) in enumerate(iterator):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        count += len(x)
        if step + 1 == max_batches:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--data", choices=("synthetic", "cifar10", "fashion-mnist"), default="synthetic"
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--n", type=int, default=50_000, help="synthetic images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=100, help="timed batches per pipeline")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    loaders = {"cifar10": load_cifar10, "fashion-mnist": load_fashion_mnist}
    data = synthetic(args.n) if args.data == "synthetic" else loaders[args.data](args.data_dir)
    print(
        f"{args.data}: {tuple(data.train_x.shape)} uint8, batch {args.batch_size}, "
        f"device {device}, torch threads {torch.get_num_threads()}"
    )

    baseline = DataLoader(
        PerSampleAugment(data),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )
    fast = DeviceImageLoader(
        data.train_x,
        data.train_y,
        args.batch_size,
        device=device,
        augment=True,
        mean=data.mean,
        std=data.std,
        channels_last=args.channels_last,
        generator=torch.Generator().manual_seed(0),
    )
    rate_baseline = images_per_second(baseline, device, args.batches)
    rate_fast = images_per_second(fast, device, args.batches)
    print(f"DataLoader per-sample ({args.workers} workers): {rate_baseline:12,.0f} images/s")
    print(f"DeviceImageLoader:                     {rate_fast:12,.0f} images/s")
    print(f"ratio: {rate_fast / rate_baseline:.1f}x")


if __name__ == "__main__":
    main()
