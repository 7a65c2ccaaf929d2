"""Image tasks: the authors' networks and budgets, training epochs, and the end-of-epoch
training loss (eval mode over the whole training set, through the training transform)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from adaptopt.data import ImageData
from adaptopt.tasks import Budget
from adaptopt.tasks.image import ImageClassificationTask

CPU = torch.device("cpu")


def normalise(x: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """(x / 255 − mean) / std in float64 with per-channel statistics of ``images`` (numpy)."""
    raw = images.numpy().astype(np.float64) / 255
    mean = raw.mean(axis=(0, 2, 3))
    std = raw.std(axis=(0, 2, 3))
    out = (x.numpy().astype(np.float64) / 255 - mean[:, None, None]) / std[:, None, None]
    return torch.from_numpy(out)


def mean_cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    twin = _double(model).eval()
    with torch.no_grad():
        return F.cross_entropy(twin(x), y, reduction="sum").item() / len(y)


def _double(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` (the original is left as it is)."""
    return copy.deepcopy(model).double()


def test_nobn_tasks_are_the_authors_networks(build):
    task = build("cifar10-resnet56-nobn", smoke=True)
    full = build("cifar10-resnet56-nobn")
    assert (full.budget.epochs, full.budget.batch_size) == (300, 128)
    model = task.build_model()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert model.init == "kaiming"
    assert build("cifar10-resnet56-nobn-fixup", smoke=True).build_model().init == "fixup"
    assert build("fmnist-resnet20", smoke=True).build_model().init == "kaiming"


@pytest.mark.parametrize(
    ("depth", "adam", "adamw"),  # AdamW-Scale-free README: (--eta0, --weight-decay)
    [(20, (1e-3, 5e-4), (1e-3, 5e-5)), (110, (1e-3, 5e-4), (5e-4, 1e-4)),
     (218, (5e-4, 5e-3), (5e-4, 5e-5))],
)  # fmt: skip
def test_nobn_hparams_decay_weights_as_the_authors_adam(build, depth, adam, adamw):
    hp = build(f"cifar10-resnet{depth}-nobn", smoke=True).hparams
    assert (hp["adam"]["lr"], hp["adam"]["weight_decay"]) == adam
    # the authors' AdamW multiplies the weights by 1 − λ per step (constant η); with a zero
    # gradient torch's AdamW step is that multiplication alone
    p = nn.Parameter(torch.full((3,), 2.0, dtype=torch.float64))
    opt = torch.optim.AdamW([p], **hp["adamw"])
    p.grad = torch.zeros_like(p)
    opt.step()
    assert hp["adamw"]["lr"] == adamw[0]
    assert torch.allclose(p.detach(), torch.full_like(p, 2.0 * (1 - adamw[1])), rtol=1e-12)


def tiny_task(
    n_train: int, augment: bool, batch_size: int = 32, **kwargs
) -> ImageClassificationTask:
    g = torch.Generator().manual_seed(0)
    images = ImageData(
        torch.randint(0, 256, (n_train, 3, 8, 8), generator=g, dtype=torch.uint8),
        torch.randint(0, 4, (n_train,), generator=g),
        torch.randint(0, 256, (10, 3, 8, 8), generator=g, dtype=torch.uint8),
        torch.randint(0, 4, (10,), generator=g),
        classes=4,
    )

    def model() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(144, 4)
        )

    return ImageClassificationTask(
        name="tiny",
        metric="accuracy",
        higher_is_better=True,
        budget=Budget(1, batch_size),
        images=images,
        model_factory=model,
        augment=augment,
        eval_batch_size=16,
        **kwargs,
    )


def test_training_epochs_keep_the_last_smaller_batch():
    task = tiny_task(70, augment=True)  # 2 × 32 + 6, as a DataLoader without drop_last
    batches = list(task.train_batches(0, torch.Generator().manual_seed(1), CPU))
    assert [len(y) for _, y in batches] == [32, 32, 6]
    assert task.train_loss_from_evaluation


def test_train_loss_is_the_eval_mode_mean_over_the_training_set():
    task = tiny_task(70, augment=False)
    torch.manual_seed(0)
    model = task.build_model()  # in train mode: dropout on
    x, y = task.splits["train"]
    expected = mean_cross_entropy(model, normalise(x, x), y)
    got = task.evaluate(model, "train", CPU)
    assert got["loss"] == pytest.approx(expected, rel=1e-6)
    assert model.training  # restored
    with torch.no_grad():  # negative control: train mode (dropout) is another number
        dropout_loss = F.cross_entropy(_double(model).train()(normalise(x, x)), y).item()
    assert abs(dropout_loss - expected) > 1e-3 * expected


def candidates(u: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """All pad-``padding`` crops of ``u[C, H, W]`` and their mirror images: [(2p+1)²·2, C, H, W]."""
    c, h, w = u.shape
    padded = torch.zeros(c, h + 2 * padding, w + 2 * padding, dtype=u.dtype)
    padded[:, padding : padding + h, padding : padding + w] = u
    crops = [
        padded[:, r : r + h, s : s + w]
        for r in range(2 * padding + 1)
        for s in range(2 * padding + 1)
    ]
    return torch.stack(crops + [crop.flip(-1) for crop in crops])


def test_augmented_train_loss_sees_one_training_transform_of_every_image():
    task = tiny_task(40, augment=True)
    x, y = task.splits["train"]
    seen = list(task.eval_batches("train", CPU))
    images = torch.cat([b for b, _ in seen]).double()
    assert torch.equal(torch.cat([t for _, t in seen]), y)  # every example once, in order
    chosen = []
    for i in range(len(x)):
        options = normalise(candidates(x[i]), x)
        err = (options - images[i]).abs().flatten(1).amax(1)
        assert err.min() < 1e-5, i  # image i went through a pad-4 crop (+ flip)
        chosen.append(options[err.argmin()])
    chosen = torch.stack(chosen)
    assert not torch.allclose(chosen, normalise(x, x))  # augmentation did happen

    torch.manual_seed(0)
    model = task.build_model()
    expected = mean_cross_entropy(model, chosen, y)
    first, again = task.evaluate(model, "train", CPU), task.evaluate(model, "train", CPU)
    assert first["loss"] == pytest.approx(expected, rel=1e-6)
    assert first == again  # the same seeded draws at every evaluation
    clean = mean_cross_entropy(model, normalise(x, x), y)
    assert abs(first["loss"] - clean) > 1e-3 * clean
    plain = tiny_task(40, augment=True, augment_train_eval=False)
    assert plain.evaluate(model, "train", CPU)["loss"] == pytest.approx(clean, rel=1e-6)
    other = tiny_task(40, augment=True, train_eval_seed=1).evaluate(model, "train", CPU)
    assert other["loss"] != first["loss"]
    # valid/test never see augmentation
    xt, yt = task.splits["test"]
    test_loss = task.evaluate(model, "test", CPU)["loss"]
    assert test_loss == pytest.approx(mean_cross_entropy(model, normalise(xt, x), yt), rel=1e-6)


def test_sgdol_cnn_train_loss_on_real_data(build):
    task = build("fmnist-cnn", smoke=True)
    x, y = task.splits["train"]
    torch.manual_seed(0)
    model = task.build_model()
    got = task.evaluate(model, "train", CPU)["loss"]
    assert got == pytest.approx(mean_cross_entropy(model, normalise(x, x), y), rel=1e-5)
    assert math.isfinite(got)


def test_bad_split_is_rejected():
    with pytest.raises(ValueError, match="split must be one of"):
        tiny_task(40, augment=False).evaluate(nn.Identity(), "dev", CPU)


def test_train_eval_examples_evaluates_a_fixed_seeded_subset():
    """The training loss on n examples equals an independent mean over the same n images."""
    task = tiny_task(70, augment=False, train_eval_examples=20, train_eval_seed=3)
    torch.manual_seed(0)
    model = task.build_model()
    x, y = task.splits["train"]
    keep = torch.randperm(70, generator=torch.Generator().manual_seed(3))[:20].sort().values
    expected = mean_cross_entropy(model, normalise(x[keep], x), y[keep])
    assert task.evaluate(model, "train", CPU)["loss"] == pytest.approx(expected, rel=1e-5)
    full = tiny_task(70, augment=False).evaluate(model, "train", CPU)["loss"]
    assert full != pytest.approx(expected, rel=1e-4)  # negative control: not the whole split
    with pytest.raises(ValueError, match="train_eval_examples"):
        tiny_task(70, augment=False, train_eval_examples=0).evaluate(model, "train", CPU)
