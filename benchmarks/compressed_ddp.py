"""Sign-compressed DDP against the fp32 all-reduce: steps/s and bytes/step with gloo on CPU.

For each world size W (default 2 and 4) this spawns W gloo processes (one thread each) that
train a small GPT (``adaptopt.models.GPT``) on random tokens, three ways:

* ``fp32``: DDP's all-reduce (torch's ``allreduce_hook``, the same average as DDP's built-in
  one, registered from Python so its calls can be counted) with ``Signum`` (momentum 0.9);
* ``sign-mv``: :func:`adaptopt.optim.sign_compression_hook` in majority-vote mode (Signum
  momentum 0.9 on the workers) with ``SignSGD``;
* ``ef-sign``: the error-feedback scaled sign with ``torch.optim.SGD``.

Bytes are counted by wrapping the ``torch.distributed`` collectives the hooks call: the bytes
each worker hands to them per step, and the bytes it sends (= receives) under the
bandwidth-optimal algorithms: 2(W-1)/W of the buffer for an all-reduce, (W-1) times its chunk
for an all-gather. Steps/s is the slowest rank's, over the timed steps after a warm-up.

    python benchmarks/compressed_ddp.py                  # W = 2 and 4, 20 timed steps
    python benchmarks/compressed_ddp.py --worlds 2 --steps 50 --d-model 256
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from adaptopt.models import GPT, GPTConfig
from adaptopt.optim import SignSGD, Signum, register_sign_compression

MODES = ("fp32", "sign-mv", "ef-sign")


class Counter:
    """Bytes handed to the collectives (wraps the torch.distributed functions in this process)."""

    def __init__(self) -> None:
        self.handed = 0
        self.sent = 0.0
        for name in ("all_reduce", "all_gather_single", "all_gather_into_tensor"):
            if hasattr(dist, name):
                setattr(dist, name, self._wrap(name, getattr(dist, name)))

    def _wrap(self, name, fn):
        def counted(*args, **kwargs):
            x = args[0] if name == "all_reduce" else args[1]
            n, w = x.numel() * x.element_size(), dist.get_world_size(kwargs.get("group"))
            self.handed += n
            self.sent += 2 * (w - 1) / w * n if name == "all_reduce" else (w - 1) * n
            return fn(*args, **kwargs)

        return counted


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    counter = Counter()
    cfg = GPTConfig(
        vocab_size=args.vocab,
        context_length=args.context,
        n_layer=args.layers,
        n_head=4,
        d_model=args.d_model,
        d_ff=4 * args.d_model,
        dropout=0.0,
    )
    rows = []
    for mode in MODES:
        torch.manual_seed(0)
        ddp = DistributedDataParallel(GPT(cfg))
        if mode == "fp32":
            ddp.register_comm_hook(None, default_hooks.allreduce_hook)
            opt = Signum(ddp.parameters(), lr=1e-3, momentum=0.9)
        elif mode == "sign-mv":
            register_sign_compression(ddp, "sign-mv", momentum=0.9)
            opt = SignSGD(ddp.parameters(), lr=1e-3)
        else:
            register_sign_compression(ddp, "ef-sign")
            opt = torch.optim.SGD(ddp.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(rank)
        elapsed = 0.0
        for step in range(args.warmup + args.steps):
            tokens = torch.randint(args.vocab, (args.batch, args.context + 1), generator=gen)
            if step == args.warmup:
                dist.barrier()
                counter.handed, counter.sent, t0 = 0, 0.0, time.perf_counter()
            logits = ddp(tokens[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        elapsed = torch.tensor(time.perf_counter() - t0)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        n_params = sum(p.numel() for p in ddp.parameters())
        rows.append((mode, n_params, args.steps / elapsed.item(), counter.handed, counter.sent))
        counter.handed, counter.sent = 0, 0.0
    if rank == 0:
        torch.save(rows, out)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="sequences per worker")
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=128)
    args = parser.parse_args()
    print("| W | exchange | params | steps/s | B/step handed | B/step sent (ring) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for world in args.worlds:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "rows.pt")
            mp.spawn(_worker, args=(world, _free_port(), args, out), nprocs=world)
            rows = torch.load(out)
        base = rows[0][4] / args.steps
        for mode, n, rate, handed, sent in rows:
            handed, sent = handed / args.steps, sent / args.steps
            print(
                f"| {world} | {mode} | {n:,} | {rate:.2f} | {handed:,.0f} | {sent:,.0f} "
                f"| {base / sent:.2f}x |"
            )


if __name__ == "__main__":
    main()
