import pytest
import torch
from torch import nn
from torch.nn import functional as F

from adaptopt.models import CifarResNet
from adaptopt.models.resnet import DEPTHS


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# He et al. 2016 Table 6 / the reference CIFAR ResNet code: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M;
# ResNet-218 (n = 36) 3.5M.
PAPER_PARAMS = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6, 218: 3.5e6}


@pytest.mark.parametrize("depth", DEPTHS)
def test_parameter_counts_match_the_paper(depth):
    with torch.device("meta"):
        model = CifarResNet(depth)
    assert n_params(model) == pytest.approx(PAPER_PARAMS[depth], rel=0.02)


def test_resnet20_count_exact_and_nobn_drops_only_batchnorm_affine_plus_conv_biases():
    bn, nobn = CifarResNet(20), CifarResNet(20, batch_norm=False)
    assert 0.26e6 < n_params(bn) < 0.28e6
    assert n_params(bn) == 269_722
    n_bn = sum(m.num_features for m in bn.modules() if isinstance(m, nn.BatchNorm2d))
    # every BatchNorm (2 parameters per channel) becomes one bias per output channel
    assert n_params(nobn) == n_params(bn) - n_bn
    assert not any(isinstance(m, nn.BatchNorm2d) for m in nobn.modules())


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


def test_nobn_blocks_are_identity_at_initialisation():
    model = CifarResNet(20, batch_norm=False)
    x = torch.randn(2, 16, 32, 32).relu()
    for block in model.blocks:
        x_next = block(x)
        assert torch.equal(x_next, F.relu(block.shortcut(x)))
        x = x_next
    assert not model(torch.randn(2, 3, 32, 32)).any()  # zero classifier


def test_nobn_resnet_trains_on_a_tiny_batch():
    torch.manual_seed(0)
    model = CifarResNet(20, batch_norm=False)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(torch.log(torch.tensor(10.0)).item(), abs=1e-6)
    assert losses[-1] < losses[0] - 0.5


def test_bad_depth_is_rejected():
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21)
