import pytest
import torch

from adaptopt.models import GPT, GPTConfig, MnistCNN


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_gpt2_size():
    cfg = GPTConfig.paper()
    assert (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.d_ff, cfg.context_length) == (
        16,
        410,
        10,
        2100,
        256,
    )
    d, f, v = cfg.d_model, cfg.d_ff, cfg.vocab_size
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * f + f) + (f * d + d)
    with torch.device("meta"):
        n = n_params(GPT(cfg))
    assert n == v * d + cfg.context_length * d + cfg.n_layer * block + 2 * d
    assert 4 * n / 1e6 == pytest.approx(201.58, abs=0.01)  # paper §5.3: "201.58 MB"


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(37, context_length=12, n_layer=2, n_head=2, d_model=16, d_ff=32))


def test_gpt_shapes_tied_head_and_causality():
    model = tiny_gpt().eval()
    tokens = torch.randint(0, 37, (3, 10))
    logits = model(tokens)
    assert logits.shape == (3, 10, 37)
    assert not any(p.shape == (37, 16) for n, p in model.named_parameters() if n != "wte.weight")
    changed = tokens.clone()
    changed[:, 6:] = 0
    torch.testing.assert_close(model(changed)[:, :6], logits[:, :6])
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_gpt_residual_projections_get_scaled_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(50, context_length=8, n_layer=8, n_head=4, d_model=64, d_ff=256))
    proj = torch.cat([b.attn.proj.weight.flatten() for b in model.blocks])
    qkv = torch.cat([b.attn.qkv.weight.flatten() for b in model.blocks])
    assert proj.std().item() == pytest.approx(0.02 / 4, rel=0.05)  # 0.02 / sqrt(2 * 8)
    assert qkv.std().item() == pytest.approx(0.02, rel=0.05)


def test_gpt_rejects_long_inputs_and_bad_heads():
    with pytest.raises(ValueError, match="context_length"):
        tiny_gpt()(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        GPT(GPTConfig(10, n_head=3, d_model=16))


def test_sgdol_cnn():
    model = MnistCNN()
    assert n_params(model) == 3_274_634  # 832 + 51,264 + 3,212,288 + 10,250
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert MnistCNN(in_channels=3, image_size=32)(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="divisible by 4"):
        MnistCNN(image_size=30)
