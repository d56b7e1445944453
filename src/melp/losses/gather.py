"""Autograd-aware all-gather (the only cross-process communication of the losses).

``all_gather_with_grad(x)`` concatenates the (B, ...) tensors of all ranks into (G*B, ...). In the
backward pass the gradient of the concatenation is summed over ranks (all-reduce) and each rank
keeps the slice of its own input, so a rank receives the gradients that every rank's loss sends
to its features. With DDP's gradient averaging the parameter gradients then equal those of the
single-process loss on the concatenated batch (see ``tests/test_distributed.py``).

Without an initialised process group (or with world size 1) it is the identity.

Both gathers run eagerly under ``torch.compile`` (``torch.compiler.disable``): a compiled loss is
split at the gather when there are several ranks; callers skip the call in one process (the
CLIP loss does), so a single-process graph has no break.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when ``torch.distributed`` is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, world = world_info()
        ctx.rank, ctx.world, ctx.n = rank, world, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)  # (G*B, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


@torch.compiler.disable
def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) over ranks -> (G*B, ...); identity in a single process.

    Every rank must pass the same B (the DDP sampler guarantees it with ``drop_last``).
    """
    _, world = world_info()
    if world == 1:
        return x
    return _AllGather.apply(x)


@torch.compiler.disable
def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) over ranks -> (G*B, ...) without gradient (e.g. integer ids)."""
    _, world = world_info()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)
