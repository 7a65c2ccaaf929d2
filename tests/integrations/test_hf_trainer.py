"""adaptopt optimizers inside Hugging Face Transformers' ``Trainer`` (tiny GPT-2, no download)."""

from __future__ import annotations

import copy
import os

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may be downloaded; the model is built from a config
os.environ["TRANSFORMERS_OFFLINE"] = "1"
REASON = "needs the integrations extra: pip install 'adaptopt[integrations]'"
transformers = pytest.importorskip("transformers", reason=REASON)
pytest.importorskip("accelerate", reason=REASON)

from adaptopt.optim import GeneralizedSignSGD  # noqa: E402

pytestmark = pytest.mark.integrations
STEPS, BATCH, SEQ, VOCAB = 4, 4, 8, 32


def tiny_gpt2() -> transformers.GPT2LMHeadModel:
    transformers.set_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=SEQ, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int = STEPS * BATCH) -> None:
        self.ids = torch.randint(VOCAB, (n, SEQ), generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def arguments(out, **kwargs) -> transformers.TrainingArguments:
    base = {
        "output_dir": str(out), "max_steps": STEPS, "per_device_train_batch_size": BATCH,
        "report_to": [], "use_cpu": True, "disable_tqdm": True, "logging_steps": 1,
        "save_strategy": "no", "seed": 0, "dataloader_num_workers": 0,
    }  # fmt: skip
    return transformers.TrainingArguments(**(base | kwargs))


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_optimizer_and_scheduler_passed_in(tmp_path):
    model = tiny_gpt2()
    start = flat(model).clone()
    opt = GeneralizedSignSGD(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    trainer = transformers.Trainer(
        model=model, args=arguments(tmp_path), train_dataset=Tokens(), optimizers=(opt, sched)
    )
    result = trainer.train()
    assert getattr(trainer.optimizer, "optimizer", trainer.optimizer) is opt
    assert result.global_step == STEPS and torch.isfinite(torch.tensor(result.training_loss))
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 / (1 + STEPS))  # stepped each step
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == STEPS and losses[-1] < losses[0]
    assert not torch.equal(flat(model), start)
    assert all(opt.state[p]["step"] == STEPS for p in model.parameters())


def test_optimizer_cls_and_kwargs(tmp_path):
    model = tiny_gpt2()
    trainer = transformers.Trainer(
        model=model,
        args=arguments(tmp_path, weight_decay=0.1),
        train_dataset=Tokens(),
        optimizer_cls_and_kwargs=(GeneralizedSignSGD, {"lr": 1e-2, "betas": (0.9, 0.99)}),
    )
    trainer.train()
    opt = trainer.optimizer
    opt = getattr(opt, "optimizer", opt)  # accelerate's wrapper
    assert type(opt) is GeneralizedSignSGD
    # the Trainer's own parameter groups: decay on weights, none on biases and LayerNorm
    decays = sorted(group["weight_decay"] for group in opt.param_groups)
    assert decays == [0.0, 0.1]
    assert {g["lr"] for g in opt.param_groups} == {0.0}  # the default linear decay ends at 0
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_checkpoint_resume_restores_optimizer_state_exactly(tmp_path):
    def trainer(out, **kwargs):
        model = tiny_gpt2()
        opt = GeneralizedSignSGD(model.parameters(), lr=1e-2, betas=(0.9, 0.99))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
        args = arguments(out, save_strategy="steps", save_steps=STEPS // 2, **kwargs)
        return transformers.Trainer(
            model=model, args=args, train_dataset=Tokens(), optimizers=(opt, sched)
        )

    straight = trainer(tmp_path / "a")
    straight.train()
    checkpoint = tmp_path / "a" / f"checkpoint-{STEPS // 2}"
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)

    restored = {}

    class Snapshot(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            if not restored:
                inner = getattr(optimizer, "optimizer", optimizer)
                restored.update(copy.deepcopy(inner.state_dict()))

    resumed = trainer(tmp_path / "b")
    resumed.add_callback(Snapshot())
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert restored["param_groups"] == saved["param_groups"]
    assert restored["state"].keys() == saved["state"].keys()
    for key, state in saved["state"].items():
        for name, value in state.items():
            assert torch.equal(restored["state"][key][name], value), (key, name)
    assert torch.equal(flat(resumed.model), flat(straight.model))  # the same trajectory, bitwise

    # negative control: without the optimizer state the trajectory differs
    (checkpoint / "optimizer.pt").unlink()
    fresh = trainer(tmp_path / "c")
    fresh.train(resume_from_checkpoint=str(checkpoint))
    assert not torch.equal(flat(fresh.model), flat(straight.model))
