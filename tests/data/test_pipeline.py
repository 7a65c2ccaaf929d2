import pytest
import torch
from torch.nn import functional as F

from adaptopt.data import DeviceImageLoader, crop_flip, split_validation

MEAN, STD = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)


def images(n, channels=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)


def normalize_reference(x, mean, std):
    mean = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    return (x.double() / 255 - mean) / std


def window_of(out, image, padding):
    """Whether ``out`` equals a window of the zero-padded ``image``, possibly mirrored."""
    padded = F.pad(image, (padding,) * 4)
    h, w = image.shape[-2:]
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[..., dy : dy + h, dx : dx + w]
            for candidate, flip in ((crop, False), (crop.flip(-1), True)):
                if torch.equal(out, candidate):
                    return dy, dx, flip
    return None


def test_split_validation_is_a_seeded_partition():
    train, valid = split_validation(100, 0.1, seed=3)
    assert len(valid) == 10 and len(train) == 90
    assert sorted(torch.cat([train, valid]).tolist()) == list(range(100))
    assert torch.equal(train, train.sort().values) and torch.equal(valid, valid.sort().values)
    assert torch.equal(valid, split_validation(100, 0.1, seed=3)[1])
    assert not torch.equal(valid, split_validation(100, 0.1, seed=4)[1])
    with pytest.raises(ValueError, match="fraction"):
        split_validation(100, 1.0, seed=0)
    with pytest.raises(ValueError, match="empty"):
        split_validation(3, 0.1, seed=0)


def test_crop_flip_matches_explicit_windows():
    x = images(4)
    offsets = torch.tensor([[4, 4], [0, 8], [8, 0], [2, 5]])
    flips = torch.tensor([False, True, False, True])
    out = crop_flip(x, offsets, flips, padding=4)
    padded = F.pad(x, (4, 4, 4, 4))
    for i, ((dy, dx), flip) in enumerate(zip(offsets.tolist(), flips.tolist(), strict=True)):
        window = padded[i, :, dy : dy + 32, dx : dx + 32]
        assert torch.equal(out[i], window.flip(-1) if flip else window)
    assert torch.equal(out[0], x[0])  # centred window, no flip: the image itself


def test_loader_without_augmentation_normalizes_exactly():
    x, y = images(10), torch.arange(10)
    loader = DeviceImageLoader(
        x, y, 4, device="cpu", augment=False, mean=MEAN, std=STD, shuffle=False, drop_last=False
    )
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and [len(b) for _, b in batches] == [4, 4, 2]
    out = torch.cat([xb for xb, _ in batches])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), normalize_reference(x, MEAN, STD), rtol=0, atol=1e-5)
    assert torch.equal(torch.cat([yb for _, yb in batches]), y)


@pytest.mark.parametrize("channels,size", [(3, 32), (1, 28)])
def test_augmented_batches_are_shifted_flipped_windows(channels, size):
    n = 40
    x, y = images(n, channels, size, seed=1), torch.arange(n)
    loader = DeviceImageLoader(
        x, y, 16, device="cpu", augment=True, mean=(0.0,) * channels, std=(1.0,) * channels
    )
    seen, flips, offsets = [], set(), set()
    for xb, yb in loader.epoch_batches(torch.Generator().manual_seed(0)):
        assert xb.shape == (16, channels, size, size)
        pixels = (xb * 255).round().to(torch.uint8)
        for out, i in zip(pixels, yb.tolist(), strict=True):
            found = window_of(out, x[i], padding=4)
            assert found is not None
            offsets.add(found[:2])
            flips.add(found[2])
        seen += yb.tolist()
    assert len(seen) == 32 and len(set(seen)) == 32  # drop_last; no repeats within an epoch
    assert flips == {False, True} and len(offsets) > 10


def test_batches_depend_on_the_generator_only():
    x, y = images(64), torch.arange(64)
    kwargs = dict(device="cpu", augment=True, mean=MEAN, std=STD)

    def epoch(seed):
        loader = DeviceImageLoader(
            x, y, 16, generator=torch.Generator().manual_seed(seed), **kwargs
        )
        return list(loader)

    a, b, c = epoch(5), epoch(5), epoch(6)
    assert all(
        torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True)
    )
    assert not all(torch.equal(p[1], q[1]) for p, q in zip(a, c, strict=True))


def test_channels_last_and_bfloat16_options():
    x, y = images(8), torch.arange(8)
    plain = DeviceImageLoader(x, y, 8, device="cpu", augment=True, mean=MEAN, std=STD)
    fast = DeviceImageLoader(
        x,
        y,
        8,
        device="cpu",
        augment=True,
        mean=MEAN,
        std=STD,
        channels_last=True,
        dtype=torch.bfloat16,
    )
    ((xa, ya),) = plain.epoch_batches(torch.Generator().manual_seed(0))
    ((xb, yb),) = fast.epoch_batches(torch.Generator().manual_seed(0))
    assert xb.dtype == torch.bfloat16 and xb.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(ya, yb) and torch.equal(xa.to(torch.bfloat16), xb)


def test_bad_arguments_are_rejected():
    x, y = images(4), torch.arange(4)
    common = dict(device="cpu", augment=False)
    with pytest.raises(ValueError, match="uint8"):
        DeviceImageLoader(x.float(), y, 2, mean=MEAN, std=STD, **common)
    with pytest.raises(ValueError, match="mean and std need 3"):
        DeviceImageLoader(x, y, 2, mean=(0.5,), std=(0.5,), **common)
    with pytest.raises(ValueError, match="y must have shape"):
        DeviceImageLoader(x, y[:3], 2, mean=MEAN, std=STD, **common)
    with pytest.raises(ValueError, match="batch_size"):
        DeviceImageLoader(x, y, 5, mean=MEAN, std=STD, **common)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_batches_equal_cpu_batches():
    x, y = images(256), torch.arange(256)
    kwargs = dict(augment=True, mean=MEAN, std=STD, channels_last=True)
    cpu = DeviceImageLoader(x, y, 64, device="cpu", **kwargs)
    gpu = DeviceImageLoader(x, y, 64, device="cuda", **kwargs)
    for (xa, ya), (xb, yb) in zip(
        cpu.epoch_batches(torch.Generator().manual_seed(0)),
        gpu.epoch_batches(torch.Generator().manual_seed(0)),
        strict=True,
    ):
        assert xb.device.type == "cuda" and torch.equal(ya, yb.cpu())
        torch.testing.assert_close(xa, xb.cpu(), rtol=0, atol=1e-6)
