r"""Sign-compressed data parallelism: a DDP communication hook that sends 1 bit per coordinate.

:func:`sign_compression_hook` replaces DDP's fp32 all-reduce of each gradient bucket by an
all-gather of the bucket's *signs*, packed 8 coordinates per ``uint8`` byte. Two modes:

``"sign-mv"`` — signSGD with majority vote (Bernstein et al., ICLR 2019, Algorithm 3, with
    Signum momentum on each worker). Worker :math:`i` keeps
    :math:`m_i \leftarrow \beta m_i + (1-\beta) g_i` (``momentum`` = β; 0 gives signSGD-MV)
    and sends :math:`\mathrm{sign}(m_i)`. The hook returns, as every worker's gradient, the
    **vote** :math:`v = \mathrm{sign}\big(\sum_i \mathrm{sign}(m_i)\big) \in \{-1, 0, +1\}`.
    Pair it with a sign step *without* momentum (the momentum is the workers'):
    ``adaptopt.optim.SignSGD(lr=η)`` or ``torch.optim.SGD(lr=η, momentum=0)``, both giving
    :math:`x \leftarrow x - \eta v`; decay the weights decoupled (``weight_decay_mode=
    "decoupled"``), since coupled L2 decay would be added to the vote, not to the gradients.

``"ef-sign"`` — error-feedback scaled sign (EF-SignSGD, Karimireddy et al., ICML 2019,
    Algorithm 1). Worker :math:`i` forms :math:`p_i = g_i + e_i`, compresses each parameter
    tensor of :math:`d` coordinates to :math:`\Delta_i = (\lVert p_i\rVert_1/d)\,
    \mathrm{sign}(p_i)` (the bits plus one float32 scale per tensor) and keeps the residual
    :math:`e_i \leftarrow p_i - \Delta_i`. The hook returns the mean
    :math:`\bar\Delta = \frac1W \sum_i \Delta_i`. Pair it with plain SGD
    (``torch.optim.SGD(lr=γ, momentum=0)``): :math:`x \leftarrow x - \gamma\bar\Delta`. The
    residual is kept in gradient units (the paper compresses :math:`\gamma g + e`); for a
    constant γ the two are the same algorithm, since the scaled sign is positively homogeneous.

Encoding rules (both modes):

* a bit is 1 for a positive value and 0 for a negative one; a value of exactly 0, which one bit
  cannot encode, is sent as +1 by even ranks and −1 by odd ranks, so that with an even number
  of workers a coordinate whose gradient is 0 everywhere (an unused parameter) gets vote 0;
* **ties** — possible only with an even number of workers :math:`W` — give vote **0** (the
  coordinate is not moved), i.e. :math:`v = \mathrm{sign}(2c - W)` with :math:`c` the number
  of workers that sent +1;
* buckets of any size: the bits are padded with zeros to a whole byte and the padding is
  dropped after decoding.

Communication per bucket of :math:`d` coordinates in :math:`k` parameter tensors: each worker
contributes :math:`\lceil d/8\rceil` bytes (``"ef-sign"``: plus :math:`4k` bytes of scales)
to one all-gather, i.e. it sends them to and receives them from each of the :math:`W-1`
others; a bandwidth-optimal fp32 all-reduce sends and receives :math:`2\frac{W-1}{W}\,4d`
bytes. The ratio is therefore :math:`\approx 64/W` (32 for two workers): all-gather, unlike
all-reduce, does not shrink with :math:`W`, which is also what lets every worker decode the vote
(signSGD-MV's server broadcasts it instead).

The per-worker state (momenta or residuals) is keyed by parameter name, so it survives DDP's
bucket rebuild after the first step, and :meth:`SignCompressionState.state_dict` /
:meth:`~SignCompressionState.load_state_dict` resume it exactly. Every worker's state differs:
:meth:`SignCompressionState.gather_state_dict` collects all of them for a checkpoint written by
one rank.

Usage with any DDP model::

    ddp = DistributedDataParallel(model)
    state = register_sign_compression(ddp, "sign-mv", momentum=0.9)
    optimizer = adaptopt.optim.SignSGD(ddp.parameters(), lr=1e-3)
"""

# No ``from __future__ import annotations``: DDP checks the hook's annotations at run time
# (``bucket: dist.GradBucket`` must be the class, not a string).
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn

MODES = ("sign-mv", "ef-sign")

_SHIFTS = torch.arange(8, dtype=torch.uint8)


def pack_bits(bits: Tensor) -> Tensor:
    """A 1-d bool tensor of ``d`` bits as ``ceil(d/8)`` uint8 bytes (bit ``j`` of byte ``i`` is
    element ``8i + j``; the tail of the last byte is 0)."""
    d = bits.numel()
    padded = torch.zeros(-(-d // 8) * 8, dtype=torch.uint8, device=bits.device)
    padded[:d] = bits
    return (padded.view(-1, 8) << _SHIFTS.to(bits.device)).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, d: int) -> Tensor:
    """Inverse of :func:`pack_bits` along the last dimension: ``(..., ceil(d/8))`` uint8 →
    ``(..., d)`` bool."""
    bits = (packed.unsqueeze(-1) >> _SHIFTS.to(packed.device)) & 1
    return bits.flatten(-2)[..., :d].bool()


def sign_bits(values: Tensor, rank: int) -> Tensor:
    """The bits sent for ``values``: ``values > 0``, and for exact zeros ``rank`` even."""
    positive = values > 0
    if rank % 2 == 0:
        positive |= values == 0
    return positive


def majority_vote(bits: Tensor) -> Tensor:
    """``(W, d)`` bits (1 = +1) → the vote ``sign(2c − W)`` ∈ {−1, 0, +1} as float32."""
    count = bits.sum(0, dtype=torch.int64)
    return torch.sign(2 * count - bits.shape[0]).to(torch.float32)


class SignCompressionState:
    """The state of :func:`sign_compression_hook` on one worker.

    Args:
        names: parameter → name (``dict(model.named_parameters())`` inverted); the state is
            keyed by name.
        mode: ``"sign-mv"`` or ``"ef-sign"`` (see the module docstring).
        momentum: β of the workers' Signum momentum (``"sign-mv"`` only; 0 = signSGD-MV).
        process_group: the group to communicate in (default: the world).
    """

    def __init__(
        self,
        names: "dict[Tensor, str]",
        mode: str = "sign-mv",
        momentum: float = 0.9,
        process_group: Any = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown sign compression {mode!r}; valid: {', '.join(MODES)}")
        if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if mode == "ef-sign" and momentum != 0:
            raise ValueError("ef-sign has no worker momentum: use momentum=0 (the default for it)")
        self.mode, self.momentum, self.process_group = mode, float(momentum), process_group
        self._names = {id(p): name for p, name in names.items()}
        # "sign-mv": the momentum m_i; "ef-sign": the residual e_i (float32, per parameter).
        self.buffers: dict[str, Tensor] = {}

    def name(self, p: Tensor) -> str:
        try:
            return self._names[id(p)]
        except KeyError:
            raise ValueError("a bucket holds a parameter the hook state does not know") from None

    @property
    def rank(self) -> int:
        return dist.get_rank(self.process_group)

    @property
    def world_size(self) -> int:
        return dist.get_world_size(self.process_group)

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """This worker's state: ``mode``, ``momentum`` and ``buffers`` {name: tensor}."""
        buffers = {name: t.clone() for name, t in sorted(self.buffers.items())}
        return {"mode": self.mode, "momentum": self.momentum, "buffers": buffers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the same mode and momentum are required)."""
        if (state["mode"], state["momentum"]) != (self.mode, self.momentum):
            raise ValueError(
                f"the saved sign compression is {state['mode']} with momentum "
                f"{state['momentum']}, this one {self.mode} with momentum {self.momentum}"
            )
        self.buffers = {name: t.detach().clone() for name, t in state["buffers"].items()}

    def gather_state_dict(self) -> dict[str, Any]:
        """Every worker's :meth:`state_dict`, stacked: ``buffers[name]`` has a leading rank
        dimension. A collective: every rank must call it; every rank gets the result."""
        world = self.world_size
        names = sorted(self.buffers)
        local = [self.buffers[n].reshape(-1) for n in names]
        flat = torch.cat(local) if local else torch.zeros(0)
        out = torch.empty(world * flat.numel(), dtype=flat.dtype, device=flat.device)
        if flat.numel():
            _all_gather(out, flat, self.process_group).wait()
        rows = out.view(world, -1)
        buffers, offset = {}, 0
        for n, t in zip(names, local, strict=True):
            shape = (world, *self.buffers[n].shape)
            buffers[n] = rows[:, offset : offset + t.numel()].reshape(shape).cpu().clone()
            offset += t.numel()
        return {
            "mode": self.mode,
            "momentum": self.momentum,
            "world_size": world,
            "buffers": buffers,
        }

    def load_gathered_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this rank's part of :meth:`gather_state_dict` (same world size)."""
        if state["world_size"] != self.world_size:
            raise ValueError(
                f"the sign compression state was saved by {state['world_size']} workers and "
                f"cannot resume on {self.world_size}: each worker's momentum/residual is its own"
            )
        rank = self.rank
        own = {name: t[rank] for name, t in state["buffers"].items()}
        self.load_state_dict({"mode": state["mode"], "momentum": state["momentum"], "buffers": own})

    # -- the compression --------------------------------------------------------------------
    def _buffer(self, name: str, like: Tensor) -> Tensor:
        buf = self.buffers.get(name)
        if buf is None:
            buf = self.buffers[name] = torch.zeros_like(like, dtype=torch.float32)
        return buf

    def encode(self, params: list[Tensor], grads: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Update this worker's state with the bucket's gradients; return the message (bits,
        and for ``"ef-sign"`` the little-endian float32 scales, as uint8) and the signs sent
        (±1 float32) concatenated over the bucket."""
        names = [self.name(p) for p in params]
        bufs = [self._buffer(n, g) for n, g in zip(names, grads, strict=True)]
        if self.mode == "sign-mv":
            if self.momentum:
                for m, g in zip(bufs, grads, strict=True):  # m = β m + (1 − β) g
                    m.mul_(self.momentum).add_(g.to(torch.float32), alpha=1 - self.momentum)
                values = torch.cat([m.reshape(-1) for m in bufs])
            else:
                values = torch.cat([g.reshape(-1).to(torch.float32) for g in grads])
            bits = sign_bits(values, self.rank)
            return pack_bits(bits), None
        ps = [g.to(torch.float32) + e for g, e in zip(grads, bufs, strict=True)]  # p = g + e
        values = torch.cat([p.reshape(-1) for p in ps])
        bits = sign_bits(values, self.rank)
        signs = bits.to(torch.float32) * 2 - 1
        scales = torch.stack([p.abs().sum() / p.numel() for p in ps])  # ‖p‖₁ / d per tensor
        offset = 0
        for p, e, scale in zip(ps, bufs, scales, strict=True):  # e = p − scale · sign
            s = signs[offset : offset + p.numel()].view_as(p)
            torch.sub(p, s * scale, out=e)
            offset += p.numel()
        message = torch.cat([pack_bits(bits), scales.view(torch.uint8)])
        return message, scales

    def decode(self, gathered: Tensor, numels: list[int]) -> Tensor:
        """``(W, message bytes)`` → the bucket's new gradient (float32, flat): the vote, or
        the mean of the scaled signs."""
        d = sum(numels)
        n_bits = -(-d // 8)
        bits = unpack_bits(gathered[:, :n_bits], d)
        if self.mode == "sign-mv":
            return majority_vote(bits)
        scales = gathered[:, n_bits:].clone().view(torch.float32)  # (W, k)
        per_coordinate = scales.repeat_interleave(torch.tensor(numels, device=scales.device), 1)
        signs = bits.to(torch.float32) * 2 - 1
        return (per_coordinate * signs).sum(0) / bits.shape[0]


def _all_gather(out: Tensor, x: Tensor, group: Any) -> Any:
    """All-gather into one tensor (``all_gather_single`` where torch has it)."""
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return gather(out, x, group=group, async_op=True)


def sign_compression_hook(
    state: SignCompressionState, bucket: dist.GradBucket
) -> torch.futures.Future[Tensor]:
    """DDP communication hook (``ddp.register_comm_hook(state, sign_compression_hook)``):
    exchange the bucket's signs as bits and return the decoded vote (``"sign-mv"``) or mean
    scaled sign (``"ef-sign"``) in the bucket's dtype. See the module docstring."""
    buffer = bucket.buffer()
    grads, params = bucket.gradients(), bucket.parameters()
    numels = [g.numel() for g in grads]
    if sum(numels) != buffer.numel():
        raise RuntimeError("sign compression: the bucket's gradients do not tile its buffer")
    message, _ = state.encode(params, grads)
    world = state.world_size
    out = torch.empty(world * message.numel(), dtype=torch.uint8, device=message.device)
    work = _all_gather(out, message, state.process_group)

    def decode(_: torch.futures.Future[Any]) -> Tensor:
        return state.decode(out.view(world, -1), numels).to(buffer.dtype)

    return work.get_future().then(decode)


def register_sign_compression(
    ddp: nn.Module, mode: str = "sign-mv", momentum: float | None = None, process_group: Any = None
) -> SignCompressionState:
    """Register :func:`sign_compression_hook` on a ``DistributedDataParallel`` model and return
    its state (keep it for checkpoints). ``momentum`` defaults to 0.9 for ``"sign-mv"`` and is
    0 for ``"ef-sign"``."""
    if not hasattr(ddp, "register_comm_hook"):
        raise TypeError(f"expected a DistributedDataParallel model, got {type(ddp).__name__}")
    if momentum is None:
        momentum = 0.9 if mode == "sign-mv" else 0.0
    model = cast(Any, ddp)  # DistributedDataParallel (checked above)
    names = {p: name for name, p in model.module.named_parameters()}
    state = SignCompressionState(names, mode, momentum, process_group)
    model.register_comm_hook(state, sign_compression_hook)
    return state
