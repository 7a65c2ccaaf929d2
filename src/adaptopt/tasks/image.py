"""Image classification tasks: ResNets on CIFAR-10 / Fashion-MNIST, the SGDOL CNN on MNIST.

- ``cifar10-resnet20``: paper §5.1 — ResNet-20, batch 128, 164 epochs, constant learning rate,
  weight decay 1e-4, per-channel normalisation from the training images, pad-4 random crop +
  horizontal flip; ``hparams`` are the authors' tuned values (SPEC.md §4, Table 1).
- ``{cifar10,fmnist}-resnet{20,44,56,110,218}-nobn``: the ResNets without BatchNorm of the
  AdamW scale-freeness study (talk §3; authors' AdamW-Scale-free ``src/resnet.py`` with
  ``--no-batch-norm``): He-initialised, bias-free convolutions, batch 128, 300 epochs, constant
  learning rate. On CIFAR-10 ``hparams`` hold the authors' final Adam-ℓ2 (``adam``) and AdamW
  (``adamw``) settings per depth from their README commands.
- ``{cifar10,fmnist}-resnet{...}-nobn-fixup``: the same networks with our Fixup-style
  initialisation and zero-initialised convolution biases (``CifarResNet(init="fixup")``), a
  variant that is not the authors'.
- ``fmnist-resnet20``: ResNet-20 on 1-channel 28×28 Fashion-MNIST (no augmentation, as the
  authors' loader).
- ``mnist-cnn`` / ``fmnist-cnn``: the SGDOL CNN (dissertation ch. 1): batch 100, 30 epochs;
  SGDOL with its default M = 10, α = 10.

The epoch's training loss (Table 1) is the authors': the mean cross-entropy over the whole
training set in eval mode at the end of the epoch (``train_loss_from_evaluation``). Their
``evaluate(train_loader, ...)`` reuses the training loader, so on CIFAR-10 it sees augmented
images; ``evaluate(model, "train")`` does the same with crops and flips drawn from a generator
seeded by ``train_eval_seed`` (the same draws at every evaluation).
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from adaptopt.data import (
    DatasetNotFoundError,
    DeviceImageLoader,
    ImageData,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    split_validation,
)
from adaptopt.data.images import MNIST_FILES
from adaptopt.models import CifarResNet, MnistCNN
from adaptopt.tasks._loading import limit, load_cached
from adaptopt.tasks.base import Budget, Task

VALID_FRACTION = 0.1  # authors' --val-ratio
SPLIT_SEED = 0

WD = 1e-4  # paper §5.1: fixed weight decay 1e-4, β1 = 0.9
# SPEC.md §4, authors' final settings for ResNet-20 on CIFAR-10
CIFAR10_HPARAMS: dict[str, dict[str, Any]] = {
    "gsignsgd": {"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": WD},
    "adam": {"lr": 9e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": WD},
    "sgd": {"lr": 0.07, "momentum": 0.9, "nesterov": True, "weight_decay": WD},
    "sgd_clip_grad": {"lr": 0.5, "gamma": 1.0, "weight_decay": WD},
    "sgd_clip_momentum": {
        "lr": 10.0,
        "gamma": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": WD,
    },
    "sgd_normalized": {"lr": 0.1, "momentum": 0.9, "weight_decay": WD},
}
SGDOL_HPARAMS: dict[str, dict[str, Any]] = {"sgdol": {"smoothness": 10.0, "alpha": 10.0}}


def _nobn_hparams(
    lr_l2: float, wd_l2: float, lr_w: float, wd_w: float
) -> dict[str, dict[str, Any]]:
    """The authors' final Adam-ℓ2 / AdamW settings (AdamW-Scale-free README, CIFAR-10).

    Their AdamW multiplies the weights by 1 − λ·η/η0 = 1 − λ per step (constant η), while
    ``torch.optim.AdamW`` multiplies them by 1 − η·weight_decay: weight_decay = λ / η.
    """
    return {
        "adam": {"lr": lr_l2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": wd_l2},
        "adamw": {"lr": lr_w, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": wd_w / lr_w},
    }


NOBN_HPARAMS = {  # depth -> (Adam-ℓ2 η, λ, AdamW η, λ), the README's --eta0 / --weight-decay
    20: _nobn_hparams(1e-3, 5e-4, 1e-3, 5e-5),
    44: _nobn_hparams(5e-4, 5e-4, 5e-4, 5e-5),
    56: _nobn_hparams(5e-4, 5e-4, 5e-4, 5e-5),
    110: _nobn_hparams(1e-3, 5e-4, 5e-4, 1e-4),
    218: _nobn_hparams(5e-4, 5e-3, 5e-4, 5e-5),
}
NOBN_EPOCHS = 300  # AdamW-Scale-free README: --train-epochs 300 --batchsize 128


@dataclass
class ImageClassificationTask(Task):
    """Cross-entropy classification of ``uint8`` images kept on the device (DeviceImageLoader).

    Without ``validation`` the ``"valid"`` split is the test set (no official validation set).
    Training batches are the authors' ``DataLoader`` epochs: shuffled, the last one smaller
    when the batch size does not divide the training set (CIFAR-10: 390 × 128 + 80).

    ``evaluate(model, "train")`` is the authors' end-of-epoch training loss: eval mode, every
    training example once, through the training transform (augmented if ``augment``; the crops
    and flips come from a generator seeded by ``train_eval_seed``, so every evaluation sees the
    same images). ``augment_train_eval=False`` evaluates the clean training images instead;
    ``train_eval_examples=n`` evaluates a fixed subset of n training examples (drawn with
    ``train_eval_seed``): an estimate of the same quantity for small budgets.
    """

    train_loss_from_evaluation: ClassVar[bool] = True

    images: ImageData | None = None
    model_factory: Callable[[], nn.Module] | None = None
    augment: bool = False
    channels_last: bool = False
    eval_batch_size: int = 1000
    augment_train_eval: bool = True
    train_eval_seed: int = 0
    train_eval_examples: int | None = None  # evaluate the training loss on this many (seeded)
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(init=False, repr=False)
    _loaders: dict[tuple[str, bool, int, torch.device], DeviceImageLoader] = field(
        init=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        data = self._images()
        train = (data.train_x, data.train_y)
        test = (data.test_x, data.test_y)
        if self.validation:
            fit, held_out = split_validation(len(data.train_x), VALID_FRACTION, SPLIT_SEED)
            train = (data.train_x[fit], data.train_y[fit])
            valid = (data.train_x[held_out], data.train_y[held_out])
        else:
            valid = test
        self.splits = {"train": train, "valid": valid, "test": test}

    def build_model(self) -> nn.Module:
        if self.model_factory is None:
            raise ValueError(f"task {self.name!r} has no model_factory")
        return self.model_factory()

    def _images(self) -> ImageData:
        if self.images is None:
            raise ValueError(f"task {self.name!r} has no images")
        return self.images

    def _loader(self, split: str, device: torch.device, training: bool) -> DeviceImageLoader:
        if split not in self.splits:
            raise ValueError(f"split must be one of {sorted(self.splits)}, got {split!r}")
        if split == "valid" and not self.validation:
            split = "test"  # the same tensors: keep one copy on the device
        x, y = self.splits[split]
        n_eval = self.train_eval_examples
        if split == "train" and not training and n_eval is not None:
            if n_eval < 1:
                raise ValueError(f"train_eval_examples must be >= 1, got {n_eval}")
            g = torch.Generator().manual_seed(self.train_eval_seed)
            keep = torch.randperm(len(x), generator=g)[:n_eval].sort().values
            x, y = x[keep], y[keep]
        batch_size = self.budget.batch_size if training else min(self.eval_batch_size, len(x))
        key = (split, training, batch_size, torch.device(device))
        if key not in self._loaders:
            augment = self.augment and (training or (split == "train" and self.augment_train_eval))
            self._loaders[key] = DeviceImageLoader(
                x,
                y,
                batch_size,
                device=device,
                augment=augment,
                mean=self._images().mean,
                std=self._images().std,
                channels_last=self.channels_last,
                drop_last=False,
                shuffle=training,
            )
        return self._loaders[key]

    def train_batches(
        self, epoch: int, generator: torch.Generator, device: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return limit(self._loader("train", device, True).epoch_batches(generator), self.budget)

    def probe_batches(
        self, generator: torch.Generator, device: torch.device, fraction: float = 0.1
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``fraction`` of an epoch's (shuffled, augmented) batches, drawn without
        materialising the rest of the epoch."""
        n = max(1, round(fraction * len(self._loader("train", device, True))))
        return list(itertools.islice(self.train_batches(0, generator, device), n))

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    def eval_batches(
        self, split: str, device: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every example of ``split`` once, in stored order, as :meth:`evaluate` sees it."""
        loader = self._loader(split, device, False)
        generator = torch.Generator().manual_seed(self.train_eval_seed) if loader.augment else None
        return loader.epoch_batches(generator)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        total_loss = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        n = 0
        for x, y in self.eval_batches(split, device):
            logits = model(x)
            total_loss += F.cross_entropy(logits.float(), y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
            n += len(y)
        model.train(was_training)
        return {"loss": total_loss.item() / n, "accuracy": correct.item() / n}


def _subset(data: ImageData, n_train: int, n_test: int) -> ImageData:
    """The first examples of each split (smoke runs); statistics recomputed on the subset."""
    return ImageData(
        data.train_x[:n_train],
        data.train_y[:n_train],
        data.test_x[:n_test],
        data.test_y[:n_test],
        classes=data.classes,
    )


def _image_task(
    name: str,
    loader: Callable[..., ImageData],
    model_factory: Callable[..., nn.Module],
    *,
    budget: Budget,
    hparams: dict,
    augment: bool,
    validation: bool,
    smoke: bool,
    data_dir: str | Path | None,
    verify: bool,
    channels_last: bool,
    train_eval: dict[str, Any],
) -> ImageClassificationTask:
    images = load_cached(loader, data_dir, verify)
    if smoke:
        images = _subset(images, 256, 128)
        budget = Budget(epochs=1, batch_size=32, max_steps_per_epoch=2)
    return ImageClassificationTask(
        name=name,
        metric="accuracy",
        higher_is_better=True,
        budget=budget,
        hparams=copy.deepcopy(hparams),
        validation=validation,
        images=images,
        model_factory=functools.partial(
            model_factory, num_classes=images.classes, in_channels=images.train_x.size(1)
        ),
        augment=augment,
        channels_last=channels_last,
        **train_eval,
    )


IMAGE_DATASETS = {  # registry prefix -> (loader, augment)
    "cifar10": (load_cifar10, True),
    "fmnist": (load_fashion_mnist, False),
}


def resnet_task(
    dataset: str,
    depth: int,
    batch_norm: bool,
    validation: bool = False,
    smoke: bool = False,
    data_dir: str | Path | None = None,
    verify: bool = True,
    channels_last: bool = False,
    init: str = "kaiming",
    augment_train_eval: bool = True,
    train_eval_examples: int | None = None,
) -> ImageClassificationTask:
    """Registry constructor for ``{dataset}-resnet{depth}[-nobn[-fixup]]``; smoke: ResNet-8,
    width 8. ``init`` is ``"kaiming"`` (the authors') or ``"fixup"`` (see ``CifarResNet``).
    ``augment_train_eval`` and ``train_eval_examples``: see :class:`ImageClassificationTask`
    (the training loss over every training example through the training transform is the
    authors'; a seeded subset makes it cheaper for small-budget runs)."""
    loader, augment = IMAGE_DATASETS[dataset]
    name = f"{dataset}-resnet{depth}" + ("" if batch_norm else "-nobn")
    name += "" if init == "kaiming" else f"-{init}"
    if batch_norm:
        epochs, hparams = 164, CIFAR10_HPARAMS if dataset == "cifar10" and depth == 20 else {}
    else:
        epochs, hparams = NOBN_EPOCHS, NOBN_HPARAMS.get(depth, {}) if dataset == "cifar10" else {}
    return _image_task(
        name,
        loader,
        functools.partial(
            CifarResNet,
            8 if smoke else depth,
            width=8 if smoke else 16,
            batch_norm=batch_norm,
            init=init,
        ),
        budget=Budget(epochs=epochs, batch_size=128),
        hparams=hparams,
        augment=augment,
        validation=validation,
        smoke=smoke,
        data_dir=data_dir,
        verify=verify,
        channels_last=channels_last,
        train_eval={
            "augment_train_eval": augment_train_eval,
            "train_eval_examples": train_eval_examples,
        },
    )


def cnn_task(
    dataset: str,
    validation: bool = False,
    smoke: bool = False,
    data_dir: str | Path | None = None,
    verify: bool = True,
    channels_last: bool = False,
    train_eval_examples: int | None = None,
) -> ImageClassificationTask:
    """Registry constructor for ``{mnist,fmnist}-cnn``; smoke: channels (8, 16), fc 64;
    ``train_eval_examples``: see :class:`ImageClassificationTask`."""
    loader = load_mnist if dataset == "mnist" else load_fashion_mnist
    try:
        return _image_task(
            f"{dataset}-cnn",
            loader,
            functools.partial(MnistCNN, channels=(8, 16), hidden=64) if smoke else MnistCNN,
            budget=Budget(epochs=30, batch_size=100),
            hparams=SGDOL_HPARAMS,
            augment=False,
            validation=validation,
            smoke=smoke,
            data_dir=data_dir,
            verify=verify,
            channels_last=channels_last,
            train_eval={"train_eval_examples": train_eval_examples},
        )
    except DatasetNotFoundError as err:
        if dataset != "mnist":
            raise
        raise DatasetNotFoundError(
            "mnist",
            err.searched,
            err.expected,
            MNIST_FILES,
            note="Task 'mnist-cnn' needs MNIST; 'fmnist-cnn' trains the same CNN on Fashion-MNIST.",
        ) from None
