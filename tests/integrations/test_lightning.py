"""adaptopt optimizers inside Lightning: ``configure_optimizers`` with a scheduler, checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch

REASON = "needs the integrations extra: pip install 'adaptopt[integrations]'"
L = pytest.importorskip("lightning", reason=REASON)

from adaptopt.optim import Lion, SGDClipMomentum  # noqa: E402

pytestmark = [pytest.mark.integrations, pytest.mark.filterwarnings("ignore:.*LeafSpec")]
LR, DECAY = 0.05, 0.9


class Regression(L.LightningModule):
    def __init__(self, optimizer: str = "lion") -> None:
        super().__init__()
        torch.manual_seed(0)
        layers = [torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)]
        self.net = torch.nn.Sequential(*layers)
        self.optimizer = optimizer
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        if self.optimizer == "lion":
            opt = Lion(self.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=0.1)
        else:
            opt = SGDClipMomentum(self.parameters(), lr=LR, gamma=1.0, momentum=0.9)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: DECAY**step)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def loader() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=g)
    y = x.sum(dim=1, keepdim=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def trainer(epochs: int, root) -> L.Trainer:
    # not deterministic=True: it would switch torch's global deterministic mode on for later tests
    return L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
    )  # fmt: skip


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("optimizer", ["lion", "sgd_clip_momentum"])
def test_configure_optimizers_with_scheduler(tmp_path, optimizer):
    model = Regression(optimizer)
    start = flat(model).clone()
    fit = trainer(2, tmp_path)
    fit.fit(model, loader())
    (opt,) = fit.optimizers
    assert type(opt) is (Lion if optimizer == "lion" else SGDClipMomentum)
    assert fit.global_step == 8
    assert opt.param_groups[0]["lr"] == pytest.approx(LR * DECAY**8)  # scheduler stepped per step
    assert len(model.losses) == 8
    assert sum(model.losses[4:]) < sum(model.losses[:4])  # the same 4 batches, a later epoch
    assert not torch.equal(flat(model), start)


def test_checkpoint_round_trip(tmp_path):
    straight = Regression()
    trainer(2, tmp_path).fit(straight, loader())

    first = Regression()
    half = trainer(1, tmp_path)
    half.fit(first, loader())
    path = tmp_path / "epoch1.ckpt"
    half.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)
    (saved_opt,) = saved["optimizer_states"]
    assert saved_opt["state"][0]["exp_avg"].abs().sum() > 0  # Lion's momentum is in it

    restored = {}

    class Snapshot(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if not restored:
                restored.update(copy.deepcopy(trainer.optimizers[0].state_dict()))

    resumed = Regression()
    fit = trainer(2, tmp_path)
    fit.callbacks.append(Snapshot())
    fit.fit(resumed, loader(), ckpt_path=path)
    assert fit.global_step == 8
    assert restored["param_groups"] == saved_opt["param_groups"]
    for key, state in saved_opt["state"].items():
        for name, value in state.items():
            assert torch.equal(restored["state"][key][name], value), (key, name)
    assert torch.equal(flat(resumed), flat(straight))  # same trajectory as without the break

    # negative control: the same resume with the optimizer state cleared diverges from it
    del saved["optimizer_states"][0]["state"]
    saved["optimizer_states"][0]["state"] = {}
    torch.save(saved, tmp_path / "no_state.ckpt")
    fresh = Regression()
    trainer(2, tmp_path).fit(fresh, loader(), ckpt_path=tmp_path / "no_state.ckpt")
    assert not torch.equal(flat(fresh), flat(straight))
