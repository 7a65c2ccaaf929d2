import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from adaptopt.models import CifarResNet
from adaptopt.models.resnet import DEPTHS


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def formula_params(depth: int, batch_norm: bool, c: int = 3, w: int = 16, k: int = 10) -> int:
    """Parameters of the option-A CIFAR ResNet, counted layer by layer for depth 6n+2:
    3×3 bias-free convolutions (stem c→w; stage 1: 2n convs w→w; stages 2 and 3: one conv
    into the wider width, then 2n−1 at it), a linear w·4→k with bias, and 2 affine parameters
    per channel of every BatchNorm (stem + 2 per block)."""
    n = (depth - 2) // 6
    convs = 9 * (
        c * w
        + 2 * n * w * w
        + w * (2 * w) + (2 * n - 1) * (2 * w) ** 2
        + (2 * w) * (4 * w) + (2 * n - 1) * (4 * w) ** 2
    )  # fmt: skip
    bn = 2 * (w + 2 * n * (w + 2 * w + 4 * w)) if batch_norm else 0
    return convs + 4 * w * k + k + bn


# He et al. 2016 Table 6 / the reference CIFAR ResNet code: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M;
# ResNet-218 (n = 36) 3.5M.
PAPER_PARAMS = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6, 218: 3.5e6}


@pytest.mark.parametrize("depth", DEPTHS)
def test_parameter_counts_match_the_paper_and_the_formula(depth):
    with torch.device("meta"):
        bn = CifarResNet(depth)
        nobn = CifarResNet(depth, batch_norm=False)
        gray = CifarResNet(depth, 10, in_channels=1, batch_norm=False)
    assert n_params(bn) == pytest.approx(PAPER_PARAMS[depth], rel=0.02)
    assert n_params(bn) == formula_params(depth, True)
    assert n_params(nobn) == formula_params(depth, False)
    assert n_params(gray) == formula_params(depth, False, c=1)


def test_resnet20_exact_counts():
    assert n_params(CifarResNet(20)) == 269_722
    assert n_params(CifarResNet(20, batch_norm=False)) == 269_722 - 1376  # 688 BN channels


@pytest.mark.parametrize("batch_norm", [True, False])
def test_no_convolution_biases_and_batchnorm_only_when_asked(batch_norm):
    model = CifarResNet(56, batch_norm=batch_norm)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 55  # the stem and 2 per block; option A adds none
    assert all(m.bias is None for m in convs)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    assert len(norms) == (55 if batch_norm else 0)  # one after every convolution
    assert all(isinstance(m, nn.BatchNorm2d) for m in norms)


def he_normal_stats(weight: torch.Tensor) -> tuple[float, float, float]:
    """(empirical std / √(2 / fan_in), mean / √(2 / fan_in), excess kurtosis)."""
    w = weight.detach().double().flatten()
    fan_in = weight[0].numel()
    target = math.sqrt(2 / fan_in)
    z = (w - w.mean()) / w.std()
    return (w.std() / target).item(), (w.mean() / target).item(), (z.pow(4).mean() - 3).item()


def is_he_normal(weight: torch.Tensor) -> bool:
    """Within 5 standard errors of N(0, 2/fan_in) for N samples: std 1/√(2N) (relative), mean
    1/√N (relative to the target std), excess kurtosis √(24/N)."""
    ratio, mean, kurtosis = he_normal_stats(weight)
    n = weight.numel()
    return (
        abs(ratio - 1) < 5 / math.sqrt(2 * n)
        and abs(mean) < 5 / math.sqrt(n)
        and abs(kurtosis) < 5 * math.sqrt(24 / n)
    )


@pytest.mark.parametrize("batch_norm", [True, False])
def test_kaiming_normal_initialisation(batch_norm):
    torch.manual_seed(0)
    model = CifarResNet(20, batch_norm=batch_norm)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19
    for weight in [*convs, model.linear.weight]:
        assert is_he_normal(weight)
    # the classifier's bias keeps PyTorch's default U(±1/√fan_in)
    bias = model.linear.bias.detach()
    assert bias.abs().max() <= 1 / math.sqrt(64) and bias.abs().min() > 0
    if batch_norm:
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in bns)
        assert all(not m.bias.any() for m in bns)


def test_he_normal_check_rejects_other_initialisations():
    torch.manual_seed(0)
    default = nn.Conv2d(64, 64, 3).weight  # PyTorch default: std = 1/√(3·fan_in)
    assert he_normal_stats(default)[0] == pytest.approx(math.sqrt(1 / 6), rel=0.05)
    assert not is_he_normal(default)
    uniform = torch.empty(64, 64, 3, 3)
    nn.init.kaiming_uniform_(uniform)  # right std, wrong distribution (kurtosis −1.2)
    assert abs(he_normal_stats(uniform)[0] - 1) < 0.02 and not is_he_normal(uniform)
    small = torch.empty(16, 16, 3, 3)
    nn.init.kaiming_normal_(small)
    assert not is_he_normal(small * 1.2)  # 20% off at the smallest block layer (2304 weights)
    fixup = CifarResNet(20, batch_norm=False, init="fixup")
    assert not is_he_normal(fixup.blocks[8].conv1.weight)  # scaled by 9^(-1/2)


@pytest.mark.parametrize(("in_channels", "size"), [(3, 32), (1, 28)])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_forward_backward_shapes(in_channels, size, batch_norm):
    model = CifarResNet(20, 10, in_channels=in_channels, batch_norm=batch_norm)
    x = torch.randn(4, in_channels, size, size)
    out = model(x)
    assert out.shape == (4, 10)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())


def test_option_a_shortcut_subsamples_and_zero_pads():
    block = CifarResNet(20).blocks[3]  # first block of stage 2: 16 -> 32 channels, stride 2
    x = torch.randn(2, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (2, 32, 4, 4)
    assert torch.equal(s[:, 8:24], x[:, :, ::2, ::2])
    assert not s[:, :8].any() and not s[:, 24:].any()


def test_nobn_kaiming_blocks_are_not_identity_at_initialisation():
    torch.manual_seed(0)
    model = CifarResNet(20, batch_norm=False)
    x = torch.randn(2, 16, 32, 32).relu()
    assert not torch.equal(model.blocks[0](x), F.relu(model.blocks[0].shortcut(x)))
    assert model(torch.randn(2, 3, 32, 32)).abs().min() > 0


def test_fixup_variant_blocks_are_identity_at_initialisation():
    model = CifarResNet(20, batch_norm=False, init="fixup")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.bias is not None and not m.bias.any() for m in convs)
    assert n_params(model) == formula_params(20, False) + sum(m.out_channels for m in convs)
    x = torch.randn(2, 16, 32, 32).relu()
    for block in model.blocks:
        x_next = block(x)
        assert torch.equal(x_next, F.relu(block.shortcut(x)))
        x = x_next
    assert not model(torch.randn(2, 3, 32, 32)).any()  # zero classifier


@pytest.mark.parametrize("init", ["kaiming", "fixup"])
def test_nobn_resnet_trains_on_a_tiny_batch(init):
    torch.manual_seed(0)
    model = CifarResNet(20, batch_norm=False, init=init)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    if init == "fixup":
        assert losses[0] == pytest.approx(math.log(10), abs=1e-6)
    assert losses[-1] < losses[0] - 0.5


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21)
    with pytest.raises(ValueError, match="init must be one of"):
        CifarResNet(20, init="xavier")
    with pytest.raises(ValueError, match="without BatchNorm"):
        CifarResNet(20, init="fixup")
